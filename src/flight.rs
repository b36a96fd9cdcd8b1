//! Single flight: concurrent callers that need the same work done share one
//! run of it. The one implementation behind the URL cache (one `signBlob`
//! per URL being signed), the token cache (one refresh per credential) and
//! the metadata email lookup.
//!
//! The work runs as a task on this process's runtime, not in any caller, so
//! a caller that gives up (deadline, Ruby interrupt) does not abort it for
//! the others. It records its own result (cache insert, new token) before
//! the flight leaves the table, so a caller arriving in between finds the
//! result or the flight, never neither, provided it looks for the flight
//! first (a caller that looks for the result first has its work look again:
//! `Inner::join_flight` in src/signer.rs).
//!
//! [`Policy::CancelUnwatched`]: a flight nobody waits for any more is
//! dropped at once, so work still queued (quota guard, in-flight limit,
//! 429 cool-down) is never sent. Without that, callers interrupted by
//! Ruby's `Timeout` leave thousands of `signBlob` calls behind them.
//!
//! A table belongs to one process (it sits inside a
//! [`crate::process::ProcessLocal`]): a child never joins its parent's
//! flights, whose tasks do not exist in it.

use crate::error::{Error, Result};
use crate::runtime;
use parking_lot::Mutex;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// What happens to a flight when its last waiter gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// It runs to its end and records its result (a token refresh: the next
    /// caller needs the token anyway, and a cold metadata server may take
    /// longer than any one caller waits).
    RunToEnd,
    /// It is dropped, and with it whatever it had not sent yet.
    CancelUnwatched,
}

type Outcome<T> = Option<Result<T>>;

#[derive(Debug, Default)]
struct Watchers {
    count: AtomicUsize,
    gone: Notify,
}

struct Running<T> {
    id: u64,
    rx: watch::Receiver<Outcome<T>>,
    watchers: Arc<Watchers>,
}

struct Table<K, T> {
    next_id: u64,
    by_key: HashMap<K, Running<T>>,
}

/// The flights of one process, by key.
pub struct SingleFlight<K, T> {
    table: Arc<Mutex<Table<K, T>>>,
}

impl<K, T> Default for SingleFlight<K, T> {
    fn default() -> Self {
        SingleFlight {
            table: Arc::new(Mutex::new(Table {
                next_id: 0,
                by_key: HashMap::new(),
            })),
        }
    }
}

impl<K, T> std::fmt::Debug for SingleFlight<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a result: it may be a token.
        f.debug_struct("SingleFlight")
            .field("in_flight", &self.table.lock().by_key.len())
            .finish()
    }
}

/// A caller's place in a flight. While it lives the flight counts it as a
/// waiter; dropping it (the caller gave up) may cancel the flight.
pub struct Ticket<T> {
    rx: watch::Receiver<Outcome<T>>,
    watchers: Arc<Watchers>,
    started: bool,
}

impl<T> Drop for Ticket<T> {
    fn drop(&mut self) {
        if self.watchers.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Stores a permit if the flight is not listening yet.
            self.watchers.gone.notify_one();
        }
    }
}

impl<T: Clone> Ticket<T> {
    /// Whether this caller started the flight (false: it joined one).
    pub fn started(&self) -> bool {
        self.started
    }

    /// The flight's result.
    pub async fn wait(mut self) -> Result<T> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(vanished())),
            Err(_) => Err(vanished()),
        }
    }
}

fn vanished() -> Error {
    Error::internal(
        "a shared operation ended without a result (the signer runtime stopped); retry the call",
    )
}

impl<K, T> SingleFlight<K, T>
where
    K: Eq + Hash + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the flight for `key`, or starts `work()` as one.
    pub fn join<Q, F>(&self, key: &Q, policy: Policy, work: impl FnOnce() -> F) -> Ticket<T>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let mut table = self.table.lock();
        if let Some(running) = table.by_key.get(key) {
            // A flight whose task vanished (no runtime) is replaced.
            if running.rx.has_changed().is_ok() {
                running.watchers.count.fetch_add(1, Ordering::AcqRel);
                return Ticket {
                    rx: running.rx.clone(),
                    watchers: running.watchers.clone(),
                    started: false,
                };
            }
        }
        let (rx, watchers) = self.launch(&mut table, key.to_owned(), policy, work());
        watchers.count.fetch_add(1, Ordering::AcqRel);
        Ticket {
            rx,
            watchers,
            started: true,
        }
    }

    /// Starts `work()` for `key` unless a flight for it is running; nobody
    /// waits for it (a background refresh). True if it started one.
    pub fn start<Q, F>(&self, key: &Q, work: impl FnOnce() -> F) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let mut table = self.table.lock();
        if table
            .by_key
            .get(key)
            .is_some_and(|r| r.rx.has_changed().is_ok())
        {
            return false;
        }
        self.launch(&mut table, key.to_owned(), Policy::RunToEnd, work());
        true
    }

    /// Whether a flight for `key` is running.
    pub fn is_running<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.table
            .lock()
            .by_key
            .get(key)
            .is_some_and(|r| r.rx.has_changed().is_ok())
    }

    /// Flights running now.
    pub fn len(&self) -> usize {
        self.table.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn launch(
        &self,
        table: &mut Table<K, T>,
        key: K,
        policy: Policy,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> (watch::Receiver<Outcome<T>>, Arc<Watchers>) {
        let (tx, rx) = watch::channel(None);
        let watchers = Arc::new(Watchers::default());
        table.next_id += 1;
        let id = table.next_id;
        let owned = Arc::clone(&self.table);
        let w = watchers.clone();
        let task = async move {
            let outcome = match policy {
                Policy::RunToEnd => work.await,
                Policy::CancelUnwatched => {
                    tokio::pin!(work);
                    loop {
                        tokio::select! {
                            r = &mut work => break r,
                            _ = w.gone.notified() => {
                                // Joins happen under the table lock, so a
                                // caller either joined before this check or
                                // starts a new flight after the removal.
                                let mut table = owned.lock();
                                if w.count.load(Ordering::Acquire) == 0 {
                                    remove(&mut table, id);
                                    return; // drops `work`: nothing more is sent
                                }
                            }
                        }
                    }
                }
            };
            remove(&mut owned.lock(), id);
            tx.send_replace(Some(outcome));
        };
        table.by_key.insert(
            key,
            Running {
                id,
                rx: rx.clone(),
                watchers: watchers.clone(),
            },
        );
        // If the runtime cannot start, the task is dropped and waiters see
        // the closed channel (`vanished`).
        runtime::spawn(task);
        (rx, watchers)
    }
}

impl<K, T> SingleFlight<K, T> {
    /// Test hook (src/process.rs): holds the table's lock.
    #[cfg(test)]
    pub(crate) fn holder(&self, name: &'static str) -> crate::process::Holder<'_>
    where
        K: Send + Sync,
        T: Send + Sync,
    {
        crate::process::mutex_holder(name, &self.table)
    }
}

fn remove<K, T>(table: &mut Table<K, T>, id: u64) {
    table.by_key.retain(|_, r| r.id != id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::Cancel;
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    fn block<T>(f: impl Future<Output = Result<T>> + Send) -> Result<T> {
        runtime::block_on(f, &Cancel::new(), None)
    }

    #[test]
    fn concurrent_callers_share_one_run() {
        let flights: Arc<SingleFlight<String, u64>> = Arc::new(SingleFlight::new());
        let runs = Arc::new(AtomicU64::new(0));
        // The run ends once all eight callers hold a ticket (at most 10 s),
        // not after a fixed 100 ms that a thread started late on a loaded
        // machine could miss (it would then start a second run).
        let joined = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (flights, runs, joined) = (flights.clone(), runs.clone(), joined.clone());
                std::thread::spawn(move || {
                    let all_in = joined.clone();
                    let ticket = flights.join("k", Policy::CancelUnwatched, || async move {
                        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                        while all_in.load(Ordering::SeqCst) < 8
                            && tokio::time::Instant::now() < deadline
                        {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
                    });
                    joined.fetch_add(1, Ordering::SeqCst);
                    block(ticket.wait()).unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 1);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[test]
    fn failures_reach_every_waiter_and_are_not_kept() {
        let flights: SingleFlight<String, u8> = SingleFlight::new();
        // 500 ms: `b` joins while `a` runs even if this thread is held up
        // between the two joins on a loaded machine.
        let a = flights.join("k", Policy::RunToEnd, || async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Err(Error::internal("boom"))
        });
        let b = flights.join("k", Policy::RunToEnd, || async { Ok(1) });
        assert!(a.started() && !b.started());
        assert!(block(a.wait()).is_err());
        assert!(block(b.wait()).is_err());
        let c = flights.join("k", Policy::RunToEnd, || async { Ok(2) });
        assert!(c.started());
        assert_eq!(block(c.wait()).unwrap(), 2);
    }

    /// Issue m12: a flight whose callers all gave up is cancelled before
    /// its work gets to send anything.
    #[test]
    fn a_flight_nobody_waits_for_is_cancelled_before_it_sends() {
        let flights: SingleFlight<String, u8> = SingleFlight::new();
        let sent = Arc::new(AtomicU64::new(0));
        let s = sent.clone();
        let ticket = flights.join("k", Policy::CancelUnwatched, || async move {
            // Queued (as behind the quota guard), then "sends".
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        });
        let cancel = Cancel::new();
        cancel.cancel();
        // The caller gives up (as a Ruby Timeout does).
        assert!(runtime::block_on(ticket.wait(), &cancel, None).is_err());
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(sent.load(Ordering::SeqCst), 0);
        assert!(!flights.is_running("k"));

        // A run-to-end flight finishes without waiters.
        let s = sent.clone();
        assert!(flights.start("t", || async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            s.fetch_add(1, Ordering::SeqCst);
            Ok(1)
        }));
        // Polled: on a loaded machine the runtime may take a while to run it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sent.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_caller_that_joins_before_the_cancel_keeps_the_flight() {
        let flights: SingleFlight<String, u8> = SingleFlight::new();
        // 500 ms: `second` joins while `first` runs even if this thread is
        // held up between the two joins on a loaded machine.
        let first = flights.join("k", Policy::CancelUnwatched, || async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(9)
        });
        let second = flights.join("k", Policy::CancelUnwatched, || async { Ok(0) });
        drop(first);
        assert_eq!(block(second.wait()).unwrap(), 9);
    }
}
