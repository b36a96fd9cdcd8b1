//! Runs a closure without the GVL, interruptibly, with a panic guard.
//!
//! magnus has no safe GVL release (docs/facts.md#ruby-gvl), so this is the one
//! place that calls `rb_thread_call_without_gvl`. Its unblock function trips
//! the call's [`Cancel`]: when Ruby wants the thread back (`Timeout`,
//! `Thread#kill`, Ctrl-C), the wait in the core ends at once, the GVL is
//! retaken and `thread_check_ints` raises whatever Ruby had pending.

use crate::errors;
use gcs_signer::cancel::Cancel;
use gcs_signer::{Error as CoreError, ErrorKind};
use magnus::{Error, Ruby};
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

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
    // stack for the whole of `rb_thread_call_without_gvl`.
    let call = unsafe { &mut *(data as *mut Call<F, R>) };
    if let Some(func) = call.func.take() {
        let cancel = call.cancel;
        call.result = Some(catch_unwind(AssertUnwindSafe(move || func(cancel))));
    }
    std::ptr::null_mut()
}

unsafe extern "C" fn unblock(data: *mut c_void) {
    // SAFETY: `data` points to the `Cancel` on `without_gvl`'s stack, alive
    // until `rb_thread_call_without_gvl` returns; `Cancel::cancel` is
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
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(run::<F, Result<T, CoreError>>),
            &mut call as *mut Call<F, Result<T, CoreError>> as *mut c_void,
            Some(unblock),
            &cancel as *const Cancel as *mut c_void,
        );
    }
    match call.result {
        Some(Ok(Ok(value))) => Ok(value),
        Some(Ok(Err(err))) => {
            if err.kind() == ErrorKind::Interrupted {
                // Raise what Ruby had pending (Timeout::Error, a kill, Interrupt).
                ruby.thread_check_ints()?;
            }
            Err(errors::to_ruby(ruby, err))
        }
        Some(Err(panic)) => Err(errors::panic_to_ruby(ruby, panic)),
        // Ruby interrupted the thread before the function ran at all.
        None => {
            ruby.thread_check_ints()?;
            Err(errors::to_ruby(
                ruby,
                CoreError::new(
                    ErrorKind::Interrupted,
                    "the call was interrupted before it started",
                ),
            ))
        }
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
