//! [`UrlSigner`]: one signing identity, its cache and its counters. The
//! only type the Ruby binding talks to.
//!
//! A call goes in two steps so that the binding can answer cache hits with
//! the GVL held (a hit costs microseconds) and release the GVL only for a
//! miss: [`UrlSigner::plan`] validates and works out the expiry window with
//! no I/O, [`UrlSigner::try_cached`] looks the plan up, and
//! [`UrlSigner::sign_planned`] signs (locally, or through `signBlob`, one
//! call for all concurrent misses of the same key).

use crate::blob::BlobSigner;
use crate::cache::{self, CacheConfig, Entry, Flight, UrlCache, Want};
use crate::cancel::Cancel;
use crate::clock::{Clock, SystemClock};
use crate::credentials::{self, CredentialOptions};
use crate::error::{Error, Result};
use crate::request::{UrlRequest, Version, V4_MAX_EXPIRES};
use crate::runtime;
use crate::stats::Stats;
use crate::{v2, v4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the URL must stay valid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expiry {
    /// For this many seconds from now.
    In(f64),
    /// Until this Unix time (seconds).
    At(f64),
}

#[derive(Debug, Clone)]
pub struct SignerOptions {
    pub credentials: CredentialOptions,
    /// `None` disables the URL cache.
    pub cache: Option<CacheConfig>,
    /// Deadline for one call, network waits and retries included.
    pub timeout: Duration,
    pub clock: Arc<dyn Clock>,
}

impl Default for SignerOptions {
    fn default() -> Self {
        SignerOptions {
            credentials: CredentialOptions::default(),
            cache: Some(CacheConfig::default()),
            timeout: DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Long enough for a cold GKE metadata server (first token over 2 s, field
/// notes s.3) plus a few signBlob retries; short enough that a Puma request
/// does not hang on an outage.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How much later than the credential layer's own deadline the call's
/// outer deadline falls (see `UrlSigner::deadline`).
const OUTER_DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// A URL to sign, checked, with its expiry window worked out.
#[derive(Debug, Clone)]
pub struct Plan {
    req: UrlRequest,
    key: String,
    want: Want,
    /// The signing date (V4 `X-Goog-Date`, Unix seconds).
    date: i64,
    /// The expiry to sign with on a miss.
    sign_until: i64,
    /// An explicit timestamp bypasses the cache.
    cacheable: bool,
}

impl Plan {
    pub fn request(&self) -> &UrlRequest {
        &self.req
    }
}

#[derive(Debug)]
struct Inner {
    blob: Arc<dyn BlobSigner>,
    cache: Option<UrlCache>,
    stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UrlSigner {
    inner: Arc<Inner>,
}

impl UrlSigner {
    /// Builds a signer. No network I/O: credentials are discovered from
    /// files and the environment, the metadata server is asked lazily.
    pub fn new(options: SignerOptions) -> Result<Self> {
        let stats = Arc::new(Stats::default());
        let blob = credentials::discover(&options.credentials, stats.clone())?;
        Self::with_blob_signer(blob, options, stats)
    }

    /// A signer over any [`BlobSigner`] (tests, embedders).
    pub fn with_blob_signer(
        blob: Arc<dyn BlobSigner>,
        options: SignerOptions,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        if options.timeout.is_zero() || options.timeout > Duration::from_secs(3600) {
            return Err(Error::invalid(
                "timeout must be more than 0 and at most 3600 seconds",
            ));
        }
        let cache = match options.cache {
            Some(config) => Some(UrlCache::new(config, stats.clone())?),
            None => None,
        };
        Ok(UrlSigner {
            inner: Arc::new(Inner {
                blob,
                cache,
                stats,
                clock: options.clock,
                timeout: options.timeout,
            }),
        })
    }

    /// The credential this signer signs with (never a secret).
    pub fn identity(&self) -> &str {
        self.inner.blob.identity()
    }

    pub fn cache_config(&self) -> Option<CacheConfig> {
        self.inner.cache.as_ref().map(|c| *c.config())
    }

    /// The signing service account's email; may ask the metadata server.
    pub fn email(&self, cancel: &Cancel) -> Result<String> {
        if let Some(email) = self.inner.blob.email_now() {
            return Ok(email);
        }
        let inner = self.inner.clone();
        runtime::block_on(
            async move { inner.blob.email().await },
            cancel,
            Some(self.deadline()),
        )
    }

    /// Signs raw bytes (RSA-SHA256), locally or through `signBlob`. Never cached.
    pub fn sign_blob(&self, payload: Vec<u8>, cancel: &Cancel) -> Result<Vec<u8>> {
        if let Some(sig) = self.inner.blob.sign_local(&payload) {
            Stats::incr(&self.inner.stats.local_signatures);
            return sig;
        }
        let inner = self.inner.clone();
        runtime::block_on(
            async move { inner.blob.sign(payload).await },
            cancel,
            Some(self.deadline()),
        )
    }

    /// Validates a request and works out its expiry window. No I/O.
    ///
    /// `timestamp` pins the signing time (conformance tests, reproducible
    /// URLs) and bypasses the cache.
    pub fn plan(&self, req: UrlRequest, expiry: Expiry, timestamp: Option<i64>) -> Result<Plan> {
        req.validate()?;
        let now_micros = match timestamp {
            Some(t) => t
                .checked_mul(1_000_000)
                .ok_or_else(|| Error::invalid("timestamp is out of range"))?,
            None => self.inner.clock.now_micros(),
        };
        let now = now_micros.div_euclid(1_000_000);
        let now_f = now_micros as f64 / 1e6;
        let until = match expiry {
            Expiry::In(secs) => {
                if !secs.is_finite() || secs <= 0.0 {
                    return Err(Error::invalid(format!(
                        "expires_in must be a positive number of seconds, got {secs}"
                    )));
                }
                now_f + secs
            }
            Expiry::At(at) => {
                if !at.is_finite() || at <= now_f {
                    return Err(Error::invalid("expires_at must be a time in the future"));
                }
                at
            }
        };
        // Round up: the URL must be valid at least until the time asked for.
        let mut at_least = until.ceil() as i64;
        // Saturating: an absurd expiry (1e300 s) against an extreme
        // timestamp must be refused below, not overflow (tests/url_properties.rs).
        let lifetime = at_least.saturating_sub(now);
        if req.version == Version::V4 {
            if lifetime > V4_MAX_EXPIRES + 1 {
                return Err(Error::invalid(format!(
                    "a V4 URL can live at most {V4_MAX_EXPIRES} seconds (7 days); {lifetime} seconds were asked"
                )));
            }
            // Only a fraction of a second past the limit: sign to the limit.
            at_least = at_least.min(now + V4_MAX_EXPIRES);
        } else if lifetime > 10 * 365 * 86_400 {
            return Err(Error::invalid("expiry is more than 10 years away"));
        }
        let cache = self.inner.cache.as_ref().filter(|_| timestamp.is_none());
        let want = match cache {
            Some(c) => c.want(now, at_least),
            None => Want {
                now,
                at_least,
                at_most: at_least,
            },
        };
        let mut sign_until = want.at_most;
        if req.version == Version::V4 {
            sign_until = sign_until.min(now + V4_MAX_EXPIRES);
        }
        let key = if cache.is_some() {
            let id = self.inner.blob.identity();
            let mut key = String::with_capacity(id.len() + 160);
            key.push_str(id);
            key.push('\u{0}');
            key.push_str(&req.cache_key());
            key
        } else {
            String::new()
        };
        Ok(Plan {
            req,
            key,
            want,
            date: now,
            sign_until,
            cacheable: cache.is_some(),
        })
    }

    /// The cached URL for a plan, if one serves it. Never blocks on I/O.
    pub fn try_cached(&self, plan: &Plan) -> Option<String> {
        let cache = self.inner.cache.as_ref().filter(|_| plan.cacheable)?;
        let entry = cache.lookup(&plan.key, &plan.want)?;
        Stats::incr(&self.inner.stats.hits);
        Some(entry.url.clone())
    }

    /// Signs a plan that [`UrlSigner::try_cached`] did not answer. Blocks
    /// (cancellably, within the timeout) while `signBlob` works.
    pub fn sign_planned(&self, plan: Plan, cancel: &Cancel) -> Result<String> {
        let inner = &self.inner;
        Stats::incr(&inner.stats.misses);
        if inner.blob.email_now().is_some() {
            if let Some(entry) = inner.sign_local(&plan)? {
                inner.store(&plan, entry.clone());
                return Ok(entry.url.clone());
            }
        }
        let inner = self.inner.clone();
        let deadline = self.deadline();
        runtime::block_on(
            async move {
                match inner.cache.as_ref().filter(|_| plan.cacheable) {
                    None => Ok(inner.sign_remote(&plan).await?.url.clone()),
                    Some(cache) => inner.clone().coalesced(cache, plan).await,
                }
            },
            cancel,
            Some(deadline),
        )
    }

    /// [`UrlSigner::plan`], then the cache, then signing.
    pub fn signed_url(
        &self,
        req: UrlRequest,
        expiry: Expiry,
        timestamp: Option<i64>,
        cancel: &Cancel,
    ) -> Result<String> {
        let plan = self.plan(req, expiry, timestamp)?;
        match self.try_cached(&plan) {
            Some(url) => Ok(url),
            None => self.sign_planned(plan, cancel),
        }
    }

    /// The string a plan's URL signs (for debugging signature mismatches and
    /// the conformance tests); may ask the metadata server for the email.
    pub fn string_to_sign(&self, plan: &Plan, cancel: &Cancel) -> Result<String> {
        let email = self.email(cancel)?;
        Ok(Prepared::new(plan, &email)?.string_to_sign().to_owned())
    }

    /// Counters, as (name, value) pairs; never a secret.
    pub fn stats(&self) -> Vec<(&'static str, u64)> {
        let s = &self.inner.stats;
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("hits", g(&s.hits)),
            ("misses", g(&s.misses)),
            ("coalesced", g(&s.coalesced)),
            ("local_signatures", g(&s.local_signatures)),
            ("sign_blob_calls", g(&s.sign_blob_calls)),
            ("sign_blob_retries", g(&s.sign_blob_retries)),
            (
                "sign_blob_errors_permission",
                g(&s.sign_blob_errors_permission),
            ),
            ("sign_blob_errors_quota", g(&s.sign_blob_errors_quota)),
            (
                "sign_blob_errors_unavailable",
                g(&s.sign_blob_errors_unavailable),
            ),
            ("sign_blob_errors_other", g(&s.sign_blob_errors_other)),
            ("throttled", g(&s.throttled)),
            ("token_fetches", self.inner.blob.token_fetches()),
            ("evictions", g(&s.evictions)),
            (
                "entries",
                self.inner.cache.as_ref().map_or(0, |c| c.len() as u64),
            ),
        ]
    }

    /// The credential layer enforces the same `timeout:` itself, with
    /// messages that name the metadata host or the signBlob account; this
    /// outer deadline only backs it up, so it ends a little later and the
    /// specific message wins the race (spec/hardening/endpoints_spec.rb).
    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.timeout + OUTER_DEADLINE_GRACE
    }
}

impl Inner {
    /// Signs with a local key, if this identity has one.
    fn sign_local(&self, plan: &Plan) -> Result<Option<Arc<Entry>>> {
        let Some(email) = self.blob.email_now() else {
            return Ok(None);
        };
        let prepared = Prepared::new(plan, &email)?;
        let Some(sig) = self.blob.sign_local(prepared.string_to_sign().as_bytes()) else {
            return Ok(None);
        };
        Stats::incr(&self.stats.local_signatures);
        Ok(Some(self.entry(plan, prepared.finish(&sig?), false)))
    }

    async fn sign_remote(&self, plan: &Plan) -> Result<Arc<Entry>> {
        let email = match self.blob.email_now() {
            Some(e) => e,
            None => self.blob.email().await?,
        };
        let prepared = Prepared::new(plan, &email)?;
        let payload = prepared.string_to_sign().as_bytes().to_vec();
        let sig = self.blob.sign(payload).await?;
        Ok(self.entry(plan, prepared.finish(&sig), self.blob.uses_sign_blob()))
    }

    fn entry(&self, plan: &Plan, url: String, from_sign_blob: bool) -> Arc<Entry> {
        Arc::new(Entry {
            url,
            expires_at: plan.sign_until,
            signed_at: plan.date,
            from_sign_blob,
        })
    }

    fn store(&self, plan: &Plan, entry: Arc<Entry>) {
        if let Some(cache) = self.cache.as_ref().filter(|_| plan.cacheable) {
            cache.insert(plan.key.clone(), entry);
            // Expired entries go in one pass now and then, not on every call.
            if Stats::get(&self.stats.misses) % 4096 == 0 {
                cache.sweep(plan.date);
            }
        }
    }

    /// One `signBlob` call for every concurrent miss of the same key.
    async fn coalesced(self: Arc<Self>, cache: &UrlCache, plan: Plan) -> Result<String> {
        loop {
            if let Some(entry) = cache.lookup(&plan.key, &plan.want) {
                return Ok(entry.url.clone());
            }
            let rx = match cache.flight(&plan.key) {
                Flight::Leader(leader) => {
                    let rx = leader.subscribe();
                    // Signing runs as its own task, so a leader that is
                    // interrupted (Timeout, Thread#kill) does not strand
                    // the callers waiting on it.
                    let inner = self.clone();
                    let plan = plan.clone();
                    runtime::spawn(async move {
                        let outcome = inner.sign_remote(&plan).await;
                        if let Some(cache) = inner.cache.as_ref() {
                            cache.land(plan.key.clone(), leader, outcome);
                            if Stats::get(&inner.stats.misses) % 4096 == 0 {
                                cache.sweep(plan.date);
                            }
                        }
                    });
                    rx
                }
                Flight::Follower(rx) => {
                    Stats::incr(&self.stats.coalesced);
                    rx
                }
            };
            let entry = cache::wait(rx).await?;
            if entry.serves(&plan.want) {
                return Ok(entry.url.clone());
            }
            // Another caller's URL does not fit this request's window
            // (a different lifetime): sign our own.
        }
    }
}

/// A V2 or V4 URL ready for its signature.
enum Prepared {
    V2(v2::V2Prepared),
    V4(v4::V4Prepared),
}

impl Prepared {
    fn new(plan: &Plan, email: &str) -> Result<Self> {
        Ok(match plan.req.version {
            Version::V2 => Prepared::V2(v2::prepare(&plan.req, email, plan.sign_until)?),
            Version::V4 => Prepared::V4(v4::prepare(
                &plan.req,
                email,
                plan.date,
                plan.sign_until - plan.date,
            )?),
        })
    }

    fn string_to_sign(&self) -> &str {
        match self {
            Prepared::V2(p) => &p.string_to_sign,
            Prepared::V4(p) => &p.string_to_sign,
        }
    }

    fn finish(&self, sig: &[u8]) -> String {
        match self {
            Prepared::V2(p) => p.finish(sig),
            Prepared::V4(p) => p.finish(sig),
        }
    }
}
