//! Observability for the Ruby layer (lib/gitlab_gcs_signer/observability.rb):
//! `Native.drain_events` (the core's event queue, src/events.rs, turned into
//! Hashes for the Ruby logger) and `Native.process_stats` (counters summed
//! over every signer this process ever built) and `Native.signer_stats`
//! (each live signer's own).
//!
//! Process-wide counters must be monotonic (Prometheus counters), yet
//! signers come and go (a new fog connection per upload, field notes s.6).
//! So each native signer is registered here while it lives, and its counters
//! are folded into `retired` when Ruby frees it: live + retired never goes
//! down. Everything runs with the GVL held (creation, GC free, stats), and
//! no Ruby object is created while the lock is held, so a GC that frees a
//! signer cannot re-enter the lock on the same thread.
//!
//! The registry belongs to one process (gcs_signer::process): a forked
//! child starts from a copy of its parent's, read without waiting, so the
//! signers it inherited stay counted and their counts carry over.

use gcs_signer::events::{self, Event};
use gcs_signer::process::ProcessLocal;
use gcs_signer::UrlSigner;
use magnus::{function, prelude::*, Error, RArray, RHash, RModule, Ruby};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Per-signer values that are gauges, not counters: they are summed over
/// live signers only. `token_fetches` is left out of sums because signers
/// of one credential share a token cache (src/token.rs); the process-wide
/// figure is `token_refreshes` from the event counters.
const GAUGES: &[&str] = &["entries"];
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
        // (gcs_signer::process::peek_mutex explains why).
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

/// Keeps a signer counted while its Ruby object lives.
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

/// (name, value) over every signer, plus the live count, computed under the
/// lock before any Ruby object exists.
fn totals() -> Vec<(&'static str, u64)> {
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

/// `Native.process_stats` -> { name => Integer }.
fn process_stats(ruby: &Ruby) -> Result<RHash, Error> {
    let hash = ruby.hash_new();
    for (name, value) in totals() {
        hash.aset(ruby.to_symbol(name), value)?;
    }
    Ok(hash)
}

/// `Native.signer_stats` -> [{identity:, hits:, ...}, ...], one per live
/// signer, in creation order.
fn signer_stats(ruby: &Ruby) -> Result<RArray, Error> {
    let snapshot: Vec<(String, Vec<(&'static str, u64)>)> = {
        let guard = registry();
        let mut live: Vec<_> = guard
            .as_ref()
            .map(|reg| reg.live.iter().collect())
            .unwrap_or_default();
        live.sort_by_key(|(id, _)| **id);
        live.into_iter()
            .map(|(_, s)| (s.identity().to_owned(), s.stats()))
            .collect()
    };
    let list = ruby.ary_new_capa(snapshot.len());
    for (identity, stats) in snapshot {
        let h = ruby.hash_new();
        h.aset(ruby.to_symbol("identity"), identity)?;
        for (name, value) in stats {
            h.aset(ruby.to_symbol(name), value)?;
        }
        list.push(h)?;
    }
    Ok(list)
}

/// `Native.drain_events` -> [[{type:, ...}, ...], dropped_since_last_drain].
fn drain_events(ruby: &Ruby) -> Result<RArray, Error> {
    let (records, dropped) = events::drain();
    let list = ruby.ary_new_capa(records.len());
    for record in records {
        let h = ruby.hash_new();
        h.aset(ruby.to_symbol("at"), record.at)?;
        let sym = |s: &str| ruby.to_symbol(s);
        match record.event {
            Event::Retry {
                service,
                kind,
                message,
                delay,
            } => {
                h.aset(sym("type"), sym("retry"))?;
                h.aset(sym("service"), sym(service))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
                h.aset(sym("delay"), delay.as_secs_f64())?;
            }
            Event::TokenRefreshed { expires_in } => {
                h.aset(sym("type"), sym("token_refreshed"))?;
                h.aset(sym("expires_in"), expires_in.as_secs())?;
            }
            Event::TokenRefreshFailed { kind, message } => {
                h.aset(sym("type"), sym("token_refresh_failed"))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
            }
            Event::SignBlobFailed { kind, message } => {
                h.aset(sym("type"), sym("sign_blob_failed"))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
            }
            Event::Throttled { reason } => {
                h.aset(sym("type"), sym("throttled"))?;
                h.aset(sym("reason"), sym(reason))?;
            }
            Event::StaleServed {
                kind,
                message,
                remaining,
                min_life,
            } => {
                h.aset(sym("type"), sym("stale_served"))?;
                h.aset(sym("kind"), sym(events::kind_name(kind)))?;
                h.aset(sym("message"), message)?;
                h.aset(sym("remaining"), remaining)?;
                h.aset(sym("min_life"), min_life)?;
            }
        }
        list.push(h)?;
    }
    let out = ruby.ary_new_capa(2);
    out.push(list)?;
    out.push(dropped)?;
    Ok(out)
}

pub fn init(_ruby: &Ruby, native: RModule) -> Result<(), Error> {
    native.define_singleton_method("drain_events", function!(drain_events, 0))?;
    native.define_singleton_method("process_stats", function!(process_stats, 0))?;
    native.define_singleton_method("signer_stats", function!(signer_stats, 0))?;
    Ok(())
}
