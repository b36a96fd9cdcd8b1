//! Counters a signer keeps, cheap enough for the hot path (relaxed atomics).
//! Never holds a secret: counts only.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// URLs served from the cache.
    pub hits: AtomicU64,
    /// URLs that needed a new signature.
    pub misses: AtomicU64,
    /// Callers that waited for another caller's in-flight signature.
    pub coalesced: AtomicU64,
    /// Signatures made with a local key (no API call).
    pub local_signatures: AtomicU64,
    /// signBlob HTTP requests sent (retries included).
    pub sign_blob_calls: AtomicU64,
    /// signBlob calls that ended in an error, by kind.
    pub sign_blob_errors_permission: AtomicU64,
    pub sign_blob_errors_quota: AtomicU64,
    pub sign_blob_errors_unavailable: AtomicU64,
    pub sign_blob_errors_other: AtomicU64,
    /// signBlob retries (each also counted in `sign_blob_calls`).
    pub sign_blob_retries: AtomicU64,
    /// Calls delayed by the client-side quota guard.
    pub throttled: AtomicU64,
    /// Entries dropped from the cache (expired or over `max_entries`).
    pub evictions: AtomicU64,
    /// Misses answered with a stale cached URL because signing failed with
    /// an availability error (src/stale.rs).
    pub stale_served: AtomicU64,
    /// Availability errors raised because no cached URL qualified.
    pub stale_unavailable: AtomicU64,
    /// Background refresh signings started (not one that found another
    /// refresh landed), failed, and skipped for lack of budget
    /// (src/refresh.rs).
    pub refreshes: AtomicU64,
    pub refresh_failures: AtomicU64,
    pub refresh_skipped: AtomicU64,
}

impl Stats {
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
