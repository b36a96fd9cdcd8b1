//! One access token per credential and process (field notes s.3).
//!
//! Google's guidance for token caches: keep one token in memory, never fetch
//! per request. More than 225 s left: use it. Between 225 s and 120 s: keep
//! serving it and refresh in the background (the GKE metadata server only
//! reliably hands out a new token 120 s before expiry). Less: refresh and
//! wait. Exactly one refresh at a time: concurrent callers wait for the same
//! one.
//!
//! Refreshes run as tasks on the process runtime ([`crate::runtime::spawn`])
//! and publish their result on a watch channel, so a caller that gives up
//! (deadline, Ruby interrupt) does not abort the refresh the others wait for.
//! A refresh is tagged with the process generation: after `fork` the child
//! ignores the parent's refresh, whose task will never run there.

use crate::blob::BoxFuture;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::runtime;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Above this much life left, a token is used as is.
pub const FRESH_FOR: Duration = Duration::from_secs(225);
/// Below this much life left, callers wait for a new token.
pub const USABLE_FOR: Duration = Duration::from_secs(120);
/// After a failed background refresh, serve the old token this long before
/// trying again, so a struggling metadata server is not asked on every call.
const BACKGROUND_RETRY_AFTER: Duration = Duration::from_secs(5);
/// A new token is used for at least this long, however short a life its
/// server gave it (`expires_in` 0 or 1 would otherwise mean one fetch per
/// signature). A token that is really dead is still replaced at once: IAM
/// answers 401 and the signBlob client calls [`TokenCache::invalidate`].
pub const MIN_REUSE: Duration = Duration::from_secs(10);
/// The longest life taken from a server: 12 hours, the most Google grants an
/// access token (the `lifetime` limit of IAM Credentials generateAccessToken,
/// https://cloud.google.com/iam/docs/reference/credentials/rest/v1/projects.serviceAccounts/generateAccessToken).
/// A longer `expires_in` is a broken or hostile server; beyond about 292,000
/// years it would not even fit the microsecond clock.
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// An OAuth access token. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: String,
    /// Microseconds since the Unix epoch, on the cache's [`Clock`].
    pub expires_at: i64,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What a token endpoint returns: the token and its remaining life.
#[derive(Clone)]
pub struct FetchedToken {
    pub value: String,
    pub expires_in: Duration,
}

impl fmt::Debug for FetchedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedToken")
            .field("value", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Where tokens come from (metadata server, OAuth refresh, JWT bearer).
/// The future is `'static` because it runs as a task that may outlive the
/// caller that started it.
pub trait TokenSource: Send + Sync + fmt::Debug + 'static {
    fn fetch(&self) -> BoxFuture<'static, Result<FetchedToken>>;
}

/// A fetch shared by every caller in this process (single flight).
pub(crate) struct Flight<T> {
    generation: u32,
    rx: watch::Receiver<Option<Result<T>>>,
}

impl<T: Clone + Send + Sync + 'static> Flight<T> {
    /// Starts `fut` on the process runtime.
    pub(crate) fn start(fut: impl Future<Output = Result<T>> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(None);
        runtime::spawn(async move {
            let result = fut.await;
            let _ = tx.send(Some(result));
        });
        Flight {
            generation: runtime::generation(),
            rx,
        }
    }

    /// False for a flight inherited from a parent process.
    pub(crate) fn is_current(&self) -> bool {
        self.generation == runtime::generation()
    }

    /// The result, if the flight has landed. A flight whose task vanished
    /// (runtime could not start) lands as an error.
    pub(crate) fn result(&self) -> Option<Result<T>> {
        if let Some(r) = self.rx.borrow().as_ref() {
            return Some(r.clone());
        }
        if self.rx.has_changed().is_err() {
            return Some(Err(vanished()));
        }
        None
    }

    pub(crate) fn waiter(&self) -> impl Future<Output = Result<T>> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(r) => r.clone().unwrap_or_else(|| Err(vanished())),
                Err(_) => Err(vanished()),
            }
        }
    }
}

impl<T> fmt::Debug for Flight<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the result: it may be a token.
        f.debug_struct("Flight")
            .field("generation", &self.generation)
            .field("landed", &self.rx.borrow().is_some())
            .finish()
    }
}

fn vanished() -> Error {
    Error::internal("a background fetch ended without a result (the signer runtime stopped)")
}

struct State {
    token: Option<AccessToken>,
    refresh: Option<Flight<AccessToken>>,
    /// Clock micros of the last failed refresh.
    failed_at: Option<i64>,
    /// Clock micros until which `token` is used whatever its life ([`MIN_REUSE`]).
    reuse_until: i64,
}

/// One token, shared by every caller of one credential.
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    fetches: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.source)
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

/// Held for the life of the process: a process has a handful of credential
/// identities (one per metadata host or credentials file), and a signer
/// built per request (GitLab's `Fog::Storage` per upload, field notes s.6)
/// must find the token its garbage-collected predecessors fetched.
static REGISTRY: Mutex<Option<HashMap<String, Arc<TokenCache>>>> = Mutex::new(None);

/// The process-wide cache for the credential `identity`, created with
/// `source` on first use. Every signer built for the same credential (one
/// per Ruby `Signer`, or per fog connection) then shares a single token.
pub fn shared(identity: &str, source: impl TokenSource) -> Arc<TokenCache> {
    let mut guard = REGISTRY.lock();
    guard
        .get_or_insert_with(HashMap::new)
        .entry(identity.to_string())
        .or_insert_with(|| Arc::new(TokenCache::new(Arc::new(source), Arc::new(SystemClock))))
        .clone()
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, clock: Arc<dyn Clock>) -> Self {
        TokenCache {
            source,
            clock,
            state: Mutex::new(State {
                token: None,
                refresh: None,
                failed_at: None,
                reuse_until: i64::MIN,
            }),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many times the source was asked for a token.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A token with at least [`USABLE_FOR`] left.
    pub async fn token(&self) -> Result<AccessToken> {
        let waiter = {
            let mut st = self.state.lock();
            self.land(&mut st);
            let now = self.clock.now_micros();
            if let Some(t) = st.token.clone() {
                let left = t.expires_at.saturating_sub(now);
                if left > micros(FRESH_FOR) {
                    return Ok(t);
                }
                if left > micros(USABLE_FOR) {
                    let recently_failed = st
                        .failed_at
                        .is_some_and(|f| now.saturating_sub(f) < micros(BACKGROUND_RETRY_AFTER));
                    if st.refresh.is_none() && !recently_failed {
                        self.start_refresh(&mut st);
                    }
                    return Ok(t);
                }
                if now < st.reuse_until {
                    return Ok(t);
                }
            }
            if st.refresh.is_none() {
                self.start_refresh(&mut st);
            }
            st.refresh.as_ref().map(Flight::waiter)
        };
        let result = match waiter {
            Some(w) => w.await,
            None => Err(vanished()),
        };
        // Take the landed token in now rather than on the next call, so a
        // process that forks right after its first signature hands the
        // token to the child.
        self.land(&mut self.state.lock());
        result
    }

    /// Forgets `token` after a 401, so the next call fetches a new one. A
    /// token that was already replaced is left alone.
    pub fn invalidate(&self, token: &AccessToken) {
        let mut st = self.state.lock();
        self.land(&mut st);
        if st.token.as_ref().is_some_and(|t| t.value == token.value) {
            st.token = None;
        }
    }

    /// Takes in a finished refresh, and drops one inherited from a parent
    /// that had not finished at fork (its task never runs here). A parent's
    /// refresh that had finished is as good as our own.
    fn land(&self, st: &mut State) {
        let Some(flight) = &st.refresh else { return };
        match flight.result() {
            None if !flight.is_current() => st.refresh = None,
            None => {}
            Some(Ok(t)) => {
                if st.token.as_ref() != Some(&t) {
                    st.reuse_until = self.clock.now_micros().saturating_add(micros(MIN_REUSE));
                }
                st.token = Some(t);
                st.failed_at = None;
                st.refresh = None;
            }
            Some(Err(_)) => {
                // Failures are not cached: the next caller that needs a
                // token starts a new refresh.
                st.failed_at = Some(self.clock.now_micros());
                st.refresh = None;
            }
        }
    }

    fn start_refresh(&self, st: &mut State) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // The token's life counts from before the request, so a slow answer
        // errs on the early side.
        let started = self.clock.now_micros();
        let fetch = self.source.fetch();
        st.refresh = Some(Flight::start(async move {
            let f = crate::events::token_refreshed(fetch.await.and_then(checked))?;
            Ok(AccessToken {
                value: f.value,
                expires_at: started.saturating_add(micros(f.expires_in.min(MAX_LIFETIME))),
            })
        }));
    }
}

/// Refuses a token that cannot be sent as `Authorization: Bearer TOKEN`:
/// OAuth tokens are printable ASCII without spaces (RFC 6750 s.2.1), and a
/// CR or LF would split the header. Refused at once as a protocol error:
/// asking again does not change what the server hands out.
fn checked(f: FetchedToken) -> Result<FetchedToken> {
    if f.value.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(f);
    }
    Err(Error::new(
        crate::error::ErrorKind::Protocol,
        format!(
            "the token endpoint answered an access token ({} bytes, not shown) with characters \
             an HTTP header cannot carry (a line break, space or control character); check \
             GCE_METADATA_HOST / `metadata_host:` or the credentials' token endpoint",
            f.value.len()
        ),
    ))
}

/// Saturating: a lifetime past `i64::MAX` microseconds is as good as forever.
fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::Cancel;
    use crate::clock::ManualClock;
    use crate::error::ErrorKind;
    use std::sync::atomic::AtomicBool;

    const SEC: i64 = 1_000_000;

    /// Counts fetches; answers "tok-N" valid for `life`, after `delay`.
    #[derive(Debug)]
    struct Counting {
        n: Arc<AtomicU64>,
        life: Duration,
        delay: Duration,
        fail: Arc<AtomicBool>,
    }

    impl TokenSource for Counting {
        fn fetch(&self) -> BoxFuture<'static, Result<FetchedToken>> {
            let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
            let (life, delay, fail) = (self.life, self.delay, self.fail.load(Ordering::SeqCst));
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                if fail {
                    return Err(Error::new(ErrorKind::Metadata, "metadata server said 500"));
                }
                Ok(FetchedToken {
                    value: format!("tok-{n}"),
                    expires_in: life,
                })
            })
        }
    }

    struct Fixture {
        cache: Arc<TokenCache>,
        clock: Arc<ManualClock>,
        n: Arc<AtomicU64>,
        fail: Arc<AtomicBool>,
    }

    fn fixture(delay_ms: u64) -> Fixture {
        let n = Arc::new(AtomicU64::new(0));
        let fail = Arc::new(AtomicBool::new(false));
        let clock = Arc::new(ManualClock::new(1_700_000_000 * SEC));
        let source = Counting {
            n: n.clone(),
            life: Duration::from_secs(3600),
            delay: Duration::from_millis(delay_ms),
            fail: fail.clone(),
        };
        let cache = Arc::new(TokenCache::new(Arc::new(source), clock.clone()));
        Fixture {
            cache,
            clock,
            n,
            fail,
        }
    }

    fn get(cache: &TokenCache) -> Result<AccessToken> {
        runtime::block_on(cache.token(), &Cancel::new(), None)
    }

    /// Waits until the source has been asked `n` times and that refresh
    /// has landed.
    fn settle(f: &Fixture) {
        for _ in 0..500 {
            let st = f.cache.state.lock();
            if st.refresh.as_ref().is_none_or(|r| r.result().is_some()) {
                return;
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("refresh never landed");
    }

    #[test]
    fn many_threads_many_calls_one_fetch() {
        let f = fixture(50);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cache = f.cache.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| get(&cache).unwrap().value)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().iter().all(|v| v == "tok-1"));
        }
        assert_eq!(f.n.load(Ordering::SeqCst), 1);
        assert_eq!(f.cache.fetches(), 1);
    }

    #[test]
    fn background_refresh_between_225_and_120_seconds() {
        // The refresh takes 200 ms, so the calls right after it starts
        // still see the old token.
        let f = fixture(200);
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        // 3600 - 3300 = 300 s left: fresh, no refresh.
        f.clock.advance_micros(3300 * SEC);
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        assert_eq!(f.cache.fetches(), 1);
        // 200 s left: the old token is served, one refresh starts.
        f.clock.advance_micros(100 * SEC);
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        settle(&f);
        assert_eq!(f.cache.fetches(), 2);
        assert_eq!(get(&f.cache).unwrap().value, "tok-2");
        assert_eq!(f.cache.fetches(), 2);
    }

    #[test]
    fn under_120_seconds_callers_wait_for_a_new_token() {
        let f = fixture(20);
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        f.clock.advance_micros(3500 * SEC);
        assert_eq!(get(&f.cache).unwrap().value, "tok-2");
        // Expired entirely.
        f.clock.advance_micros(7200 * SEC);
        assert_eq!(get(&f.cache).unwrap().value, "tok-3");
        assert_eq!(f.n.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn concurrent_waiters_share_one_refresh() {
        let f = fixture(100);
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let cache = f.cache.clone();
                std::thread::spawn(move || get(&cache).unwrap().value)
            })
            .collect();
        let values: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(values.iter().all(|v| v == "tok-1"), "{values:?}");
        assert_eq!(f.n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failure_is_not_cached() {
        let f = fixture(0);
        f.fail.store(true, Ordering::SeqCst);
        let err = get(&f.cache).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Metadata);
        f.fail.store(false, Ordering::SeqCst);
        assert_eq!(get(&f.cache).unwrap().value, "tok-2");
        assert_eq!(f.n.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_failed_background_refresh_keeps_serving_and_backs_off() {
        let f = fixture(0);
        get(&f.cache).unwrap();
        f.clock.advance_micros(3400 * SEC);
        f.fail.store(true, Ordering::SeqCst);
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        settle(&f);
        // Within the back-off: served without asking again.
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        assert_eq!(f.cache.fetches(), 2);
        f.clock.advance_micros(6 * SEC);
        f.fail.store(false, Ordering::SeqCst);
        assert_eq!(get(&f.cache).unwrap().value, "tok-1");
        settle(&f);
        assert_eq!(get(&f.cache).unwrap().value, "tok-3");
    }

    #[test]
    fn invalidate_forces_a_new_fetch_once() {
        let f = fixture(0);
        let t1 = get(&f.cache).unwrap();
        f.cache.invalidate(&t1);
        let t2 = get(&f.cache).unwrap();
        assert_eq!(t2.value, "tok-2");
        // A stale invalidation (of t1 again) must not drop t2.
        f.cache.invalidate(&t1);
        assert_eq!(get(&f.cache).unwrap().value, "tok-2");
        assert_eq!(f.cache.fetches(), 2);
    }

    #[test]
    fn a_refresh_from_another_generation_is_not_awaited() {
        let f = fixture(0);
        {
            // A flight as a parent process would leave it: tagged with the
            // parent's pid, and never landing.
            let (_tx, rx) = watch::channel(None);
            f.cache.state.lock().refresh = Some(Flight {
                generation: runtime::generation().wrapping_add(1),
                rx,
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let t = runtime::block_on(f.cache.token(), &Cancel::new(), Some(deadline)).unwrap();
        assert_eq!(t.value, "tok-1");
    }

    #[test]
    fn a_refresh_a_parent_finished_before_fork_is_kept() {
        let f = fixture(0);
        {
            let (tx, rx) = watch::channel(None);
            tx.send_replace(Some(Ok(AccessToken {
                value: "from-parent".into(),
                expires_at: f.clock.now_micros() + 3600 * SEC,
            })));
            f.cache.state.lock().refresh = Some(Flight {
                generation: runtime::generation().wrapping_add(1),
                rx,
            });
            // The sender stays alive, as it does in the parent's memory.
            std::mem::forget(tx);
        }
        assert_eq!(get(&f.cache).unwrap().value, "from-parent");
        assert_eq!(f.n.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_first_token_is_held_once_its_caller_returns() {
        let f = fixture(0);
        get(&f.cache).unwrap();
        let st = f.cache.state.lock();
        assert!(st.refresh.is_none());
        assert_eq!(st.token.as_ref().unwrap().value, "tok-1");
    }

    #[test]
    fn shared_outlives_its_users() {
        let mk = || Counting {
            n: Arc::new(AtomicU64::new(0)),
            life: Duration::from_secs(3600),
            delay: Duration::ZERO,
            fail: Arc::new(AtomicBool::new(false)),
        };
        let first = Arc::as_ptr(&shared("test:outlives", mk()));
        // Every user dropped (a Ruby Signer garbage-collected): a later
        // signer still gets the same cache, and with it the token.
        assert_eq!(Arc::as_ptr(&shared("test:outlives", mk())), first);
    }

    #[test]
    fn debug_hides_the_token() {
        let t = AccessToken {
            value: "ya29.secret".into(),
            expires_at: 1,
        };
        assert!(!format!("{t:?}").contains("secret"));
        let f = FetchedToken {
            value: "ya29.secret".into(),
            expires_in: Duration::from_secs(1),
        };
        assert!(!format!("{f:?}").contains("secret"));
    }

    #[test]
    fn shared_returns_one_cache_per_identity() {
        let mk = || Counting {
            n: Arc::new(AtomicU64::new(0)),
            life: Duration::from_secs(3600),
            delay: Duration::ZERO,
            fail: Arc::new(AtomicBool::new(false)),
        };
        let a = shared("test:shared-a", mk());
        let b = shared("test:shared-a", mk());
        let c = shared("test:shared-c", mk());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    /// Answers `value` valid for `life`, counting the fetches.
    #[derive(Debug)]
    struct Odd {
        n: Arc<AtomicU64>,
        value: &'static str,
        life: Duration,
    }

    impl TokenSource for Odd {
        fn fetch(&self) -> BoxFuture<'static, Result<FetchedToken>> {
            let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
            let (value, life) = (format!("{}{n}", self.value), self.life);
            Box::pin(async move {
                Ok(FetchedToken {
                    value,
                    expires_in: life,
                })
            })
        }
    }

    fn odd(value: &'static str, life: Duration) -> (TokenCache, Arc<ManualClock>, Arc<AtomicU64>) {
        let n = Arc::new(AtomicU64::new(0));
        let clock = Arc::new(ManualClock::new(1_700_000_000 * SEC));
        let source = Odd {
            n: n.clone(),
            value,
            life,
        };
        (TokenCache::new(Arc::new(source), clock.clone()), clock, n)
    }

    /// Issue 15 m3: `expires_in` 0 or 1 used to mean one fetch per call.
    #[test]
    fn a_token_with_no_life_left_is_reused_for_the_minimum_window() {
        for secs in [0, 1, 119] {
            let (cache, clock, n) = odd("tok-", Duration::from_secs(secs));
            for _ in 0..20 {
                assert_eq!(get(&cache).unwrap().value, "tok-1", "expires_in {secs}");
            }
            clock.advance_micros(micros(MIN_REUSE) - SEC);
            assert_eq!(get(&cache).unwrap().value, "tok-1");
            assert_eq!(n.load(Ordering::SeqCst), 1);
            // After the window, the next call waits for a new token.
            clock.advance_micros(2 * SEC);
            assert_eq!(get(&cache).unwrap().value, "tok-2");
            // A 401 still replaces it at once.
            cache.invalidate(&get(&cache).unwrap());
            assert_eq!(get(&cache).unwrap().value, "tok-3");
            assert_eq!(n.load(Ordering::SeqCst), 3);
        }
    }

    /// Issue 15 m3: `expires_in` >= 10^13 s overflowed the microsecond
    /// arithmetic into the past, and the token counted as expired forever.
    #[test]
    fn huge_lifetimes_are_clamped_not_wrapped() {
        for secs in [10_u64.pow(13), u64::MAX] {
            let (cache, clock, n) = odd("tok-", Duration::from_secs(secs));
            let t = get(&cache).unwrap();
            assert!(t.expires_at > clock.now_micros(), "{secs}");
            assert_eq!(t.expires_at, clock.now_micros() + micros(MAX_LIFETIME));
            clock.advance_micros(3600 * SEC);
            assert_eq!(get(&cache).unwrap().value, "tok-1");
            assert_eq!(n.load(Ordering::SeqCst), 1);
            // 12 hours later the clamped lifetime is over.
            clock.advance_micros(11 * 3600 * SEC);
            assert_eq!(get(&cache).unwrap().value, "tok-2");
        }
        assert_eq!(micros(Duration::MAX), i64::MAX);
    }

    /// Issue 15 m4: a token that cannot go into an HTTP header is a
    /// protocol error at once, and is never handed out.
    #[test]
    fn tokens_with_line_breaks_or_spaces_are_protocol_errors() {
        for value in [
            "ya29.a\r\nX-Evil: 1 #",
            "ya29.a\nb",
            "ya29 a",
            "ya29.\u{0}",
            "ya29.é",
        ] {
            let (cache, _clock, n) = odd(value, Duration::from_secs(3600));
            let err = get(&cache).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Protocol, "{value:?}");
            assert!(!err.message().contains("ya29"), "{}", err.message());
            assert!(!err.is_transient());
            assert_eq!(n.load(Ordering::SeqCst), 1);
        }
    }
}
