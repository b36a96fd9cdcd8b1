//! One access token per credential and process (docs/facts.md#token-caching).
//!
//! Google's guidance for token caches: keep one token in memory, never fetch
//! per request. More than 225 s left: use it. Between 225 s and 120 s: keep
//! serving it and refresh in the background (the GKE metadata server only
//! reliably hands out a new token 120 s before expiry). Less: refresh and
//! wait. Exactly one refresh at a time: concurrent callers wait for the same
//! one.
//!
//! A refresh is a single flight (src/flight.rs) that runs to its end, so a
//! caller that gives up (deadline, Ruby interrupt) does not abort the
//! refresh the others wait for; it stores its token itself when it lands.
//!
//! The token and its refresh belong to one process (src/process.rs): a
//! forked child takes over the parent's token if it can read it without
//! waiting, and never waits on the parent's refresh, whose task does not
//! exist in the child.

use crate::blob::BoxFuture;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::flight::{Policy, SingleFlight};
use crate::process::{peek_mutex, ProcessLocal};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

#[derive(Default)]
struct Held {
    token: Option<AccessToken>,
    /// Clock micros of the last failed refresh.
    failed_at: Option<i64>,
    /// Clock micros until which `token` is used whatever its life ([`MIN_REUSE`]).
    reuse_until: i64,
}

/// A token cache's per-process part.
#[derive(Default)]
struct State {
    held: Arc<Mutex<Held>>,
    refresh: SingleFlight<(), AccessToken>,
}

/// One token, shared by every caller of one credential.
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    clock: Arc<dyn Clock>,
    state: ProcessLocal<State>,
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
/// built per request (GitLab's `Fog::Storage` per upload, docs/facts.md#gitlab-urls)
/// must find the token its garbage-collected predecessors fetched.
/// A forked child starts from a copy of its parent's (if it can read it
/// without waiting), so its signers share the caches it inherited.
static REGISTRY: ProcessLocal<Mutex<HashMap<String, Arc<TokenCache>>>> = ProcessLocal::new();

/// The process-wide cache for the credential `identity`, created with
/// `source` on first use. Every signer built for the same credential (one
/// per Ruby `Signer`, or per fog connection) then shares a single token.
pub fn shared(identity: &str, source: impl TokenSource) -> Arc<TokenCache> {
    let registry = REGISTRY.get_or_init(|parent| {
        Mutex::new(
            parent
                .and_then(|p| peek_mutex(p, HashMap::clone))
                .unwrap_or_default(),
        )
    });
    registry
        .lock()
        .entry(identity.to_string())
        .or_insert_with(|| Arc::new(TokenCache::new(Arc::new(source), Arc::new(SystemClock))))
        .clone()
}

impl TokenCache {
    pub fn new(source: Arc<dyn TokenSource>, clock: Arc<dyn Clock>) -> Self {
        TokenCache {
            source,
            clock,
            state: ProcessLocal::new(),
            fetches: AtomicU64::new(0),
        }
    }

    /// This process's token and refresh; a forked child starts with its
    /// parent's token if the parent's lock was free at the fork.
    fn state(&self) -> &State {
        self.state.get_or_init(|parent| State {
            held: Arc::new(Mutex::new(Held {
                token: parent.and_then(|p| peek_mutex(&p.held, |h| h.token.clone()).flatten()),
                failed_at: None,
                reuse_until: 0,
            })),
            refresh: SingleFlight::new(),
        })
    }

    /// How many times the source was asked for a token.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A token with at least [`USABLE_FOR`] left.
    pub async fn token(&self) -> Result<AccessToken> {
        let st = self.state();
        let ticket = {
            let held = st.held.lock();
            let now = self.clock.now_micros();
            if let Some(t) = held.token.clone() {
                let left = t.expires_at.saturating_sub(now);
                if left > micros(FRESH_FOR) {
                    return Ok(t);
                }
                if left > micros(USABLE_FOR) {
                    let recently_failed = held
                        .failed_at
                        .is_some_and(|f| now.saturating_sub(f) < micros(BACKGROUND_RETRY_AFTER));
                    if !recently_failed {
                        st.refresh.start(&(), || self.refresh(st));
                    }
                    return Ok(t);
                }
                if now < held.reuse_until {
                    return Ok(t);
                }
            }
            // The lock is held while joining, so a refresh cannot land
            // unseen between the check above and the join.
            st.refresh.join(&(), Policy::RunToEnd, || self.refresh(st))
        };
        ticket.wait().await
    }

    /// Forgets `token` after a 401, so the next call fetches a new one. A
    /// token that was already replaced is left alone.
    pub fn invalidate(&self, token: &AccessToken) {
        let mut held = self.state().held.lock();
        if held.token.as_ref().is_some_and(|t| t.value == token.value) {
            held.token = None;
        }
    }

    /// One fetch, which stores its token (or the time of its failure)
    /// before its flight ends.
    fn refresh(
        &self,
        st: &State,
    ) -> impl std::future::Future<Output = Result<AccessToken>> + Send + 'static {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        // The token's life counts from before the request, so a slow answer
        // errs on the early side.
        let clock = self.clock.clone();
        let started = clock.now_micros();
        let fetch = self.source.fetch();
        let held = st.held.clone();
        async move {
            let fetched = fetch.await.and_then(checked);
            crate::events::token_refreshed(fetched.as_ref().map(|f| f.expires_in));
            let result = fetched.map(|f| AccessToken {
                value: f.value,
                expires_at: started.saturating_add(micros(f.expires_in.min(MAX_LIFETIME))),
            });
            let mut h = held.lock();
            match &result {
                Ok(t) => {
                    if h.token.as_ref() != Some(t) {
                        h.reuse_until = clock.now_micros().saturating_add(micros(MIN_REUSE));
                    }
                    h.token = Some(t.clone());
                    h.failed_at = None;
                }
                // Failures are not cached: the next caller that needs a
                // token starts a new refresh.
                Err(_) => h.failed_at = Some(clock.now_micros()),
            }
            result
        }
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

#[cfg(test)]
impl TokenCache {
    /// Test hook (src/process.rs): the token's lock, the refresh table's
    /// and the registry's.
    pub(crate) fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        let st = self.state();
        vec![
            crate::process::mutex_holder("token state", &st.held),
            st.refresh.holder("token refresh table"),
        ]
    }
}

/// Test hook (src/process.rs): the registry's lock.
#[cfg(test)]
pub(crate) fn registry_holder() -> crate::process::Holder<'static> {
    (
        "token cache registry",
        Box::new(|park: &dyn Fn()| {
            let _held = REGISTRY.current().map(|r| r.lock());
            park();
        }),
    )
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
    use crate::error::{Error, ErrorKind};
    use crate::runtime;
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
            if !f.cache.state().refresh.is_running(&()) {
                return;
            }
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
    fn the_first_token_is_held_once_its_caller_returns() {
        let f = fixture(0);
        get(&f.cache).unwrap();
        let st = f.cache.state();
        assert!(!st.refresh.is_running(&()));
        assert_eq!(st.held.lock().token.as_ref().unwrap().value, "tok-1");
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
