//! The signed-URL cache: which earlier URL may answer a new request, and
//! which caller signs when several miss the same key at once.
//!
//! # The contract
//! A request needs a URL valid until at least `X = now + lifetime`. A cached
//! URL expiring at `x` may answer it only if `X <= x <= X + E`, where `E` is
//! the *maximum extension* ([`CacheConfig::extension_for`]): the most a URL
//! may outlive what was asked. On a miss the caller signs with `x = X + E`,
//! the latest expiry the rule allows. For each key this is the greedy
//! interval-stabbing rule, which needs the fewest signatures possible for a
//! given `E` (bench/trace.rb computes that bound independently).
//!
//! On top: a signature from `signBlob` only serves a request that needs the
//! URL no later than 12 hours after the signing (Google rotates the keys
//! behind it and guarantees a signature for 12 hours, docs/facts.md#signblob-key-lifetime),
//! and nothing is ever served for a different key, since the key is the full
//! request ([`crate::UrlRequest::cache_key`]), not a hash of it.
//!
//! # Storage
//! quick_cache bounds the entries (S3-FIFO-style admission, so a scan of
//! one-off objects does not flush the hot ones). Misses in flight are a
//! [`SingleFlight`] table (src/flight.rs); a second caller that misses the
//! same key waits for the first caller's result instead of signing again.
//!
//! # Across fork
//! The store and the flights belong to one process ([`ProcessLocal`],
//! src/process.rs): a forked child writes to a store of its own, and reads
//! the stores of its parent (and the parent's ancestors) as they were at the
//! fork, only with quick_cache's try-locks (`try_peek`). A shard a parent
//! thread held at the fork reads as a miss, never a wait, so a child inherits
//! a booted parent's warm cache and still never blocks on it. A URL found
//! there is copied into the child's own store on first use.

use crate::error::Result;
use crate::flight::SingleFlight;
use crate::process::ProcessLocal;
use crate::stats::Stats;
use quick_cache::sync::Cache;
use std::sync::Arc;

/// Signatures made by `signBlob` are guaranteed for 12 hours only.
pub const SIGN_BLOB_MAX_SERVE_SECS: i64 = crate::config::SIGN_BLOB_MAX_SERVE_SECS;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheConfig {
    /// `E` as a share of the lifetime asked for (0.0 to 1.0).
    pub extension_ratio: f64,
    /// `E` never exceeds this many seconds.
    pub max_extension: i64,
    /// Bound on cached URLs (each costs about 1 KB).
    pub max_entries: usize,
}

impl Default for CacheConfig {
    /// A URL may live at most 10% longer than asked, and never more than
    /// 5 minutes longer: a 10-minute download link lives at most 11 minutes,
    /// a 4 h 15 min direct-upload link at most 4 h 20 min. README "Cache".
    fn default() -> Self {
        CacheConfig {
            extension_ratio: crate::config::CACHE_EXTENSION_RATIO,
            max_extension: crate::config::CACHE_MAX_EXTENSION,
            max_entries: crate::config::CACHE_MAX_ENTRIES,
        }
    }
}

impl CacheConfig {
    pub fn validate(&self) -> Result<()> {
        crate::config::extension_ratio(self.extension_ratio)?;
        crate::config::max_extension(self.max_extension)?;
        crate::config::max_entries(i64::try_from(self.max_entries).unwrap_or(i64::MAX))?;
        Ok(())
    }

    /// `E` for a request asking for `lifetime` seconds.
    pub fn extension_for(&self, lifetime: i64) -> i64 {
        let by_ratio = (lifetime.max(0) as f64 * self.extension_ratio).floor() as i64;
        by_ratio.min(self.max_extension).max(0)
    }
}

/// One cached URL.
#[derive(Debug)]
pub struct Entry {
    pub url: String,
    /// When the URL stops working (Unix seconds).
    pub expires_at: i64,
    /// When it was signed (Unix seconds).
    pub signed_at: i64,
    /// Whether the signature came from `signBlob` (12-hour rule).
    pub from_sign_blob: bool,
}

/// What a request will accept: `at_least <= x <= at_most`, at time `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    pub now: i64,
    pub at_least: i64,
    pub at_most: i64,
}

impl Entry {
    pub fn serves(&self, want: &Want) -> bool {
        if !(want.at_least <= self.expires_at && self.expires_at <= want.at_most) {
            return false;
        }
        if !self.from_sign_blob {
            return true;
        }
        // Google guarantees a signBlob signature for 12 hours after signing
        // (docs/facts.md#signblob-key-lifetime): the URL must be needed no longer than that.
        if want.at_least - want.now <= SIGN_BLOB_MAX_SERVE_SECS {
            want.at_least <= self.signed_at + SIGN_BLOB_MAX_SERVE_SECS
        } else {
            // Asked to live longer than any signBlob signature is guaranteed:
            // only a signature made this second is as good as a fresh one.
            self.signed_at >= want.now
        }
    }

    /// Until when the URL works (Unix seconds): its expiry, and for a
    /// `signBlob` signature at most 12 hours after signing.
    pub fn usable_until(&self) -> i64 {
        if self.from_sign_blob {
            self.expires_at
                .min(self.signed_at.saturating_add(SIGN_BLOB_MAX_SERVE_SECS))
        } else {
            self.expires_at
        }
    }

    /// Whether it may answer `want` when signing failed (stale-if-error,
    /// src/stale.rs): it works for at least `min_life` more seconds, and
    /// does not outlive the request by more than the normal rule allows.
    pub fn serves_stale(&self, want: &Want, min_life: i64) -> bool {
        self.expires_at <= want.at_most
            && self.signed_at <= want.now
            && self.usable_until().saturating_sub(want.now) >= min_life
    }

    /// True when no request can be served by it any more.
    fn is_dead(&self, now: i64) -> bool {
        self.expires_at <= now
            || (self.from_sign_blob && now >= self.signed_at + SIGN_BLOB_MAX_SERVE_SECS)
    }
}

/// Collects the keys quick_cache drops during one insert. quick_cache also
/// reports the value an insert *replaces* through `on_evict`; a newer URL for
/// the same key is not an eviction, so [`UrlCache::insert`] tells them apart.
#[derive(Clone)]
struct Evictions;

impl quick_cache::Lifecycle<String, Arc<Entry>> for Evictions {
    type RequestState = Vec<String>;
    fn on_evict(&self, dropped: &mut Vec<String>, key: String, _: Arc<Entry>) {
        dropped.push(key);
    }
}

type Store = Cache<
    String,
    Arc<Entry>,
    quick_cache::UnitWeighter,
    quick_cache::DefaultHashBuilder,
    Evictions,
>;

/// The cache's per-process part.
struct Local {
    /// Written by this process only.
    store: Arc<Store>,
    /// The parent's store and its ancestors', newest first, as left at the
    /// fork: read with try-locks only, never written (module docs).
    inherited: Vec<Arc<Store>>,
    /// Keys being signed right now by this process.
    flights: SingleFlight<String, Arc<Entry>>,
}

/// How many generations of ancestors' stores a child reads.
const MAX_INHERITED: usize = 2;

pub struct UrlCache {
    config: CacheConfig,
    options: quick_cache::Options,
    local: ProcessLocal<Local>,
    stats: Arc<Stats>,
    /// Inserts so far; every [`SWEEP_EVERY`]th sweeps out the dead entries.
    inserts: std::sync::atomic::AtomicU64,
}

/// Expired entries go in one pass now and then, not on every call.
const SWEEP_EVERY: u64 = 4096;

impl std::fmt::Debug for UrlCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlCache")
            .field("config", &self.config)
            .field("entries", &self.len())
            .finish()
    }
}

impl UrlCache {
    pub fn new(config: CacheConfig, stats: Arc<Stats>) -> Result<Self> {
        config.validate()?;
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(config.max_entries)
            .weight_capacity(config.max_entries as u64)
            .build()
            .map_err(|e| crate::Error::internal(format!("cache options: {e:?}")))?;
        Ok(UrlCache {
            config,
            options,
            local: ProcessLocal::new(),
            stats,
            inserts: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This process's store and flights; a forked child's first call makes
    /// its own, over its parent's store read-only.
    #[inline]
    fn local(&self) -> &Local {
        self.local.get_or_init(|parent| Local {
            store: Arc::new(Cache::with_options(
                self.options.clone(),
                quick_cache::UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                Evictions,
            )),
            inherited: parent
                .map(|p| {
                    std::iter::once(&p.store)
                        .chain(&p.inherited)
                        .take(MAX_INHERITED)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            flights: SingleFlight::new(),
        })
    }

    /// The URLs being signed by this process, by cache key.
    pub fn flights(&self) -> &SingleFlight<String, Arc<Entry>> {
        &self.local().flights
    }

    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Entries in this process's own store (a forked child counts an
    /// inherited URL once it has served it).
    pub fn len(&self) -> usize {
        self.local().store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.local().store.is_empty()
    }

    /// The range of expiries a request for `lifetime` seconds, needing a URL
    /// valid until `at_least`, accepts.
    pub fn want(&self, now: i64, at_least: i64) -> Want {
        let lifetime = at_least.saturating_sub(now);
        Want {
            now,
            at_least,
            at_most: at_least.saturating_add(self.config.extension_for(lifetime)),
        }
    }

    /// A cached URL that serves `want`, if any. A dead entry found on the way
    /// is dropped.
    pub fn lookup(&self, key: &str, want: &Want) -> Option<Arc<Entry>> {
        let local = self.local();
        if let Some(entry) = local.store.get(key) {
            if entry.serves(want) {
                return Some(entry);
            }
            if entry.is_dead(want.now)
                && local
                    .store
                    .remove_if(key, |e| Arc::ptr_eq(e, &entry))
                    .is_some()
            {
                Stats::incr(&self.stats.evictions);
            }
        }
        if local.inherited.is_empty() {
            return None;
        }
        self.lookup_inherited(local, key, want)
    }

    /// A parent's URL for `key`, copied into this process's store. Never
    /// waits: a shard locked at the fork reads as a miss (module docs).
    #[cold]
    fn lookup_inherited(&self, local: &Local, key: &str, want: &Want) -> Option<Arc<Entry>> {
        let entry = local.inherited.iter().find_map(|store| {
            let e = store.try_peek(key).ok()??;
            e.serves(want).then_some(e)
        })?;
        self.insert(key.to_owned(), entry.clone());
        Some(entry)
    }

    /// The URL cached for exactly `key` that may answer `want` when signing
    /// failed ([`Entry::serves_stale`]). Entries too short for the normal
    /// rule stay in the cache until they expire (dropped on lookup and in
    /// the sweep only when dead), within `max_entries`.
    /// A forked child also reads its parent's store (try-locks only).
    pub fn lookup_stale(&self, key: &str, want: &Want, min_life: i64) -> Option<Arc<Entry>> {
        let local = self.local();
        if let Some(e) = local.store.get(key) {
            if e.serves_stale(want, min_life) {
                return Some(e);
            }
        }
        local.inherited.iter().find_map(|store| {
            let e = store.try_peek(key).ok()??;
            e.serves_stale(want, min_life).then_some(e)
        })
    }

    /// Inserts `entry` unless the key holds one that works longer.
    pub fn insert_if_longer(&self, key: String, entry: Arc<Entry>) {
        match self.local().store.get(&key) {
            Some(e) if e.usable_until() >= entry.usable_until() => {}
            _ => self.insert(key, entry),
        }
    }

    pub fn insert(&self, key: String, entry: Arc<Entry>) {
        let now = entry.signed_at;
        let mut dropped = Vec::new();
        self.local()
            .store
            .insert_with_lifecycle(key.clone(), entry, &mut dropped);
        let evicted = dropped.iter().filter(|k| **k != key).count();
        if evicted > 0 {
            self.stats
                .evictions
                .fetch_add(evicted as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let n = self
            .inserts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n % SWEEP_EVERY == 0 {
            self.sweep(now);
        }
    }

    /// Drops every entry no request can use any more.
    pub fn sweep(&self, now: i64) {
        let store = &self.local().store;
        let before = store.len();
        store.retain(|_, e| !e.is_dead(now));
        let dropped = before.saturating_sub(store.len());
        self.stats
            .evictions
            .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
impl UrlCache {
    /// Test hook (src/process.rs): the store's shard lock (for writing, as
    /// an insert holds it), taken by `retain` at the first entry, and the
    /// flight table's lock.
    pub(crate) fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        let local = self.local();
        vec![
            (
                "cache store shard (write)",
                Box::new(move |park: &dyn Fn()| {
                    let parked = std::cell::Cell::new(false);
                    local.store.retain(|_, _| {
                        if !parked.replace(true) {
                            park();
                        }
                        true
                    });
                    if !parked.get() {
                        park(); // an empty store: no shard lock to hold
                    }
                }),
            ),
            local.flights.holder("cache flight table"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(expires_at: i64, signed_at: i64, blob: bool) -> Arc<Entry> {
        Arc::new(Entry {
            url: format!("u{expires_at}"),
            expires_at,
            signed_at,
            from_sign_blob: blob,
        })
    }

    fn cache(ratio: f64, max_ext: i64, max_entries: usize) -> UrlCache {
        UrlCache::new(
            CacheConfig {
                extension_ratio: ratio,
                max_extension: max_ext,
                max_entries,
            },
            Arc::new(Stats::default()),
        )
        .unwrap()
    }

    #[test]
    fn extension_is_a_share_of_the_lifetime_capped() {
        let c = CacheConfig {
            extension_ratio: 0.1,
            max_extension: 300,
            max_entries: 10,
        };
        assert_eq!(c.extension_for(600), 60);
        assert_eq!(c.extension_for(15_300), 300);
        assert_eq!(c.extension_for(0), 0);
        assert_eq!(c.extension_for(-5), 0);
    }

    #[test]
    fn serves_only_within_the_window() {
        let c = cache(0.1, 300, 100);
        c.insert("k".into(), entry(1660, 1000, true));
        // asked at 1000 for 600 s: X = 1600, E = 60 -> [1600, 1660]
        assert!(c.lookup("k", &c.want(1000, 1600)).is_some());
        // asked later for 600 s: X = 1661 > x
        assert!(c.lookup("k", &c.want(1061, 1661)).is_none());
        // asked for a shorter life: X + E < x -> the URL would outlive what's allowed
        assert!(c.lookup("k", &c.want(1000, 1100)).is_none());
    }

    #[test]
    fn sign_blob_signatures_serve_only_needs_within_twelve_hours_of_signing() {
        let twelve = SIGN_BLOB_MAX_SERVE_SECS;
        let c = cache(0.5, 86_400, 100);
        // signed at 0, valid until 50,000 by its expiry; guaranteed until 43,200
        c.insert("k".into(), entry(50_000, 0, true));
        assert!(c.lookup("k", &c.want(10_000, twelve)).is_some());
        assert!(c.lookup("k", &c.want(10_000, twelve + 1)).is_none());
        assert!(c.lookup("k", &c.want(29_000, twelve)).is_some());
        assert!(c.lookup("k", &c.want(twelve, twelve + 1)).is_none());
        // a local key has no such limit
        c.insert("l".into(), entry(50_000, 0, false));
        assert!(c.lookup("l", &c.want(twelve, 48_000)).is_some());
        // asked for more than 12 h: only a signature made this second serves
        c.insert("long".into(), entry(100_000, 1_000, true));
        assert!(c.lookup("long", &c.want(1_000, 90_000)).is_some());
        assert!(c.lookup("long", &c.want(1_001, 90_000)).is_none());
    }

    #[test]
    fn dead_entries_are_dropped_on_lookup_and_sweep() {
        let c = cache(0.1, 300, 100);
        c.insert("a".into(), entry(10, 0, false));
        c.insert("b".into(), entry(10, 0, false));
        c.insert("c".into(), entry(1000, 0, false));
        assert!(c.lookup("a", &c.want(20, 80)).is_none());
        assert_eq!(c.len(), 2);
        c.sweep(20);
        assert_eq!(c.len(), 1);
        assert_eq!(Stats::get(&c.stats.evictions), 2);
    }

    #[test]
    fn entries_stay_bounded() {
        let c = cache(0.1, 300, 1000);
        for i in 0..100_000 {
            c.insert(format!("k{i}"), entry(1000, 0, false));
        }
        assert!(c.len() <= 1000, "{}", c.len());
        assert!(Stats::get(&c.stats.evictions) >= 99_000);
    }

    #[test]
    fn a_newer_url_for_the_same_key_is_not_an_eviction() {
        let c = cache(0.1, 300, 1000);
        c.insert("k".into(), entry(660, 0, false));
        c.insert("k".into(), entry(721, 61, false));
        assert_eq!(c.len(), 1);
        assert_eq!(Stats::get(&c.stats.evictions), 0);
        assert_eq!(c.lookup("k", &c.want(61, 661)).unwrap().expires_at, 721);
    }

    #[test]
    fn stale_entries_serve_only_with_the_minimum_life_left() {
        let c = cache(0.1, 300, 100);
        // signed at 1000 for 600 s: x = 1660
        c.insert("k".into(), entry(1660, 1000, true));
        // 120 s later a 600 s request misses: X = 1720 > x
        let want = c.want(1120, 1720);
        assert!(c.lookup("k", &want).is_none());
        // the entry is kept (not dead) and has 540 s left
        assert_eq!(c.len(), 1);
        assert!(c.lookup_stale("k", &want, 540).is_some());
        assert!(c.lookup_stale("k", &want, 541).is_none());
        // at the boundary: 60 s left
        let late = c.want(1600, 2200);
        assert!(c.lookup("k", &late).is_none());
        assert!(c.lookup_stale("k", &late, 60).is_some());
        assert!(c.lookup_stale("k", &c.want(1601, 2201), 60).is_none());
        // never another key
        assert!(c.lookup_stale("other", &want, 1).is_none());
        // never a URL that outlives the request by more than E
        assert!(c.lookup_stale("k", &c.want(1120, 1200), 1).is_none());
        // a signBlob signature works 12 h at most
        c.insert("old".into(), entry(50_000, 0, true));
        let w = c.want(43_000, 50_000);
        assert!(c.lookup_stale("old", &w, 200).is_some());
        assert!(c.lookup_stale("old", &w, 201).is_none());
    }

    #[test]
    fn insert_if_longer_keeps_the_longer_url() {
        let c = cache(0.1, 300, 100);
        c.insert("k".into(), entry(1660, 1000, true));
        c.insert_if_longer("k".into(), entry(1500, 900, true));
        assert_eq!(c.local().store.get("k").unwrap().expires_at, 1660);
        c.insert_if_longer("k".into(), entry(1700, 1040, true));
        assert_eq!(c.local().store.get("k").unwrap().expires_at, 1700);
        c.insert_if_longer("n".into(), entry(1500, 900, true));
        assert!(c.local().store.get("n").is_some());
    }

    #[test]
    fn flights_are_per_cache_and_land_in_the_store() {
        use crate::flight::Policy;
        let c = Arc::new(cache(0.1, 300, 100));
        let c2 = c.clone();
        let t = c
            .flights()
            .join("k", Policy::CancelUnwatched, move || async move {
                let e = entry(600, 0, true);
                c2.insert("k".into(), e.clone());
                Ok(e)
            });
        let got = crate::runtime::block_on(t.wait(), &crate::cancel::Cancel::new(), None).unwrap();
        assert_eq!(got.expires_at, 600);
        assert!(c.lookup("k", &c.want(0, 600)).is_some());
        assert!(!c.flights().is_running("k"));
    }
}
