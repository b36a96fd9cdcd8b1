//! Exponential backoff with full jitter under an overall deadline.
//!
//! Full jitter (a uniform delay in `[0, min(cap, base * 2^n)]`) spreads the
//! retries of many pods that hit the same 429 or 503 at the same moment,
//! instead of having them come back in lock step. The jitter needs no
//! cryptographic quality, so a xorshift seeded from the clock, the thread
//! and a counter does, without a `rand` dependency.

use crate::error::{Error, Result};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

pub const BASE_DELAY: Duration = Duration::from_millis(100);
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// HTTP statuses worth another try: timeouts, throttling and transient
/// server errors (docs/facts.md#signblob-errors). 400/401/403/404 are answers, not
/// accidents, and retrying them only burns quota.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Transport errors worth another try: the request may not have reached the
/// server, or the server went quiet.
pub fn is_retryable_transport(err: &reqwest::Error) -> bool {
    err.is_connect() || err.is_timeout() || err.is_request()
}

/// Delays for one retried operation.
#[derive(Debug)]
pub struct Backoff {
    attempt: u32,
    state: u64,
    base: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(BASE_DELAY, MAX_DELAY)
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            attempt: 0,
            state: seed(),
            base,
            cap,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(self.attempt).unwrap_or(u32::MAX))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(self.next_u64() % nanos.saturating_add(1))
    }

    fn next_u64(&mut self) -> u64 {
        // xorshift64 (Marsaglia 2003).
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}

fn seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    // xorshift must not start at zero.
    h.finish() | 1
}

/// Runs `op` until it succeeds, fails with a non-transient error
/// ([`Error::is_transient`]), or the next delay would cross `deadline`.
/// `on_retry` sees each transient error and the delay about to be slept
/// (callers use it for stats and for a shared cool-down after a 429).
/// The error returned after giving up is the last one, with the attempt
/// count appended.
pub async fn retry<T, F, Fut>(
    deadline: Instant,
    mut backoff: Backoff,
    mut op: F,
    mut on_retry: impl FnMut(&Error, Duration),
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let err = match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        if Instant::now() + delay >= deadline {
            return Err(Error::new(
                err.kind(),
                format!("{} (gave up after {attempts} attempts)", err.message()),
            ));
        }
        on_retry(&err, delay);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::cell::Cell;

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 501] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn delays_grow_to_the_cap_and_are_jittered() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..40).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let ceiling = BASE_DELAY.saturating_mul(1 << i.min(20)).min(MAX_DELAY);
            assert!(*d <= ceiling, "attempt {i}: {d:?} > {ceiling:?}");
        }
        // Full jitter: the capped tail must not be one repeated value.
        let tail: std::collections::HashSet<_> = delays[10..].iter().collect();
        assert!(tail.len() > 20, "{tail:?}");
        // Two backoffs made at once differ (per-instance seed).
        let a: Vec<_> = (0..8)
            .map({
                let mut b = Backoff::default();
                move |_| b.next_delay()
            })
            .collect();
        let c: Vec<_> = (0..8)
            .map({
                let mut b = Backoff::default();
                move |_| b.next_delay()
            })
            .collect();
        assert_ne!(a, c);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let calls = Cell::new(0);
        let retries = Cell::new(0);
        let start = Instant::now();
        let v = retry(
            start + Duration::from_secs(10),
            Backoff::default(),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 4 {
                        Err(Error::new(ErrorKind::Unavailable, "503"))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_, _| retries.set(retries.get() + 1),
        )
        .await
        .unwrap();
        assert_eq!(v, 4);
        assert_eq!(retries.get(), 3);
        // Three delays, each at most 100, 200 and 400 ms.
        assert!(start.elapsed() <= Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_a_permanent_error() {
        let calls = Cell::new(0);
        let err = retry(
            Instant::now() + Duration::from_secs(10),
            Backoff::default(),
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>(Error::new(ErrorKind::PermissionDenied, "403")) }
            },
            |_, _| panic!("no retry expected"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PermissionDenied);
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_before_the_deadline_with_the_last_error() {
        let calls = Cell::new(0);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let err = retry(
            deadline,
            Backoff::default(),
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>(Error::new(ErrorKind::Quota, "429")) }
            },
            |_, _| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Quota);
        assert!(err.message().contains(&format!("{} attempts", calls.get())));
        assert!(calls.get() >= 2);
        assert!(Instant::now() < deadline);
    }
}
