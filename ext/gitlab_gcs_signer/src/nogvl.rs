//! Runs a closure without the GVL, interruptibly, with a panic guard.
//!
//! magnus has no safe GVL release (docs/facts.md#ruby-gvl), so this is the one
//! place that calls `rb_thread_call_without_gvl2`. Its unblock function trips
//! the call's [`Cancel`]: when Ruby wants the thread back (`Timeout`,
//! `Thread#kill`, Ctrl-C), the wait in the core ends at once, the GVL is
//! retaken and `thread_check_ints` raises whatever Ruby had pending.
//!
//! Signals need more than the unblock function. Ruby 3.1 calls the main
//! thread's unblock function for a signal (SIGINT, SIGTERM) from a Ruby
//! thread that watches its signal pipe: one that runs, or sleeps with a
//! timeout. When every Ruby thread waits here, or sleeps for good (a Puma
//! worker's idle threads), nobody does until one of the waits ends by
//! itself. Ruby covers a lone thread with a helper thread of its own
//! (`rb_nogvl` starts one when one thread lives), not two or more: Ctrl-C
//! then waited for the calls' deadline (19.7 s with `timeout: 20`). So while
//! any thread waits here, a watcher Ruby thread
//! (lib/gitlab_gcs_signer/signal_watch.rb) sleeps in 20 ms steps, and the
//! signal reaches the main thread within milliseconds (bench/interrupt.rb).

use crate::errors;
use gcs_signer::cancel::Cancel;
use gcs_signer::{Error as CoreError, ErrorKind};
use magnus::{function, prelude::*, Error, RModule, Ruby, Value};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// Threads waiting without the GVL and the watcher that keeps signals
/// flowing meanwhile. Read and written with the GVL held, so a check and its
/// update are one step for Ruby; the lock only satisfies Rust (no code
/// that can panic runs under it).
struct Watch {
    /// The process the counts belong to: after `fork` the parent's waiters
    /// and watcher do not exist in the child.
    pid: u32,
    waiting: usize,
    /// The running watcher's id, if one runs.
    watcher: Option<u64>,
    next_id: u64,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    pid: 0,
    waiting: 0,
    watcher: None,
    next_id: 1,
});

fn watch() -> MutexGuard<'static, Watch> {
    let mut w = WATCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = std::process::id();
    if w.pid != pid {
        w.pid = pid;
        w.waiting = 0;
        w.watcher = None;
    }
    w
}

/// Counts the calling thread as waiting and starts a watcher if none runs.
fn enter(ruby: &Ruby) -> Result<(), Error> {
    let start = {
        let mut w = watch();
        w.waiting += 1;
        if w.watcher.is_some() {
            None
        } else {
            let id = w.next_id;
            w.next_id += 1;
            w.watcher = Some(id);
            Some(id)
        }
    };
    let Some(id) = start else { return Ok(()) };
    let started = watcher_module(ruby).map(|m| m.funcall::<_, _, Value>("start", (id,)));
    match started {
        Some(Ok(thread)) if thread.to_bool() => Ok(()),
        failed => {
            // No watcher: the Ruby layer is not loaded (the binding's own
            // tests), no thread could be made (the VM is shutting down), or
            // Thread.new raised (an interrupt is pending, which then ends
            // this call). The next waiter tries again.
            let mut w = watch();
            if w.watcher == Some(id) {
                w.watcher = None;
            }
            if let Some(Err(e)) = failed {
                w.waiting = w.waiting.saturating_sub(1);
                return Err(e);
            }
            Ok(())
        }
    }
}

fn leave() {
    let mut w = watch();
    w.waiting = w.waiting.saturating_sub(1);
}

fn watcher_module(ruby: &Ruby) -> Option<RModule> {
    let top: RModule = ruby.class_object().const_get("GitlabGcsSigner").ok()?;
    top.const_get("SignalWatch").ok()
}

/// `Native.signal_watch_waiting(id)` -> how many threads wait, or nil when
/// `id` is not the current watcher (it must stop).
fn signal_watch_waiting(id: u64) -> Option<usize> {
    let w = watch();
    (w.watcher == Some(id)).then_some(w.waiting)
}

/// `Native.signal_watch_retire(id)` -> true when the watcher `id` may stop
/// (nobody waits, or another watcher took over), and unregisters it.
fn signal_watch_retire(id: u64) -> bool {
    let mut w = watch();
    if w.watcher != Some(id) {
        return true;
    }
    if w.waiting > 0 {
        return false;
    }
    w.watcher = None;
    true
}

/// `Native.signal_watch_gone(id)`: the watcher `id` ended (killed, or an
/// exception); the next waiter starts another.
fn signal_watch_gone(id: u64) {
    let mut w = watch();
    if w.watcher == Some(id) {
        w.watcher = None;
    }
}

pub fn init(_ruby: &Ruby, native: RModule) -> Result<(), Error> {
    native.define_singleton_method("signal_watch_waiting", function!(signal_watch_waiting, 1))?;
    native.define_singleton_method("signal_watch_retire", function!(signal_watch_retire, 1))?;
    native.define_singleton_method("signal_watch_gone", function!(signal_watch_gone, 1))?;
    Ok(())
}

struct Call<'a, F, R> {
    func: Option<F>,
    cancel: &'a Cancel,
    result: Option<std::thread::Result<R>>,
}

unsafe extern "C" fn run<F, R>(data: *mut c_void) -> *mut c_void
where
    F: FnOnce(&Cancel) -> R,
{
    // SAFETY: `data` is the `Call` that `without_gvl` keeps alive on its
    // stack for the whole of `rb_thread_call_without_gvl2`.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(func) = call.func.take() {
        let cancel = call.cancel;
        call.result = Some(catch_unwind(AssertUnwindSafe(move || func(cancel))));
    }
    std::ptr::null_mut()
}

unsafe extern "C" fn unblock(data: *mut c_void) {
    // SAFETY: `data` points to the `Cancel` on `without_gvl`'s stack, alive
    // until `rb_thread_call_without_gvl2` returns; `Cancel::cancel` is
    // thread-safe and does not touch Ruby.
    let cancel = unsafe { &*(data as *const Cancel) };
    cancel.cancel();
}

/// Runs `func` without the GVL. A panic becomes `GitlabGcsSigner::InternalError`;
/// an interrupt raises Ruby's pending exception.
pub fn without_gvl<F, T>(ruby: &Ruby, func: F) -> Result<T, Error>
where
    F: FnOnce(&Cancel) -> Result<T, CoreError> + Send,
    T: Send,
{
    let cancel = Cancel::new();
    let mut call: Call<F, Result<T, CoreError>> = Call {
        func: Some(func),
        cancel: &cancel,
        result: None,
    };
    enter(ruby)?;
    // `..._gvl2`, not `rb_thread_call_without_gvl`: the latter checks Ruby's
    // pending interrupts before and after the call and raises them by
    // longjmp, which would skip `leave()` (the signal watcher would then
    // count a waiter for ever) and Rust's drops. `..._gvl2` only returns:
    // without running `func` when an interrupt is pending (a timer tick or
    // another thread's request counts too), so those are processed here
    // (raising, through magnus, only a real exception) and the call is made
    // again; a pending exception is raised once the wait is accounted for.
    let outcome = loop {
        unsafe {
            rb_sys::rb_thread_call_without_gvl2(
                Some(run::<F, Result<T, CoreError>>),
                &mut call as *mut Call<F, Result<T, CoreError>> as *mut c_void,
                Some(unblock),
                &cancel as *const Cancel as *mut c_void,
            );
        }
        if let Some(result) = call.result.take() {
            break Ok(result);
        }
        if let Err(e) = ruby.thread_check_ints() {
            break Err(e);
        }
    };
    leave();
    match outcome? {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            if err.kind() == ErrorKind::Interrupted {
                // Raise what Ruby had pending (Timeout::Error, a kill, Interrupt).
                ruby.thread_check_ints()?;
            }
            Err(errors::to_ruby(ruby, err))
        }
        Err(panic) => Err(errors::panic_to_ruby(ruby, panic)),
    }
}

/// Runs `func` with the GVL held, turning a panic into a Ruby exception.
pub fn guarded<F, T>(ruby: &Ruby, func: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, CoreError>,
{
    match catch_unwind(AssertUnwindSafe(func)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(errors::to_ruby(ruby, err)),
        Err(panic) => Err(errors::panic_to_ruby(ruby, panic)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnus::ExceptionClass;

    /// A panic anywhere in the core, with or without the GVL, reaches Ruby
    /// as `GitlabGcsSigner::InternalError` and the process goes on. The
    /// production code has no hook to make the core panic, so the closures
    /// here panic themselves: the boundary is what is under test.
    #[test]
    fn panics_become_internal_errors_and_ruby_goes_on() {
        // SAFETY: the only test in this crate that starts Ruby; it does so
        // once, and uses Ruby on this thread only.
        let cleanup = unsafe { magnus::embed::init() };
        let ruby: &Ruby = &cleanup;
        let _: magnus::Value = ruby
            .eval(include_str!("../../../lib/gitlab_gcs_signer/errors.rb"))
            .unwrap();
        let class = |name: &str| -> ExceptionClass {
            ruby.eval(&format!("GitlabGcsSigner::{name}")).unwrap()
        };
        // The default hook would print each expected panic; keep the output clean.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));

        let err = guarded(ruby, || -> Result<(), CoreError> {
            panic!("boom with the GVL held")
        })
        .unwrap_err();
        assert!(err.is_kind_of(class("InternalError")), "{err}");
        assert!(err.to_string().contains("boom with the GVL held"), "{err}");
        assert!(err.to_string().contains("please report it"), "{err}");

        let err = without_gvl(ruby, |_cancel| -> Result<(), CoreError> {
            let v: Vec<u8> = Vec::new();
            // An out-of-bounds index: a real bug, as a panic would come.
            let i = v.len() + 3;
            let byte = v[i];
            Err(CoreError::new(
                ErrorKind::Internal,
                format!("unreachable {byte}"),
            ))
        })
        .unwrap_err();
        assert!(err.is_kind_of(class("InternalError")), "{err}");
        assert!(err.to_string().contains("index out of bounds"), "{err}");
        assert!(err.is_kind_of(class("Error")));

        let err = without_gvl(ruby, |_cancel| -> Result<(), CoreError> {
            std::panic::panic_any(42_u32)
        })
        .unwrap_err();
        assert!(err.to_string().contains("unknown panic"), "{err}");
        std::panic::set_hook(hook);

        // Results and core errors still pass through, and Ruby still runs.
        assert_eq!(
            without_gvl(ruby, |_cancel| Ok::<_, CoreError>(7)).unwrap(),
            7
        );
        let err = guarded(ruby, || -> Result<(), CoreError> {
            Err(CoreError::new(ErrorKind::Timeout, "slow"))
        })
        .unwrap_err();
        assert!(err.is_kind_of(class("TimeoutError")), "{err}");
        let sum: i64 = ruby.eval("[1, 2, 3].sum").unwrap();
        assert_eq!(sum, 6);
    }
}
