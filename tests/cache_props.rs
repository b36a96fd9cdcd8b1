//! Properties of the signed-URL cache seen through [`UrlSigner`], with a
//! counting fake `signBlob` and a [`ManualClock`]: the greedy rule signs no
//! more often than an independent brute-force optimum, every URL's expiry
//! stays in its window, and concurrent misses make one call.
//!
//! The brute force is the offline problem with no memory limit: per cache
//! key, each request `i` accepts any URL whose expiry lies in
//! `[X_i, X_i + E_i]`; the fewest URLs that cover every request is the
//! smallest set of points stabbing all those intervals. Any schedule of
//! signatures (online or not) is such a set, so it is a lower bound; when a
//! key always asks for the same lifetime, the cache must reach it exactly.

use gcs_signer::blob::{BlobSigner, BoxFuture};
use gcs_signer::cache::{CacheConfig, SIGN_BLOB_MAX_SERVE_SECS};
use gcs_signer::cancel::Cancel;
use gcs_signer::clock::{Clock, ManualClock};
use gcs_signer::signer::{Expiry, SignerOptions};
use gcs_signer::stats::Stats;
use gcs_signer::{Error, Result, UrlRequest, UrlSigner, Version};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const EPOCH: i64 = 1_700_000_000;

/// A remote signer that counts calls; each signature is unique, so two URLs
/// are equal only if one is a cached copy of the other.
#[derive(Debug, Default)]
struct CountingBlob {
    calls: AtomicU64,
    /// Fail this many calls, then succeed.
    fail_next: AtomicU32,
    delay: Duration,
    sign_blob: bool,
}

impl BlobSigner for CountingBlob {
    fn identity(&self) -> &str {
        "counting-fake"
    }

    fn email_now(&self) -> Option<String> {
        Some("fake@proj.iam.gserviceaccount.com".into())
    }

    fn email(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async { Ok("fake@proj.iam.gserviceaccount.com".into()) })
    }

    fn sign(&self, _payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let failing = self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok();
            if failing {
                return Err(Error::internal("injected signBlob failure"));
            }
            Ok(n.to_be_bytes().to_vec())
        })
    }

    fn uses_sign_blob(&self) -> bool {
        self.sign_blob
    }
}

fn signer(blob: Arc<CountingBlob>, clock: Arc<ManualClock>, cache: CacheConfig) -> UrlSigner {
    let options = SignerOptions {
        cache: Some(cache),
        clock,
        ..SignerOptions::default()
    };
    UrlSigner::with_blob_signer(blob, options, Arc::new(Stats::default())).unwrap()
}

fn config(extension_ratio: f64, max_extension: i64) -> CacheConfig {
    CacheConfig {
        extension_ratio,
        max_extension,
        max_entries: 10_000,
    }
}

fn v2(object: &str) -> UrlRequest {
    UrlRequest::new(Version::V2, "bucket", object)
}

fn v2_expires(url: &str) -> i64 {
    url.rsplit("&Expires=").next().unwrap().parse().unwrap()
}

fn v4_param<'a>(url: &'a str, name: &str) -> &'a str {
    let query = url.split_once('?').unwrap().1;
    query
        .split('&')
        .find_map(|p| p.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
        .unwrap()
}

/// splitmix64: a seeded stream with no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The fewest points stabbing every interval, by trying every subset of the
/// right endpoints (an optimal set can always be moved there: shifting a
/// point right until it meets the first right endpoint loses no interval).
fn brute_force_minimum(intervals: &[(i64, i64)]) -> u32 {
    let mut points: Vec<i64> = intervals.iter().map(|&(_, hi)| hi).collect();
    points.sort_unstable();
    points.dedup();
    assert!(points.len() <= 16, "brute force is exponential");
    let mut best = points.len() as u32;
    for mask in 1u32..(1 << points.len()) {
        if mask.count_ones() >= best {
            continue;
        }
        let covers = intervals.iter().all(|&(lo, hi)| {
            points
                .iter()
                .enumerate()
                .any(|(i, &p)| mask & (1 << i) != 0 && lo <= p && p <= hi)
        });
        if covers {
            best = mask.count_ones();
        }
    }
    best
}

/// Runs one random stream; returns (signatures made, brute-force minimum,
/// whether every key kept one lifetime, requests).
fn run_stream(rng: &mut Rng) -> (u64, u32, bool, u64) {
    let ratio = [0.0, 0.05, 0.1, 0.25, 0.5, 1.0][rng.below(6) as usize];
    let max_extension = [0, 30, 60, 300][rng.below(4) as usize];
    let cfg = config(ratio, max_extension);
    let keys = 1 + rng.below(3) as usize;
    // Half the streams give each key its own fixed lifetime (how GitLab's
    // call sites ask); the others mix lifetimes within a key.
    let fixed = rng.below(2) == 0;
    let lifetimes: Vec<i64> = (0..keys).map(|_| 5 + rng.below(600) as i64).collect();
    let blob = Arc::new(CountingBlob::default());
    let clock = Arc::new(ManualClock::new(EPOCH * 1_000_000));
    let s = signer(blob.clone(), clock.clone(), cfg);
    let cancel = Cancel::new();
    let mut intervals: HashMap<usize, Vec<(i64, i64)>> = HashMap::new();
    let mut used_urls: HashMap<String, usize> = HashMap::new();
    let n = 6 + rng.below(9);
    for _ in 0..n {
        // Sub-second steps exercise the rounding of X up to whole seconds.
        clock.advance_micros(rng.below(3_000_000) as i64);
        let key = rng.below(keys as u64) as usize;
        let lifetime = if fixed {
            lifetimes[key]
        } else {
            5 + rng.below(600) as i64
        };
        let now_micros = clock.now_micros();
        let now = now_micros.div_euclid(1_000_000);
        let at_least = (now_micros + lifetime * 1_000_000 + 999_999).div_euclid(1_000_000);
        let e = cfg.extension_for(at_least - now);
        let url = s
            .signed_url(
                v2(&format!("o{key}")),
                Expiry::In(lifetime as f64),
                None,
                &cancel,
            )
            .unwrap();
        let x = v2_expires(&url);
        assert!(
            at_least <= x && x <= at_least + e,
            "expiry {x} outside [{at_least}, {}]",
            at_least + e
        );
        // A URL is only ever reused for its own key.
        assert_eq!(*used_urls.entry(url).or_insert(key), key);
        intervals
            .entry(key)
            .or_default()
            .push((at_least, at_least + e));
    }
    let bound = intervals.values().map(|iv| brute_force_minimum(iv)).sum();
    (blob.calls.load(Ordering::SeqCst), bound, fixed, n)
}

#[test]
fn greedy_signs_exactly_the_brute_force_minimum_for_fixed_lifetimes() {
    let mut rng = Rng(0x5eed_cafe);
    let (mut fixed_streams, mut saved, mut requests, mut signed) = (0, 0, 0, 0);
    for stream in 0..400 {
        let (calls, bound, fixed, n) = run_stream(&mut rng);
        // Never fewer than the optimum: fewer would mean a URL served outside
        // some request's window.
        assert!(
            calls >= u64::from(bound),
            "stream {stream}: {calls} < {bound}"
        );
        if fixed {
            fixed_streams += 1;
            requests += n;
            signed += calls;
            assert_eq!(calls, u64::from(bound), "stream {stream} is not optimal");
        }
        saved += calls - u64::from(bound);
    }
    assert!(fixed_streams > 100);
    // The streams must reuse URLs often, or "optimal" would be trivial.
    assert!(
        signed * 10 < requests * 7,
        "{signed} signatures for {requests} requests"
    );
    // Mixed lifetimes on one key can cost more than the optimum (one entry
    // per key); report it so a change in that behaviour is visible.
    eprintln!("mixed-lifetime streams: {saved} signatures above the offline optimum");
}

#[test]
fn sign_blob_urls_are_not_served_twelve_hours_after_signing_key_urls_are() {
    for (sign_blob, served_late) in [(true, false), (false, true)] {
        let blob = Arc::new(CountingBlob {
            sign_blob,
            ..CountingBlob::default()
        });
        let clock = Arc::new(ManualClock::new(EPOCH * 1_000_000));
        // A one-day URL with a day of allowed extension, so only the 12 h
        // rule can refuse it.
        let s = signer(blob.clone(), clock.clone(), config(1.0, 86_400));
        let cancel = Cancel::new();
        let day = 86_400;
        let first = s
            .signed_url(v2("o"), Expiry::At((EPOCH + day) as f64), None, &cancel)
            .unwrap();
        assert_eq!(v2_expires(&first), EPOCH + 2 * day);
        clock.advance_micros((SIGN_BLOB_MAX_SERVE_SECS - 1) * 1_000_000);
        // Asked until 1000 s before the first URL's expiry: E is a day, so
        // the window contains that URL.
        let until = Expiry::At((EPOCH + 2 * day - 1000) as f64);
        let just_before = s.signed_url(v2("o"), until, None, &cancel).unwrap();
        assert_eq!(just_before, first);
        clock.advance_micros(1_000_000);
        let late = s.signed_url(v2("o"), until, None, &cancel).unwrap();
        assert_eq!(late == first, served_late, "sign_blob={sign_blob}");
        assert_eq!(
            blob.calls.load(Ordering::SeqCst),
            2 - u64::from(served_late)
        );
    }
}

#[test]
fn v4_urls_never_exceed_seven_days() {
    let blob = Arc::new(CountingBlob::default());
    let clock = Arc::new(ManualClock::new(EPOCH * 1_000_000));
    let s = signer(blob.clone(), clock.clone(), config(1.0, 86_400));
    let cancel = Cancel::new();
    let req = || UrlRequest::new(Version::V4, "bucket", "o");
    let week = 604_800.0;
    let url = s
        .signed_url(req(), Expiry::In(week), None, &cancel)
        .unwrap();
    assert_eq!(v4_param(&url, "X-Goog-Expires"), "604800");
    // Six days asked: E would be six days, but the URL is capped at seven.
    let six = s
        .signed_url(req(), Expiry::In(6.0 * 86_400.0), None, &cancel)
        .unwrap();
    assert_eq!(six, url, "a 7-day URL serves a 6-day request (E = 1 day)");
    clock.advance_micros(1_000_000);
    let later = s
        .signed_url(req(), Expiry::In(week), None, &cancel)
        .unwrap();
    assert_ne!(later, url, "one second later the old URL is too short");
    assert_eq!(v4_param(&later, "X-Goog-Expires"), "604800");
    assert!(s
        .signed_url(req(), Expiry::In(week + 2.0), None, &cancel)
        .is_err());
}

#[test]
fn concurrent_misses_make_one_call_and_failures_are_not_cached() {
    let blob = Arc::new(CountingBlob {
        delay: Duration::from_millis(300),
        sign_blob: true,
        ..CountingBlob::default()
    });
    let clock = Arc::new(ManualClock::new(EPOCH * 1_000_000));
    let s = signer(blob.clone(), clock, config(0.1, 300));
    let run = |s: &UrlSigner| {
        let barrier = Arc::new(Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (s, barrier) = (s.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.signed_url(v2("hot"), Expiry::In(600.0), None, &Cancel::new())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    };
    blob.fail_next.store(1, Ordering::SeqCst);
    let failed = run(&s);
    assert!(
        failed.iter().all(|r| r.is_err()),
        "waiters share the failure"
    );
    assert_eq!(blob.calls.load(Ordering::SeqCst), 1);
    let ok = run(&s);
    assert_eq!(
        blob.calls.load(Ordering::SeqCst),
        2,
        "failure was not cached"
    );
    let first = ok[0].as_ref().unwrap();
    assert!(ok.iter().all(|r| r.as_ref().unwrap() == first));
    let stats: HashMap<_, _> = s.stats().into_iter().collect();
    assert!(stats["coalesced"] >= 15, "{stats:?}");
}
