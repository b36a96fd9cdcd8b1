//! A bounded queue of things an operator wants in the log: retries, token
//! refreshes, signBlob failures, client-side throttling.
//!
//! They happen on tokio worker threads that do not hold Ruby's GVL, where
//! calling a Ruby logger is not allowed (docs/facts.md#ruby-gvl). So the core only
//! records them here, and the Ruby layer drains the queue after each cache
//! miss or error (never on a hit) and logs them with its own logger.
//!
//! The queue is process-wide and capped: when nobody drains it (no misses for
//! a while, or no logger), the oldest events are kept and newer ones are
//! dropped and counted, so memory stays bounded. Events hold no secrets: the
//! messages are the core's error messages, which never carry tokens, keys or
//! signatures (src/error.rs).
//!
//! The queue belongs to one process ([`ProcessLocal`], src/process.rs): a
//! forked child starts a new, empty one instead of touching the parent's
//! lock, which a tokio thread of the parent may have held at the moment of
//! the fork (that thread does not exist in the child).

use crate::error::{Error, ErrorKind};
use crate::process::ProcessLocal;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Events kept until the next drain; more are dropped (and counted).
pub const CAPACITY: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A transient failure that will be retried after `delay`.
    Retry {
        /// `"sign_blob"` or `"metadata"`.
        service: &'static str,
        kind: ErrorKind,
        message: String,
        delay: Duration,
    },
    /// A new access token arrived (`expires_in` as the server said).
    TokenRefreshed { expires_in: Duration },
    /// Fetching an access token failed (callers get the error; a later call
    /// tries again).
    TokenRefreshFailed { kind: ErrorKind, message: String },
    /// A signBlob call ended in an error, retries included.
    SignBlobFailed { kind: ErrorKind, message: String },
    /// The client-side quota guard delayed a call: `"rate"` (per-minute
    /// budget) or `"in_flight"` (concurrent calls).
    Throttled { reason: &'static str },
    /// A miss was answered with a stale cached URL (`remaining` seconds of
    /// life left, at least `min_life`) because signing failed with this
    /// availability error; queued at most once a minute per signer.
    StaleServed {
        kind: ErrorKind,
        message: String,
        remaining: i64,
        min_life: i64,
    },
}

/// An event and when it happened (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub at: f64,
    pub event: Event,
}

/// A capped FIFO of records; the newest are dropped when it is full, so a
/// burst cannot push out the first (usually most telling) events.
#[derive(Debug)]
pub struct EventQueue {
    capacity: usize,
    records: Mutex<VecDeque<Record>>,
    dropped: AtomicU64,
}

impl EventQueue {
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            capacity,
            records: Mutex::new(VecDeque::new()),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `event`; false if it was dropped.
    pub fn push(&self, event: Event) -> bool {
        let mut records = self.records.lock();
        if records.len() >= self.capacity {
            drop(records);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        records.push_back(Record { at: now(), event });
        true
    }

    /// Every queued record, oldest first, and the number dropped since the
    /// last drain.
    pub fn drain(&self) -> (Vec<Record>, u64) {
        let records: Vec<Record> = self.records.lock().drain(..).collect();
        (records, self.dropped.swap(0, Ordering::Relaxed))
    }

    pub fn len(&self) -> usize {
        self.records.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

static QUEUE: ProcessLocal<EventQueue> = ProcessLocal::new();

/// Process-wide counters (never reset, carried over a fork like the
/// per-signer stats). Token caches are shared between signers, so their
/// fetches are counted here once rather than summed per signer.
static TOKEN_REFRESHES: AtomicU64 = AtomicU64::new(0);
static TOKEN_REFRESH_ERRORS: AtomicU64 = AtomicU64::new(0);
static DROPPED_TOTAL: AtomicU64 = AtomicU64::new(0);

fn queue() -> &'static EventQueue {
    QUEUE.get_or_init(|_parent| EventQueue::new(CAPACITY))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Records an event, or counts it as dropped when the queue is full.
pub fn push(event: Event) {
    if !queue().push(event) {
        DROPPED_TOTAL.fetch_add(1, Ordering::Relaxed);
    }
}

/// Takes every queued event, oldest first, and the number dropped since the
/// last drain.
pub fn drain() -> (Vec<Record>, u64) {
    queue().drain()
}

/// A retry about to sleep `delay` after the transient error `e`.
pub fn retry(service: &'static str, e: &Error, delay: Duration) {
    push(Event::Retry {
        service,
        kind: e.kind(),
        message: e.message().to_owned(),
        delay,
    });
}

/// Records a token fetch's outcome: the new token's lifetime, or the error.
/// (The token cache calls this; events know nothing of tokens themselves.)
pub fn token_refreshed(result: Result<Duration, &Error>) {
    match result {
        Ok(expires_in) => {
            TOKEN_REFRESHES.fetch_add(1, Ordering::Relaxed);
            push(Event::TokenRefreshed { expires_in });
        }
        Err(e) => {
            TOKEN_REFRESH_ERRORS.fetch_add(1, Ordering::Relaxed);
            push(Event::TokenRefreshFailed {
                kind: e.kind(),
                message: e.message().to_owned(),
            });
        }
    }
}

pub fn sign_blob_failed(e: &Error) {
    push(Event::SignBlobFailed {
        kind: e.kind(),
        message: e.message().to_owned(),
    });
}

pub fn stale_served(e: &Error, remaining: i64, min_life: i64) {
    push(Event::StaleServed {
        kind: e.kind(),
        message: e.message().to_owned(),
        remaining,
        min_life,
    });
}

pub fn throttled(reason: &'static str) {
    push(Event::Throttled { reason });
}

/// Process-wide counters: (name, value), monotonic.
pub fn counters() -> [(&'static str, u64); 3] {
    [
        ("token_refreshes", TOKEN_REFRESHES.load(Ordering::Relaxed)),
        (
            "token_refresh_errors",
            TOKEN_REFRESH_ERRORS.load(Ordering::Relaxed),
        ),
        ("log_events_dropped", DROPPED_TOTAL.load(Ordering::Relaxed)),
    ]
}

/// Events queued now (a gauge).
pub fn queued() -> usize {
    queue().len()
}

/// Test hook (src/process.rs): the queue's lock.
#[cfg(test)]
pub(crate) fn lock_holder() -> crate::process::Holder<'static> {
    (
        "event queue",
        Box::new(|park: &dyn Fn()| {
            let _held = queue().records.lock();
            park();
        }),
    )
}

/// A stable snake_case name for an error kind (log lines, Ruby symbols).
pub fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidArgument => "invalid_argument",
        ErrorKind::Credentials => "credentials",
        ErrorKind::Metadata => "metadata",
        ErrorKind::WorkloadIdentity => "workload_identity",
        ErrorKind::PermissionDenied => "permission_denied",
        ErrorKind::InsufficientScope => "insufficient_scope",
        ErrorKind::ApiDisabled => "api_disabled",
        ErrorKind::Unauthenticated => "unauthenticated",
        ErrorKind::Quota => "quota",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Interrupted => "interrupted",
        ErrorKind::Protocol => "protocol",
        ErrorKind::Internal => "internal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_event(i: usize) -> Event {
        Event::Retry {
            service: "sign_blob",
            kind: ErrorKind::Unavailable,
            message: format!("HTTP 503 #{i}"),
            delay: Duration::from_millis(i as u64),
        }
    }

    #[test]
    fn bounded_queue_keeps_the_oldest_and_counts_drops() {
        let q = EventQueue::new(4);
        let kept: Vec<bool> = (0..7).map(|i| q.push(retry_event(i))).collect();
        assert_eq!(kept, [true, true, true, true, false, false, false]);
        assert_eq!(q.len(), 4);
        let (records, dropped) = q.drain();
        assert_eq!(dropped, 3);
        let events: Vec<_> = records.iter().map(|r| r.event.clone()).collect();
        assert_eq!(events, (0..4).map(retry_event).collect::<Vec<_>>());
        assert!(records[0].at > 1.5e9 && records[0].at <= records[3].at);
        assert_eq!(q.drain(), (vec![], 0));
        assert!(q.push(retry_event(9)));
    }

    // The global queue is shared with every other test in this binary, so
    // only lower bounds can be checked here.
    #[test]
    fn token_outcomes_are_counted() {
        // Only a lifetime or an error reaches this module: a token's value
        // cannot end up in an event.
        let before = counters();
        token_refreshed(Ok(Duration::from_secs(3599)));
        token_refreshed(Err(&Error::new(ErrorKind::Metadata, "no server")));
        let after = counters();
        assert!(after[0].1 > before[0].1);
        assert!(after[1].1 > before[1].1);
    }

    #[test]
    fn kind_names_are_snake_case() {
        assert_eq!(
            kind_name(ErrorKind::InsufficientScope),
            "insufficient_scope"
        );
        assert_eq!(kind_name(ErrorKind::Unauthenticated), "unauthenticated");
    }
}
