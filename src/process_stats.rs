//! Process-wide figures over every signer this process built, for
//! Prometheus: counters that only ever go up, and gauges that are values
//! now.
//!
//! Signers come and go (a new fog connection per upload,
//! docs/facts.md#gitlab-urls), yet a Prometheus counter must never go down.
//! So each signer is registered while it lives ([`Registration`]), and its
//! counters are folded into `retired` when the registration is dropped:
//! live + retired never decreases. The binding only converts the results.
//!
//! Locking: the registry's lock is never held while a signer is dropped or
//! while anything but plain numbers is built, so a drop that runs from a
//! garbage collector on the same thread cannot re-enter it.
//!
//! The registry belongs to one process ([`ProcessLocal`], src/process.rs):
//! a forked child starts from a copy of its parent's, read without waiting,
//! so the signers it inherited stay counted and their counts carry over.

use crate::events;
use crate::process::ProcessLocal;
use crate::signer::UrlSigner;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Per-signer values that are gauges, not counters: summed over live
/// signers only.
const GAUGES: &[&str] = &["entries"];

/// Per-signer values left out of sums: signers of one credential share a
/// token cache (src/token.rs), so summing `token_fetches` would count one
/// fetch many times. The process-wide figure is `token_refreshes`, from the
/// event counters.
const NOT_SUMMED: &[&str] = &["token_fetches"];

#[derive(Default, Clone)]
struct Registry {
    live: HashMap<u64, UrlSigner>,
    retired: BTreeMap<&'static str, u64>,
    /// Every per-signer name, so that sums list them all (as 0) even when
    /// no signer is alive.
    names: Vec<&'static str>,
}

static REGISTRY: ProcessLocal<Mutex<Option<Registry>>> = ProcessLocal::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Option<Registry>> {
    let local = REGISTRY.get_or_init(|parent| {
        // The parent's lock is read only if free, and never released
        // (crate::process::peek_mutex explains why).
        let inherited = parent.and_then(|m| {
            let guard = m.try_lock().ok()?;
            let copy = guard.clone();
            std::mem::forget(guard);
            copy
        });
        Mutex::new(inherited)
    });
    // A panic while holding the lock leaves plain numbers behind: use them.
    local.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a signer counted while it lives; dropping it retires the signer's
/// counters into the process totals.
#[derive(Debug)]
pub struct Registration(u64);

impl Registration {
    pub fn new(signer: &UrlSigner) -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut guard = registry();
        let reg = guard.get_or_insert_with(Registry::default);
        if reg.names.is_empty() {
            reg.names = signer.stats().into_iter().map(|(name, _)| name).collect();
        }
        reg.live.insert(id, signer.clone());
        Registration(id)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut guard = registry();
        let Some(reg) = guard.as_mut() else { return };
        let Some(signer) = reg.live.remove(&self.0) else {
            return;
        };
        for (name, value) in signer.stats() {
            if !GAUGES.contains(&name) && !NOT_SUMMED.contains(&name) {
                *reg.retired.entry(name).or_default() += value;
            }
        }
        drop(guard);
        // The signer (its cache, its HTTP state) is freed outside the lock.
        drop(signer);
    }
}

/// Test hook (src/process.rs): the registry's lock.
#[cfg(test)]
pub(crate) fn lock_holder() -> crate::process::Holder<'static> {
    (
        "process stats registry",
        Box::new(|park: &dyn Fn()| {
            let _held = registry();
            park();
        }),
    )
}

/// (name, value) for the whole process: every signer's counters (live and
/// retired), the gauges of live ones, the event counters, `signers` (live
/// count) and `log_events_queued`. Names sorted, each once.
pub fn totals() -> Vec<(&'static str, u64)> {
    let guard = registry();
    let mut sums: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut live = 0;
    if let Some(reg) = guard.as_ref() {
        live = reg.live.len() as u64;
        sums.extend(reg.names.iter().map(|name| (*name, 0)));
        sums.retain(|name, _| !NOT_SUMMED.contains(name));
        sums.extend(reg.retired.iter().map(|(k, v)| (*k, *v)));
        for signer in reg.live.values() {
            for (name, value) in signer.stats() {
                if !NOT_SUMMED.contains(&name) {
                    *sums.entry(name).or_default() += value;
                }
            }
        }
    }
    drop(guard);
    let mut out: Vec<_> = sums.into_iter().collect();
    out.extend(events::counters());
    out.push(("signers", live));
    out.push(("log_events_queued", events::queued() as u64));
    out
}

/// Each live signer's identity and own figures, in creation order.
pub fn live_signers() -> Vec<(String, Vec<(&'static str, u64)>)> {
    let guard = registry();
    let mut live: Vec<_> = guard
        .as_ref()
        .map(|reg| reg.live.iter().map(|(id, s)| (*id, s.clone())).collect())
        .unwrap_or_default();
    drop(guard);
    live.sort_by_key(|(id, _)| *id);
    live.into_iter()
        .map(|(_, s)| (s.identity().to_owned(), s.stats()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobSigner, BoxFuture};
    use crate::cancel::Cancel;
    use crate::error::Result;
    use crate::request::{UrlRequest, Version};
    use crate::signer::{Expiry, SignerOptions};
    use std::sync::Arc;

    /// Signs locally with a fake signature: enough to count a miss.
    #[derive(Debug)]
    struct Fake;

    impl BlobSigner for Fake {
        fn identity(&self) -> &str {
            "test:process-stats"
        }
        fn email_now(&self) -> Option<String> {
            Some("a@b.iam.gserviceaccount.com".into())
        }
        fn email(&self) -> BoxFuture<'_, Result<String>> {
            Box::pin(std::future::ready(Ok("a@b.iam.gserviceaccount.com".into())))
        }
        fn sign_local(&self, _payload: &[u8]) -> Option<Result<Vec<u8>>> {
            Some(Ok(vec![7; 256]))
        }
        fn sign(&self, _payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
            Box::pin(std::future::ready(Ok(vec![7; 256])))
        }
        fn uses_sign_blob(&self) -> bool {
            false
        }
    }

    fn get(totals: &[(&'static str, u64)], name: &str) -> u64 {
        let found: Vec<_> = totals.iter().filter(|(n, _)| *n == name).collect();
        assert_eq!(found.len(), 1, "{name} listed once in {totals:?}");
        found[0].1
    }

    fn sign(signer: &UrlSigner, object: &str) {
        let req = UrlRequest::new(Version::V4, "b", object);
        signer
            .signed_url(req, Expiry::In(600.0), None, &Cancel::new())
            .unwrap();
    }

    #[test]
    fn counters_survive_the_signer_and_gauges_do_not() {
        let signer =
            UrlSigner::with_blob_signer(Arc::new(Fake), SignerOptions::default(), Arc::default())
                .unwrap();
        let registration = Registration::new(&signer);
        let before = totals();
        sign(&signer, "one");
        sign(&signer, "one");
        sign(&signer, "two");
        let during = totals();
        // Other tests may run signers at the same time: compare at least.
        assert!(get(&during, "misses") >= get(&before, "misses") + 2);
        assert!(get(&during, "hits") > get(&before, "hits"));
        assert!(get(&during, "entries") >= 2);
        assert!(get(&during, "signers") >= 1);
        assert!(live_signers()
            .iter()
            .any(|(identity, stats)| identity == "test:process-stats"
                && stats.contains(&("misses", 2))));
        let (misses, hits) = (get(&during, "misses"), get(&during, "hits"));
        drop(registration);
        drop(signer);
        let after = totals();
        // Monotonic: a retired signer's counters stay in the totals.
        assert!(get(&after, "misses") >= misses);
        assert!(get(&after, "hits") >= hits);
        // token_fetches is per credential, never summed.
        assert!(!after.iter().any(|(n, _)| *n == "token_fetches"));
        get(&after, "token_refreshes");
        get(&after, "log_events_queued");
    }
}
