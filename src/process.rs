//! State that belongs to one process, and the rule that keeps a forked
//! child from ever hanging on its parent.
//!
//! # The rule
//! **A forked child never waits on a lock, a flight or a task that belonged
//! to its parent**, whatever the parent's threads were doing at the instant
//! of `fork`: holding a cache shard's lock on the hit path, inside a
//! `signBlob` flight, inside the tokio runtime, refreshing a token.
//!
//! `fork` copies the whole memory but only the calling thread (POSIX
//! `fork(2)`: "the child process is created with a single thread"). Puma and
//! Sidekiq fork from a booted parent whose other threads may be signing at
//! that instant: tokio workers and Ruby threads that released the GVL. Any
//! lock one of them held is held forever in the child, any task it ran never
//! runs again, and any waiter it parked sits in parking_lot's global wait
//! queues without a thread behind it. A child that locks, joins or even
//! unlocks one of those objects can hang for good.
//!
//! # How
//! Every lock, map, runtime, HTTP client and in-flight table that must not
//! cross a fork lives in a [`ProcessLocal`]: a value tagged with the
//! process *generation*, which a `pthread_atfork` child handler bumps in
//! every child (a few instructions, no lock, no allocation). The first use
//! in a new generation builds a fresh value; the parent's value is leaked:
//! never dropped, locked or unlocked in the child. Each generation has its
//! own tokio runtime, HTTP client, flight tables, event queue and quota
//! guard, so nothing in flight in the parent is ever awaited in the child.
//!
//! What a child may take over from its parent (its warm URL cache, access
//! tokens, the service-account email, the registries of shared token caches
//! and metadata clients) is read only without waiting: through
//! [`peek_mutex`] or a try-lock on a lock nobody will ever write again in
//! this process. A lock that was held at fork reads as empty: it costs a
//! cache miss or one more token fetch, never a wait. (A parking_lot
//! `try_read` that succeeds is released without touching the wait queues:
//! its slow path only runs when a writer is parked, and a parked writer holds
//! the write bit, which makes `try_read` fail. A `Mutex` is never released:
//! its unlock could hand it to a parked thread that does not exist here.)
//!
//! Where: [`crate::runtime`] (runtime and HTTP client), [`crate::events`]
//! (log queue), [`crate::cache`] (URL store, inherited read-only, and its
//! flights), [`crate::token`] (token state, refresh flight and the registry
//! of shared caches), [`crate::iam`] (quota guard: bucket, in-flight
//! semaphore, 429 cool-down), [`crate::credentials::metadata`] (email,
//! lookup flight, last failure, the registry of clients), and the binding's
//! signer registry ([`crate::process_stats`]). Coalescing
//! itself is [`crate::flight`].
//!
//! The test of the rule is at the bottom of this file: it forks while other
//! threads hold each kind of per-process lock and have a `signBlob` call and
//! a token refresh in flight, and the child signs (cache hit and miss, with
//! a key file and keyless) at once: within a few tenths of a second on an
//! idle machine (the test allows 5 s for a loaded one, and kills a child
//! still running after 10 s as hung).
//!
//! A fork that bypasses `pthread_atfork` (a raw `clone` system call; Ruby,
//! Puma and Sidekiq use libc's `fork`) is caught by [`verify`], which the
//! miss path calls: only the hit path of such a child could still see its
//! parent's cache store.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// The process generation: 1 in the process that loaded the library, one
/// more in each forked child than in its parent. Along one line of
/// descent (the only way memory travels) it never repeats, unlike a pid.
static GENERATION: AtomicU64 = AtomicU64::new(1);
/// The pid [`verify`] last saw (0: not looked at since the last fork).
static PID: AtomicU32 = AtomicU32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Runs in the child right after `fork`, on its only thread.
extern "C" fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    PID.store(0, Ordering::SeqCst);
}

/// Registers the at-fork handler (once; cheap to call again). The binding
/// calls it when Ruby loads the extension; every [`generation`] call makes
/// sure of it too.
#[inline]
pub fn install() {
    if !INSTALLED.load(Ordering::Acquire) {
        install_slow();
    }
}

#[cold]
fn install_slow() {
    if !INSTALLED.swap(true, Ordering::AcqRel) {
        let _ = PID.compare_exchange(0, std::process::id(), Ordering::AcqRel, Ordering::Acquire);
        // SAFETY: registers a handler that only does atomic stores; valid
        // for the life of the process.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        if rc != 0 {
            // Without the handler, `verify` still notices a new pid.
            INSTALLED.store(false, Ordering::Release);
        }
    }
}

/// The current process generation.
#[inline]
pub fn generation() -> u64 {
    install();
    GENERATION.load(Ordering::Acquire)
}

/// Catches a fork that ran no at-fork handlers by comparing the pid (one
/// system call, so the miss path calls it, not the hit path).
pub fn verify() {
    let pid = std::process::id();
    let known = PID.load(Ordering::Acquire);
    // 0: the at-fork handler ran (it bumped the generation itself).
    if known != pid
        && known != 0
        && PID
            .compare_exchange(known, pid, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        GENERATION.fetch_add(1, Ordering::SeqCst);
    } else if known == 0 {
        let _ = PID.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire);
    }
}

struct Slot<T> {
    generation: u64,
    value: T,
}

/// A value that belongs to one process: each process generation builds its
/// own on first use, from nothing or by reading (never waiting on) its
/// parent's. See the module documentation for the rule it enforces.
pub struct ProcessLocal<T> {
    /// The newest slot; leaked when a child replaces it (it is the parent's).
    slot: AtomicPtr<Slot<T>>,
    /// The generation of the thread building a value (0: nobody). A claim
    /// left by a parent's thread is simply taken over.
    building: AtomicU64,
}

// SAFETY: the value is shared by reference between threads (`Sync` needs
// `T: Sync`) and built or dropped on whichever thread (`T: Send`).
unsafe impl<T: Send + Sync> Sync for ProcessLocal<T> {}
unsafe impl<T: Send> Send for ProcessLocal<T> {}

impl<T> Default for ProcessLocal<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for ProcessLocal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessLocal")
            .field("built", &self.current().is_some())
            .finish()
    }
}

impl<T> ProcessLocal<T> {
    pub const fn new() -> Self {
        ProcessLocal {
            slot: AtomicPtr::new(std::ptr::null_mut()),
            building: AtomicU64::new(0),
        }
    }

    /// This process's value, if it was built.
    #[inline]
    pub fn current(&self) -> Option<&T> {
        let generation = generation();
        // SAFETY: a published slot is freed only by `drop(self)`.
        match unsafe { self.slot.load(Ordering::Acquire).as_ref() } {
            Some(s) if s.generation == generation => Some(&s.value),
            _ => None,
        }
    }

    /// This process's value, built on first use by `init`, which gets the
    /// nearest ancestor's value (read it only without waiting: [`peek_mutex`],
    /// try-locks). `init` must not use this `ProcessLocal`.
    #[inline]
    pub fn get_or_init(&self, init: impl FnOnce(Option<&T>) -> T) -> &T {
        match self.get_or_try_init(|older| Ok::<_, Infallible>(init(older))) {
            Ok(v) => v,
            Err(never) => match never {},
        }
    }

    /// [`ProcessLocal::get_or_init`] for an `init` that can fail; a failure
    /// is not remembered (the next call tries again).
    #[inline]
    pub fn get_or_try_init<E>(
        &self,
        init: impl FnOnce(Option<&T>) -> Result<T, E>,
    ) -> Result<&T, E> {
        match self.current() {
            Some(v) => Ok(v),
            None => self.build(init),
        }
    }

    #[cold]
    fn build<E>(&self, init: impl FnOnce(Option<&T>) -> Result<T, E>) -> Result<&T, E> {
        let generation = generation();
        let mut spins = 0u32;
        loop {
            let older = self.slot.load(Ordering::Acquire);
            // SAFETY: as in `current`.
            if let Some(s) = unsafe { older.as_ref() } {
                if s.generation == generation {
                    return Ok(&s.value);
                }
            }
            let claim = self.building.load(Ordering::Acquire);
            if claim == generation {
                // Another thread of this very process is building it: it
                // exists and finishes (or gives up its claim on unwind).
                spins += 1;
                if spins < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                continue;
            }
            if self
                .building
                .compare_exchange(claim, generation, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let claimed = Claim(&self.building, generation);
            // Another thread may have built and published it (and given up
            // its claim) since the slot was read above.
            let older = self.slot.load(Ordering::Acquire);
            // SAFETY: as in `current`; an ancestor's slot is never freed here.
            let older = unsafe { older.as_ref() };
            if let Some(s) = older.filter(|s| s.generation == generation) {
                return Ok(&s.value);
            }
            let value = init(older.map(|s| &s.value))?;
            let fresh = Box::into_raw(Box::new(Slot { generation, value }));
            // The ancestor's slot is leaked on purpose (module docs).
            self.slot.store(fresh, Ordering::Release);
            drop(claimed);
            // SAFETY: just published; freed only by `drop(self)`.
            return Ok(unsafe { &(*fresh).value });
        }
    }
}

/// Gives up a build claim when the build ends, by success, error or panic.
struct Claim<'a>(&'a AtomicU64, u64);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(self.1, 0, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl<T> Drop for ProcessLocal<T> {
    fn drop(&mut self) {
        let slot = *self.slot.get_mut();
        // SAFETY: `&mut self`: nobody else can see the slot any more.
        if !slot.is_null() && unsafe { (*slot).generation } == generation() {
            drop(unsafe { Box::from_raw(slot) });
        }
        // A slot from an ancestor process is leaked: dropping its value
        // could lock, unlock or wake what the parent's threads held.
    }
}

/// Reads a parent's mutex without ever waiting: `None` if it was locked at
/// the fork (or is now). The lock is never released again: unlocking could
/// hand it to a parked thread that does not exist in this process. Use it
/// only on an ancestor's value inside a [`ProcessLocal`] `init`.
pub fn peek_mutex<T, R>(m: &parking_lot::Mutex<T>, f: impl FnOnce(&T) -> R) -> Option<R> {
    let guard = m.try_lock()?;
    let out = f(&guard);
    std::mem::forget(guard);
    Some(out)
}

/// Test hook: one per-process lock to hold. The closure takes the lock,
/// calls `park` (which returns when the test is done) and releases it.
#[cfg(test)]
pub(crate) type Holder<'a> = (&'static str, Box<dyn FnOnce(&dyn Fn()) + Send + 'a>);

/// The [`Holder`] of one mutex: holds `lock` while parked.
#[cfg(test)]
pub(crate) fn mutex_holder<'a, T: Send>(
    name: &'static str,
    lock: &'a parking_lot::Mutex<T>,
) -> Holder<'a> {
    (
        name,
        Box::new(move |park: &dyn Fn()| {
            let _held = lock.lock();
            park();
        }),
    )
}

/// The loopback HTTP server of the integration tests, for the fork test.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../tests/support/mock.rs"]
mod test_mock;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn one_value_per_generation_built_once() {
        let local: Arc<ProcessLocal<u64>> = Arc::new(ProcessLocal::new());
        let builds = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (local, builds) = (local.clone(), builds.clone());
                std::thread::spawn(move || {
                    *local.get_or_init(|older| {
                        assert!(older.is_none());
                        builds.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        7
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 7);
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_build_is_not_remembered() {
        let local: ProcessLocal<u8> = ProcessLocal::new();
        assert_eq!(local.get_or_try_init(|_| Err("no")), Err("no"));
        assert_eq!(local.get_or_try_init(|_| Ok::<_, ()>(3)), Ok(&3));
        assert_eq!(local.current(), Some(&3));
    }

    #[test]
    fn peek_mutex_never_waits() {
        let m = parking_lot::Mutex::new(5);
        assert_eq!(peek_mutex(&m, |v| *v), Some(5));
        // The peeked lock stays taken (it is a dead parent's), and a second
        // peek reads it as held instead of waiting.
        assert_eq!(peek_mutex(&m, |v| *v), None);
    }

    // ---- The rule's test ------------------------------------------------

    use super::test_mock::{Mock, Resp};
    use crate::cancel::Cancel;
    use crate::credentials::{discover_with, CredentialOptions};
    use crate::request::{UrlRequest, Version};
    use crate::signer::{Expiry, SignerOptions, UrlSigner};
    use crate::stats::Stats;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    const KEY_FILE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/spec/fixtures/conformance/test_service_account.not-a-test.json"
    );
    const SLOW: Duration = Duration::from_secs(2);
    const CALL_TIMEOUT: Duration = Duration::from_secs(30);

    /// A loopback metadata server and IAM. The next request after `slow_*`
    /// is set waits [`SLOW`] (a call in flight at the fork); signatures
    /// count calls, so a URL signed twice differs.
    fn google(slow_token: Arc<AtomicBool>, slow_sign: Arc<AtomicBool>) -> Mock {
        let calls = AtomicU64::new(0);
        Mock::start(move |req| {
            if req
                .path
                .starts_with("/computeMetadata/v1/instance/service-accounts/default/token")
            {
                let r = Resp::metadata(200, r#"{"access_token":"tok","expires_in":3599}"#);
                match slow_token.swap(false, Ordering::SeqCst) {
                    true => r.after(SLOW),
                    false => r,
                }
            } else if req.path == "/computeMetadata/v1/instance/service-accounts/default/email" {
                Resp::metadata(200, "fork@p.iam.gserviceaccount.com")
            } else if req.path.ends_with(":signBlob") {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let sig = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    n.to_be_bytes().repeat(32),
                );
                let r = Resp::new(200, format!(r#"{{"keyId":"k","signedBlob":"{sig}"}}"#));
                match slow_sign.swap(false, Ordering::SeqCst) {
                    true => r.after(SLOW),
                    false => r,
                }
            } else {
                Resp::new(404, "")
            }
        })
    }

    fn keyless(mock: &Mock) -> UrlSigner {
        let env: HashMap<String, String> = [
            ("GCE_METADATA_HOST", mock.host()),
            ("GCS_SIGNER_IAM_ENDPOINT", mock.url()),
            ("HOME", "/nonexistent".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // Long enough for the parent's in-flight calls to outlast the
        // set-up and the fork on a loaded machine; a hang is caught by the
        // child's watchdog, not by this deadline.
        let options = CredentialOptions {
            timeout: CALL_TIMEOUT,
            ..CredentialOptions::default()
        };
        let stats = Arc::new(Stats::default());
        let blob = discover_with(&options, stats.clone(), &env).unwrap();
        let options = SignerOptions {
            timeout: CALL_TIMEOUT,
            ..SignerOptions::default()
        };
        UrlSigner::with_blob_signer(blob, options, stats).unwrap()
    }

    fn keyed() -> UrlSigner {
        let mut options = SignerOptions::default();
        options.credentials.credentials = Some(KEY_FILE.into());
        options.timeout = CALL_TIMEOUT;
        UrlSigner::new(options).unwrap()
    }

    fn url(s: &UrlSigner, object: &str) -> crate::Result<String> {
        let req = UrlRequest::new(Version::V4, "b", object);
        s.signed_url(req, Expiry::In(600.0), None, &Cancel::new())
    }

    fn hits(s: &UrlSigner) -> u64 {
        s.stats().into_iter().find(|(n, _)| *n == "hits").unwrap().1
    }

    /// URLs the parent signs before the fork (cache hits in the child).
    const HOT: usize = 8;

    /// What the child does: the parent's cached URLs and a miss with each
    /// signer, the key whose signing the parent had in flight, a signer
    /// whose first token the parent was fetching, and a build the parent
    /// was inside. Returns what went wrong, if anything.
    fn child_signs(
        keyed: &UrlSigner,
        keyless: &UrlSigner,
        cold: &UrlSigner,
        hot: &[Vec<String>; 2],
        building: &ProcessLocal<u64>,
    ) -> std::result::Result<(), String> {
        let started = Instant::now();
        for (name, s, hot) in [("keyed", keyed, &hot[0]), ("keyless", keyless, &hot[1])] {
            // A URL in the shard a parent thread held for writing at the
            // fork is signed again (a miss); every other one is a hit.
            let before = hits(s);
            let mut same = 0;
            for (i, parent_url) in hot.iter().enumerate() {
                let got = url(s, &format!("hot-{i}")).map_err(|e| format!("{name} hit: {e}"))?;
                same += usize::from(&got == parent_url);
            }
            let served = hits(s) - before;
            if served == 0 || served as usize > same {
                return Err(format!(
                    "{name}: {served} hits, {same} of the parent's URLs"
                ));
            }
            url(s, "child-miss").map_err(|e| format!("{name} miss: {e}"))?;
        }
        url(keyless, "in-flight").map_err(|e| format!("parent's flight: {e}"))?;
        url(cold, "cold").map_err(|e| format!("parent's token refresh: {e}"))?;
        if *building.get_or_init(|_| 2) != 2 {
            return Err("a value the parent was building".into());
        }
        crate::events::throttled("rate");
        crate::events::drain();
        // The stats registry: a signer registered, counted and retired.
        drop(crate::process_stats::Registration::new(keyed));
        crate::process_stats::totals();
        crate::process_stats::live_signers();
        match started.elapsed() {
            // About 0.1-0.3 s on an idle machine (bench/fork_stress.rb);
            // 5 s leaves room for a loaded 2-core CI machine. A child that
            // waited on its parent's lock would never finish.
            t if t > Duration::from_secs(5) => Err(format!("took {t:?}")),
            _ => Ok(()),
        }
    }

    /// The rule (module docs): forks while other threads hold every kind
    /// of per-process lock, the runtime's workers are busy, a `signBlob`
    /// call and a token refresh are in flight and a `ProcessLocal` is being
    /// built; the child signs (hit and miss, keyed and keyless) at once
    /// (see the module docs for the bound), and the parent goes on afterwards.
    #[test]
    fn a_child_never_waits_on_its_parent() {
        // It parks threads on every process-wide lock: another test running
        // beside it in the same process could wait on one of those while
        // holding a lock a parked thread still has to take (seen as a hang
        // on a loaded machine). So it runs alone, in a process of its own.
        const ALONE: &str = "GCS_SIGNER_FORK_RULE_TEST";
        if std::env::var_os(ALONE).is_none() {
            use std::io::Read;
            let mut test = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "process::tests::a_child_never_waits_on_its_parent",
                    "--test-threads=1",
                ])
                .env(ALONE, "1")
                // Its few lines are shown only if it fails (a second
                // "test result" line would be counted as another test).
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("re-running the test binary");
            let deadline = Instant::now() + Duration::from_secs(120);
            let status = loop {
                if let Some(status) = test.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    let _ = test.kill();
                    let _ = test.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let mut output = String::new();
            for pipe in [
                test.stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
                test.stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut pipe = pipe;
                let _ = pipe.read_to_string(&mut output);
            }
            let status = status.expect("the fork rule test hung (killed after 120 s)");
            assert!(
                status.success(),
                "the fork rule test failed ({status}):\n{output}"
            );
            return;
        }
        let (slow_token, slow_sign) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let mock = google(slow_token.clone(), Arc::clone(&slow_sign));
        let (slow_cold, no_slow) = (Arc::new(AtomicBool::new(true)), Arc::default());
        let cold_mock = google(slow_cold, no_slow);
        let (keyed, keyless, cold) = (keyed(), keyless(&mock), keyless(&cold_mock));
        let hot = [&keyed, &keyless].map(|s| {
            (0..HOT)
                .map(|i| url(s, &format!("hot-{i}")).unwrap())
                .collect::<Vec<_>>()
        });
        static BUILDING: ProcessLocal<u64> = ProcessLocal::new();

        let release = Arc::new(AtomicBool::new(false));
        let parked = Arc::new(AtomicUsize::new(0));
        let park = || {
            parked.fetch_add(1, Ordering::SeqCst);
            while !release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let status = std::thread::scope(|scope| {
            // In flight: a signBlob call (2 s) and a first token fetch (2 s).
            slow_sign.store(true, Ordering::SeqCst);
            let flight = scope.spawn(|| url(&keyless, "in-flight"));
            let refresh = scope.spawn(|| url(&cold, "cold"));
            while mock.count("/v1/") < HOT + 1 || cold_mock.count("/computeMetadata") < 1 {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Both runtime workers stuck, and a build under way.
            let mut held = 0;
            for _ in 0..2 {
                let (release, parked) = (release.clone(), parked.clone());
                crate::runtime::spawn(async move {
                    parked.fetch_add(1, Ordering::SeqCst);
                    while !release.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                });
            }
            held += 2;
            scope.spawn(|| {
                BUILDING.get_or_init(|_| {
                    park();
                    1
                })
            });
            held += 1;
            let mut names = vec![];
            for s in [&keyed, &keyless, &cold] {
                for (name, hold) in s.lock_holders() {
                    names.push(name);
                    scope.spawn(move || hold(&park));
                    held += 1;
                }
            }
            for (name, hold) in [
                crate::events::lock_holder(),
                crate::process_stats::lock_holder(),
                crate::token::registry_holder(),
                crate::credentials::metadata::MetadataClient::registry_holder(),
            ] {
                names.push(name);
                scope.spawn(move || hold(&park));
                held += 1;
            }
            for kind in [
                "cache store shard (write)",
                "token state",
                "quota guard bucket",
                "metadata email",
            ] {
                assert!(names.contains(&kind), "{kind} not held: {names:?}");
            }
            // On a loaded machine the in-flight signBlob call or token fetch
            // can land first; its task then waits on a lock a parked thread
            // holds, so one runtime worker never parks. The fork then happens
            // with that worker blocked on the lock: a harder case for the
            // child, not an easier one. So the wait is bounded.
            let deadline = Instant::now() + Duration::from_secs(5);
            while parked.load(Ordering::SeqCst) < held && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(
                parked.load(Ordering::SeqCst) + 2 >= held,
                "only {} of {held} lock holders parked",
                parked.load(Ordering::SeqCst)
            );

            let (mut fds, mut report) = ([0; 2], [0u8; 512]);
            // SAFETY: a pipe for the child's report.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: the child runs only the signer and `_exit`s.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: a watchdog against a hang, then the report.
                unsafe { libc::alarm(30) };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    child_signs(&keyed, &keyless, &cold, &hot, &BUILDING)
                }))
                .unwrap_or_else(|_| Err("panicked".into()));
                let msg = outcome.err().unwrap_or_default();
                unsafe {
                    libc::write(fds[1], msg.as_ptr().cast(), msg.len());
                    libc::_exit(if msg.is_empty() { 0 } else { 1 });
                }
            }
            assert!(pid > 0, "fork failed");
            unsafe { libc::close(fds[1]) };
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut status = 0;
            let hung = loop {
                // SAFETY: our own child.
                if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                    break false;
                }
                if Instant::now() > deadline {
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, &mut status, 0);
                    }
                    break true;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let n = unsafe { libc::read(fds[0], report.as_mut_ptr().cast(), report.len()) };
            unsafe { libc::close(fds[0]) };
            let message = String::from_utf8_lossy(&report[..n.max(0) as usize]).into_owned();
            release.store(true, Ordering::SeqCst);
            let parent = (flight.join().unwrap(), refresh.join().unwrap());
            (hung, status, message, parent)
        });
        let (hung, status, message, (flight, refresh)) = status;
        assert!(!hung, "the child hung (killed after 10 s)");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: {message} (status {status})"
        );
        // The parent goes on: its flight and refresh end, and it signs.
        assert!(flight.is_ok() && refresh.is_ok(), "{flight:?} {refresh:?}");
        assert_eq!(url(&keyed, "hot-0").unwrap(), hot[0][0]);
        assert!(url(&keyless, "parent-after").is_ok());
    }
}
