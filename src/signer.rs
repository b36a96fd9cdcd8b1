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
use crate::cache::{CacheConfig, Entry, UrlCache, Want};
use crate::cancel::Cancel;
use crate::clock::{Clock, SystemClock};
use crate::config;
use crate::credentials::{self, CredentialOptions};
use crate::error::{Error, Result};
use crate::flight::{Policy, Ticket};
use crate::refresh::{Budget, RefreshConfig};
use crate::request::{UrlRequest, Version, V4_MAX_EXPIRES};
use crate::runtime;
use crate::stale::{Outage, StaleConfig};
use crate::stats::Stats;
use crate::{universe, v2, v4};
use parking_lot::Mutex;
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
    /// Stale-if-error (src/stale.rs); `None` turns it off. Needs the cache.
    pub stale: Option<StaleConfig>,
    /// Refresh-ahead (src/refresh.rs); off unless given. Needs the cache.
    pub refresh: Option<RefreshConfig>,
}

impl Default for SignerOptions {
    fn default() -> Self {
        SignerOptions {
            credentials: CredentialOptions::default(),
            cache: Some(CacheConfig::default()),
            timeout: DEFAULT_TIMEOUT,
            clock: Arc::new(SystemClock),
            stale: Some(StaleConfig::default()),
            refresh: None,
        }
    }
}

/// Long enough for a cold GKE metadata server (first token over 2 s,
/// docs/facts.md#metadata-server) plus a few signBlob retries; short enough that a Puma request
/// does not hang on an outage.
pub const DEFAULT_TIMEOUT: Duration = crate::config::TIMEOUT;

/// The signing itself gives up at the call's deadline with a specific error
/// (quota, unavailable, a metadata timeout); the caller's wait ends this
/// much later, only as a backstop, so that error is the one Ruby sees.
const DEADLINE_GRACE: Duration = Duration::from_millis(200);

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
    /// When the plan was made (Unix seconds, the signer's clock).
    pub fn now(&self) -> i64 {
        self.date
    }
}

/// What [`UrlSigner::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Arc<Entry>),
    /// A validated request with its window, to sign (or to look up in the
    /// shared cache). Boxed: a miss costs a signature, a box is nothing.
    Miss(Box<Plan>),
}

/// What [`UrlSigner::adopt`] made of a URL from the shared cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// It serves the request and is now in the local cache.
    Taken,
    /// A valid entry whose expiry does not fit this request's window (or
    /// whose `signBlob` signature is over 12 hours old).
    Stale,
    /// Not a URL this signer would have made for the request: another
    /// account, request, format version or a signing time in the future.
    Refused,
}

/// Versions the shared key: a release that changes what a URL looks like
/// for the same request changes this, so old entries are never read.
const SHARED_KEY_FORMAT: &str = "gitlab-gcs-signer shared v2\0";

/// How far in the future another process's clock may put a signing time.
const SHARED_MAX_CLOCK_SKEW: i64 = 5;

/// Whether `url` is the URL `plan`'s request gets when signed by `email` at
/// `signed_at` until `expires_at`, whatever its signature.
fn url_matches(plan: &Plan, email: &str, url: &str, expires_at: i64, signed_at: i64) -> bool {
    let mut other = plan.clone();
    other.date = signed_at;
    other.sign_until = expires_at;
    let Ok(prepared) = Prepared::new(&other, email) else {
        return false;
    };
    // Two signatures that share no character, as hex and as (escaped)
    // base64, mark where the signature sits in the URL.
    let a = prepared.finish(&[0x00; 3]);
    let b = prepared.finish(&[0xff; 3]);
    let prefix = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let suffix = a
        .bytes()
        .rev()
        .zip(b.bytes().rev())
        .take_while(|(x, y)| x == y)
        .count();
    if prefix + suffix > a.len().min(b.len()) || url.len() <= prefix + suffix {
        return false;
    }
    let signature = &url.as_bytes()[prefix..url.len() - suffix];
    url.as_bytes().starts_with(&a.as_bytes()[..prefix])
        && url.as_bytes().ends_with(&a.as_bytes()[a.len() - suffix..])
        && signature
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'%')
}

/// What a miss was answered with.
#[derive(Debug, Clone)]
pub struct Answer {
    pub entry: Arc<Entry>,
    /// Signing failed with this availability error and `entry` is the stale
    /// URL cached for the same request (src/stale.rs).
    pub stale: Option<Error>,
}

/// Refreshed entries kept for the shared cache level to publish, at most.
const REFRESHED_CAPACITY: usize = 1024;

/// Entries background refreshes signed, with their plans.
type Refreshed = Vec<(Plan, Arc<Entry>)>;

#[derive(Debug)]
struct Inner {
    blob: Arc<dyn BlobSigner>,
    cache: Option<UrlCache>,
    stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    stale: Option<StaleConfig>,
    outage: Outage,
    refresh: Option<(RefreshConfig, Budget)>,
    /// Background refreshes that landed, for the shared level (only kept
    /// once [`UrlSigner::keep_refreshed`] asked for them).
    refreshed: Mutex<Option<Refreshed>>,
    refreshed_pending: std::sync::atomic::AtomicBool,
    universe: String,
    /// `storage.<universe>` outside Google's public cloud: the host of a
    /// request that names none (`None`: the request's own default).
    storage_host: Option<String>,
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
        let (blob, universe) = credentials::discover_universe(&options.credentials, stats.clone())?;
        let mut options = options;
        options.credentials.universe_domain = Some(universe);
        Self::with_blob_signer(blob, options, stats)
    }

    /// A signer over any [`BlobSigner`] (tests, embedders), in the universe
    /// `options.credentials.universe_domain` (default `googleapis.com`).
    pub fn with_blob_signer(
        blob: Arc<dyn BlobSigner>,
        options: SignerOptions,
        stats: Arc<Stats>,
    ) -> Result<Self> {
        crate::config::timeout(options.timeout.as_secs_f64())?;
        let cache = match options.cache {
            Some(config) => Some(UrlCache::new(config, stats.clone())?),
            None => None,
        };
        if let Some(stale) = &options.stale {
            stale.validate()?;
        }
        if let Some(refresh) = &options.refresh {
            refresh.validate()?;
        }
        let refresh = options.refresh.map(|config| {
            let budget = Budget::new(&config, options.credentials.quota.max_per_minute);
            (config, budget)
        });
        let universe = match options.credentials.universe_domain.as_deref() {
            Some(u) => universe::normalize(u, "the `universe_domain:` option")?,
            None => universe::DEFAULT.to_string(),
        };
        let storage_host =
            (universe != universe::DEFAULT).then(|| universe::storage_host(&universe));
        Ok(UrlSigner {
            inner: Arc::new(Inner {
                blob,
                cache,
                stats,
                clock: options.clock,
                timeout: options.timeout,
                stale: options.stale,
                outage: Outage::default(),
                refresh,
                refreshed: Mutex::new(None),
                refreshed_pending: Default::default(),
                universe,
                storage_host,
            }),
        })
    }

    /// The credential this signer signs with (never a secret).
    pub fn identity(&self) -> &str {
        self.inner.blob.identity()
    }

    /// The universe domain this signer signs in (`googleapis.com` unless set).
    pub fn universe_domain(&self) -> &str {
        &self.inner.universe
    }

    pub fn cache_config(&self) -> Option<CacheConfig> {
        self.inner.cache.as_ref().map(|c| *c.config())
    }

    pub fn stale_config(&self) -> Option<StaleConfig> {
        self.inner.stale.filter(|_| self.inner.cache.is_some())
    }

    pub fn refresh_config(&self) -> Option<RefreshConfig> {
        self.inner
            .refresh
            .as_ref()
            .filter(|_| self.inner.cache.is_some())
            .map(|r| r.0)
    }

    /// Keeps the entries background refreshes sign, for
    /// [`UrlSigner::take_refreshed`] (the shared cache level publishes them).
    pub fn keep_refreshed(&self) {
        self.inner.refreshed.lock().get_or_insert_with(Vec::new);
    }

    /// The entries background refreshes signed since the last call.
    pub fn take_refreshed(&self) -> Refreshed {
        if !self.inner.refreshed_pending.swap(false, Ordering::Acquire) {
            return Vec::new();
        }
        // try_lock here and when pushing: after a fork the lock may be held
        // by a thread that does not exist in the child, and an entry not
        // published costs nothing but a shared hit elsewhere.
        match self.inner.refreshed.try_lock() {
            Some(mut kept) => kept.as_mut().map(std::mem::take).unwrap_or_default(),
            None => {
                self.inner.refreshed_pending.store(true, Ordering::Release);
                Vec::new()
            }
        }
    }

    /// The signing service account's email; may ask the metadata server.
    pub fn email(&self, cancel: &Cancel) -> Result<String> {
        if let Some(email) = self.inner.blob.email_now() {
            return Ok(email);
        }
        let inner = self.inner.clone();
        let deadline = self.deadline();
        runtime::block_on(
            async move { inner.blob.email_until(deadline).await },
            cancel,
            Some(deadline + DEADLINE_GRACE),
        )
    }

    /// Signs raw bytes (RSA-SHA256), locally or through `signBlob`. Never cached.
    pub fn sign_blob(&self, payload: Vec<u8>, cancel: &Cancel) -> Result<Vec<u8>> {
        if let Some(sig) = self.inner.blob.sign_local(&payload) {
            Stats::incr(&self.inner.stats.local_signatures);
            return sig;
        }
        let inner = self.inner.clone();
        let deadline = self.deadline();
        runtime::block_on(
            async move { inner.blob.sign_until(payload, deadline).await },
            cancel,
            Some(deadline + DEADLINE_GRACE),
        )
    }

    /// Validates a request and works out its expiry window. No I/O.
    ///
    /// `timestamp` pins the signing time (conformance tests, reproducible
    /// URLs) and bypasses the cache.
    pub fn plan(&self, req: UrlRequest, expiry: Expiry, timestamp: Option<i64>) -> Result<Plan> {
        let plan = self.plan_unchecked(req, expiry, timestamp)?;
        plan.req.validate()?;
        Ok(plan)
    }

    /// [`UrlSigner::plan`] and [`UrlSigner::try_cached`] in one: a hit skips
    /// the request's validation, which a cached URL has passed already (an
    /// entry is stored only after its request was prepared, and prepared
    /// means validated; the key holds every field of the request).
    pub fn lookup(
        &self,
        req: UrlRequest,
        expiry: Expiry,
        timestamp: Option<i64>,
    ) -> Result<Lookup> {
        let plan = self.plan_unchecked(req, expiry, timestamp)?;
        if let Some(entry) = self.try_cached(&plan) {
            return Ok(Lookup::Hit(entry));
        }
        plan.req.validate()?;
        Ok(Lookup::Miss(Box::new(plan)))
    }

    /// The plan for `req` in this signer's universe (its storage host when
    /// the request names none), not yet validated.
    fn plan_unchecked(
        &self,
        mut req: UrlRequest,
        expiry: Expiry,
        timestamp: Option<i64>,
    ) -> Result<Plan> {
        if req.host.is_none() {
            req.host.clone_from(&self.inner.storage_host);
        }
        let now_micros = self.now_micros(timestamp)?;
        let now = now_micros.div_euclid(1_000_000);
        let until = requested_until(expiry, now_micros as f64 / 1e6)?;
        let at_least = lifetime_limited(req.version, now, until)?;
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
            self.cache_key(&req)
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

    /// The signing time in microseconds: the caller's `timestamp:` or the clock.
    fn now_micros(&self, timestamp: Option<i64>) -> Result<i64> {
        match timestamp {
            Some(t) => t
                .checked_mul(1_000_000)
                .ok_or_else(|| Error::invalid("timestamp is out of range")),
            None => Ok(self.inner.clock.now_micros()),
        }
    }

    /// The cache key: the signing identity, then every field of the request.
    fn cache_key(&self, req: &UrlRequest) -> String {
        let id = self.inner.blob.identity();
        let mut key = String::with_capacity(id.len() + 1 + req.cache_key_capacity());
        key.push_str(id);
        key.push('\u{0}');
        req.write_cache_key(&mut key);
        key
    }

    /// The cached URL for a plan, if one serves it. Never blocks on I/O.
    pub fn try_cached(&self, plan: &Plan) -> Option<Arc<Entry>> {
        let cache = self.inner.cache.as_ref().filter(|_| plan.cacheable)?;
        let entry = cache.lookup(&plan.key, &plan.want)?;
        Stats::incr(&self.inner.stats.hits);
        if self.inner.refresh.is_some() {
            self.inner.clone().refresh_ahead(cache, plan, &entry);
        }
        Some(entry)
    }

    /// Signs a plan that [`UrlSigner::try_cached`] did not answer. Blocks
    /// (cancellably, within the timeout) while `signBlob` works.
    pub fn sign_planned(&self, plan: Plan, cancel: &Cancel) -> Result<String> {
        Ok(self.sign_planned_entry(plan, cancel)?.url.clone())
    }

    /// [`UrlSigner::sign_planned`], returning the cache entry (expiry and
    /// signing time too) for the shared cache level to publish.
    pub fn sign_planned_entry(&self, plan: Plan, cancel: &Cancel) -> Result<Arc<Entry>> {
        Ok(self.answer_planned(plan, cancel)?.entry)
    }

    /// [`UrlSigner::sign_planned_entry`], saying whether the answer is a
    /// stale URL served because signing failed (stale-if-error).
    pub fn answer_planned(&self, plan: Plan, cancel: &Cancel) -> Result<Answer> {
        let inner = &self.inner;
        Stats::incr(&inner.stats.misses);
        if let Some(entry) = inner.sign_local(&plan)? {
            inner.store(&plan, entry.clone());
            return Ok(Answer { entry, stale: None });
        }
        let stale = inner
            .stale
            .filter(|_| plan.cacheable && inner.cache.is_some());
        if let Some(config) = &stale {
            // A known outage: answer stale at once, one probe per interval.
            if inner.outage.holding(inner.clock.now_micros(), config) {
                if let Some(answer) = inner.stale_answer(&plan, config, None) {
                    return Ok(answer);
                }
            }
        }
        let signer = self.inner.clone();
        let deadline = self.deadline();
        let plan_for_stale = stale.map(|_| plan.clone());
        let result = runtime::block_on(
            async move {
                match signer.cache.as_ref().filter(|_| plan.cacheable) {
                    None => signer.sign_remote(&plan, deadline).await,
                    Some(cache) => signer.clone().coalesced(cache, plan, deadline).await,
                }
            },
            cancel,
            Some(deadline + DEADLINE_GRACE),
        );
        match (result, stale, plan_for_stale) {
            (Ok(entry), _, _) => {
                if stale.is_some() {
                    inner.outage.recovered();
                }
                Ok(Answer { entry, stale: None })
            }
            (Err(e), Some(config), Some(plan)) if e.is_availability() => {
                inner.outage.failed(inner.clock.now_micros(), &config, &e);
                match inner.stale_answer(&plan, &config, Some(&e)) {
                    Some(answer) => Ok(answer),
                    None => {
                        Stats::incr(&inner.stats.stale_unavailable);
                        Err(e)
                    }
                }
            }
            (Err(e), _, _) => Err(e),
        }
    }

    /// The key of a plan in a cache shared by processes (README "Shared
    /// cache"): the SHA-256 of the signing email and the request, in hex, so
    /// object names never appear in the shared store. `None` when the plan
    /// is not cached or this signer has a local key (signing locally costs
    /// less than a round trip to the store). May ask the metadata server for
    /// the email once per process.
    pub fn shared_key(&self, plan: &Plan, cancel: &Cancel) -> Result<Option<String>> {
        if !plan.cacheable || !self.inner.blob.uses_sign_blob() {
            return Ok(None);
        }
        // The email, not the identity: `iam:metadata:HOST` is the same for
        // pods bound to different service accounts, and a URL signed by one
        // account must never be served for another.
        let email = self.email(cancel)?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(SHARED_KEY_FORMAT.as_bytes());
        ctx.update(&(email.len() as u64).to_be_bytes());
        ctx.update(email.as_bytes());
        ctx.update(plan.req.cache_key().as_bytes());
        Ok(Some(crate::encoding::hex_lower(ctx.finish().as_ref())))
    }

    /// Takes a URL another process signed for the same shared key into the
    /// local cache if it serves this plan under the local cache's rules
    /// (`X <= x <= X + E`, 12 hours for `signBlob`) and is, apart from its
    /// signature, exactly the URL this process would build for that request,
    /// expiry and signing time.
    pub fn adopt(
        &self,
        plan: &Plan,
        url: &str,
        expires_at: i64,
        signed_at: i64,
        from_sign_blob: bool,
    ) -> Adoption {
        let Some(cache) = self.inner.cache.as_ref().filter(|_| plan.cacheable) else {
            return Adoption::Refused;
        };
        let Some(email) = self.inner.blob.email_now() else {
            return Adoption::Refused;
        };
        if signed_at > plan.date + SHARED_MAX_CLOCK_SKEW || signed_at >= expires_at {
            return Adoption::Refused;
        }
        let entry = Arc::new(Entry {
            url: url.to_owned(),
            expires_at,
            signed_at,
            // Trust no claim that would lift the 12-hour rule.
            from_sign_blob: from_sign_blob || self.inner.blob.uses_sign_blob(),
        });
        if !entry.serves(&plan.want) {
            // Too short for this request, but another process's URL for
            // exactly this request: keep it (unless the local one works
            // longer) so that stale-if-error can answer with it if signing
            // fails (src/stale.rs).
            if let Some(config) = self.stale_config() {
                let min_life = config.min_life_for(plan.want.at_least - plan.want.now);
                if entry.serves_stale(&plan.want, min_life) {
                    if !url_matches(plan, &email, url, expires_at, signed_at) {
                        return Adoption::Refused;
                    }
                    cache.insert_if_longer(plan.key.clone(), entry);
                }
            }
            return Adoption::Stale;
        }
        if !url_matches(plan, &email, url, expires_at, signed_at) {
            return Adoption::Refused;
        }
        cache.insert(plan.key.clone(), entry);
        Adoption::Taken
    }

    /// [`UrlSigner::plan`], then the cache, then signing.
    pub fn signed_url(
        &self,
        req: UrlRequest,
        expiry: Expiry,
        timestamp: Option<i64>,
        cancel: &Cancel,
    ) -> Result<String> {
        match self.lookup(req, expiry, timestamp)? {
            Lookup::Hit(entry) => Ok(entry.url.clone()),
            Lookup::Miss(plan) => self.sign_planned(*plan, cancel),
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
            ("stale_served", g(&s.stale_served)),
            ("stale_unavailable", g(&s.stale_unavailable)),
            ("refreshes", g(&s.refreshes)),
            ("refresh_failures", g(&s.refresh_failures)),
            ("refresh_skipped", g(&s.refresh_skipped)),
            (
                "entries",
                self.inner.cache.as_ref().map_or(0, |c| c.len() as u64),
            ),
        ]
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.inner.timeout
    }

    /// Test hook (src/process.rs): every per-process lock this signer uses.
    #[cfg(test)]
    pub(crate) fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        let mut holders = self.inner.blob.lock_holders();
        if let Some(cache) = &self.inner.cache {
            holders.extend(cache.lock_holders());
        }
        holders
    }
}

/// The time (seconds since the epoch) the caller wants the URL valid until;
/// a lifetime that is not positive is refused.
fn requested_until(expiry: Expiry, now_f: f64) -> Result<f64> {
    match expiry {
        Expiry::In(secs) => {
            if !secs.is_finite() || secs <= 0.0 {
                return Err(config::expires_in_error(&secs.to_string()));
            }
            Ok(now_f + secs)
        }
        Expiry::At(at) => {
            if !at.is_finite() || at <= now_f {
                return Err(Error::invalid("expires_at must be a time in the future"));
            }
            Ok(at)
        }
    }
}

/// The whole second the URL must at least last to, within the version's
/// maximum lifetime (V4 allows a fraction of a second over, signed to the limit).
fn lifetime_limited(version: Version, now: i64, until: f64) -> Result<i64> {
    // Round up: the URL must be valid at least until the time asked for.
    let at_least = until.ceil() as i64;
    // Saturating: an absurd expiry (1e300 s) against an extreme
    // timestamp must be refused below, not overflow (tests/url_properties.rs).
    let lifetime = at_least.saturating_sub(now);
    if version == Version::V4 {
        if lifetime > V4_MAX_EXPIRES + 1 {
            return Err(config::v4_lifetime_error(&lifetime.to_string()));
        }
        // Only a fraction of a second past the limit: sign to the limit.
        return Ok(at_least.min(now + V4_MAX_EXPIRES));
    }
    if lifetime > config::V2_MAX_EXPIRES {
        return Err(config::v2_lifetime_error(&lifetime.to_string()));
    }
    Ok(at_least)
}

impl Inner {
    /// The stale URL for `plan` if one qualifies (src/stale.rs): counted,
    /// and a warning with `error` (or the outage's) queued once a minute.
    fn stale_answer(
        &self,
        plan: &Plan,
        config: &StaleConfig,
        error: Option<&Error>,
    ) -> Option<Answer> {
        let cache = self.cache.as_ref()?;
        let min_life = config.min_life_for(plan.want.at_least - plan.want.now);
        let entry = cache.lookup_stale(&plan.key, &plan.want, min_life)?;
        if entry.serves(&plan.want) {
            // Another caller's fresh URL landed meanwhile.
            return Some(Answer { entry, stale: None });
        }
        let error = match error {
            Some(e) => e.clone(),
            None => self.outage.last_error().unwrap_or_else(|| {
                Error::new(crate::ErrorKind::Unavailable, "signing is unavailable")
            }),
        };
        Stats::incr(&self.stats.stale_served);
        if self.outage.warning_due(self.clock.as_ref()) {
            crate::events::stale_served(&error, entry.usable_until() - plan.want.now, min_life);
        }
        Some(Answer {
            entry,
            stale: Some(error),
        })
    }

    /// After a hit: re-signs `plan`'s key in the background if `entry` is
    /// about to stop serving the lifetime asked (src/refresh.rs).
    fn refresh_ahead(self: Arc<Self>, cache: &UrlCache, plan: &Plan, entry: &Entry) {
        let Some((config, budget)) = self.refresh.as_ref() else {
            return;
        };
        let slack = entry.expires_at - plan.want.at_least;
        if !self.blob.uses_sign_blob()
            || !config.due(slack, plan.want.at_most - plan.want.at_least)
            || cache.flights().is_running(plan.key.as_str())
        {
            return;
        }
        if !budget.try_take() {
            Stats::incr(&self.stats.refresh_skipped);
            return;
        }
        let deadline = Instant::now() + self.timeout;
        let (inner, flying, seen) = (self.clone(), plan.clone(), entry.expires_at);
        // A flight like a miss's (src/flight.rs): a miss for the same key
        // meanwhile waits for it instead of signing again.
        cache
            .flights()
            .start(plan.key.as_str(), move || async move {
                let plan = flying;
                // The hit saw `seen` before this flight started: another
                // refresh may have landed in between (it left the table,
                // so `is_running` passed). Its entry is the answer.
                let landed = inner
                    .cache
                    .as_ref()
                    .and_then(|c| c.lookup(&plan.key, &plan.want));
                if let Some(newer) = landed.filter(|e| e.expires_at > seen) {
                    return Ok(newer);
                }
                Stats::incr(&inner.stats.refreshes);
                match inner.sign_remote(&plan, deadline).await {
                    Ok(entry) => {
                        inner.store(&plan, entry.clone());
                        inner.outage.recovered();
                        if let Some(Some(kept)) = inner.refreshed.try_lock().as_deref_mut() {
                            if kept.len() < REFRESHED_CAPACITY {
                                kept.push((plan.clone(), entry.clone()));
                                inner.refreshed_pending.store(true, Ordering::Release);
                            }
                        }
                        Ok(entry)
                    }
                    Err(e) => {
                        Stats::incr(&inner.stats.refresh_failures);
                        if let (Some(config), true) = (inner.stale.as_ref(), e.is_availability()) {
                            inner.outage.failed(inner.clock.now_micros(), config, &e);
                        }
                        Err(e)
                    }
                }
            });
    }

    /// Signs with a local key, if this identity has one.
    fn sign_local(&self, plan: &Plan) -> Result<Option<Arc<Entry>>> {
        // A signBlob signer never signs locally: don't build its string to
        // sign twice (once here, once in sign_remote) on every miss.
        if self.blob.uses_sign_blob() {
            return Ok(None);
        }
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

    async fn sign_remote(&self, plan: &Plan, deadline: Instant) -> Result<Arc<Entry>> {
        let email = match self.blob.email_now() {
            Some(e) => e,
            None => self.blob.email_until(deadline).await?,
        };
        let prepared = Prepared::new(plan, &email)?;
        let payload = prepared.string_to_sign().as_bytes().to_vec();
        let sig = self.blob.sign_until(payload, deadline).await?;
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
        }
    }

    /// One `signBlob` call for every concurrent miss of the same key. The
    /// signing runs as its own task (src/flight.rs), so a caller that is
    /// interrupted (Timeout, Thread#kill) does not strand the others; when
    /// every caller has given up, it is cancelled before it is sent.
    async fn coalesced(
        self: Arc<Self>,
        cache: &UrlCache,
        plan: Plan,
        deadline: Instant,
    ) -> Result<Arc<Entry>> {
        loop {
            if let Some(entry) = cache.lookup(&plan.key, &plan.want) {
                return Ok(entry);
            }
            let entry = self
                .clone()
                .join_flight(cache, &plan, deadline)
                .wait()
                .await?;
            if entry.serves(&plan.want) {
                return Ok(entry);
            }
            // Another caller's URL does not fit this request's window
            // (a different lifetime): sign our own.
        }
    }

    /// The flight for `plan`'s key: joined if one is running, else started.
    ///
    /// A flight stores its URL before it leaves the table, so a caller that
    /// looks in the table first and then in the cache finds one or the
    /// other. The caller here looked in the cache first: a flight that
    /// landed between its lookup and this join is in neither place it
    /// looked. So a flight started here looks in the cache again (after the
    /// join, so after any earlier flight's store) before it signs.
    fn join_flight(
        self: Arc<Self>,
        cache: &UrlCache,
        plan: &Plan,
        deadline: Instant,
    ) -> Ticket<Arc<Entry>> {
        let (inner, flying) = (self.clone(), plan.clone());
        let ticket = cache.flights().join(
            plan.key.as_str(),
            Policy::CancelUnwatched,
            move || async move {
                let landed = inner
                    .cache
                    .as_ref()
                    .and_then(|c| c.lookup(&flying.key, &flying.want));
                if let Some(entry) = landed {
                    Stats::incr(&inner.stats.coalesced);
                    return Ok(entry);
                }
                let entry = inner.sign_remote(&flying, deadline).await?;
                // Cached before the flight ends: a caller arriving in
                // between finds one or the other.
                inner.store(&flying, entry.clone());
                Ok(entry)
            },
        );
        if !ticket.started() {
            Stats::incr(&self.stats.coalesced);
        }
        ticket
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::BoxFuture;
    use crate::cache::SIGN_BLOB_MAX_SERVE_SECS;
    use crate::clock::ManualClock;
    use crate::request::{UrlStyle, V2Path};

    /// A `signBlob`-like signer for a fixed account: the signature is the
    /// first 256 bytes of the payload's SHA-256, repeated.
    #[derive(Debug)]
    struct Remote(&'static str);

    impl BlobSigner for Remote {
        fn identity(&self) -> &str {
            "iam:metadata:test"
        }
        fn email_now(&self) -> Option<String> {
            Some(self.0.to_owned())
        }
        fn email(&self) -> BoxFuture<'_, Result<String>> {
            Box::pin(std::future::ready(Ok(self.0.to_owned())))
        }
        fn sign(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
            let d = ring::digest::digest(&ring::digest::SHA256, &payload);
            Box::pin(std::future::ready(Ok(d.as_ref().repeat(8))))
        }
        fn uses_sign_blob(&self) -> bool {
            true
        }
    }

    const T0: i64 = 1_700_000_000;

    fn signer(email: &'static str) -> (UrlSigner, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0 * 1_000_000));
        let options = SignerOptions {
            clock: clock.clone(),
            ..SignerOptions::default()
        };
        let s = UrlSigner::with_blob_signer(Arc::new(Remote(email)), options, Arc::default());
        (s.unwrap(), clock)
    }

    fn req(version: Version, object: &str) -> UrlRequest {
        UrlRequest {
            version,
            method: "GET".into(),
            bucket: "bucket".into(),
            object: object.into(),
            headers: vec![],
            query: vec![("response-content-type".into(), "image/png".into())],
            scheme: "https".into(),
            host: None,
            style: UrlStyle::Path,
            v2_path: V2Path::Fog115,
        }
    }

    /// A caller that missed the cache while another caller's flight for the
    /// same key was running, and reaches the flight table only after that
    /// flight stored its URL and left the table (a thread preempted between
    /// the two steps), gets that URL: no second `signBlob` call. A burst of
    /// identical misses on a loaded machine made 2 to 4 calls before.
    #[test]
    fn a_flight_that_lands_between_a_miss_and_its_join_is_not_signed_again() {
        let (s, _, blob) = flaky(None, None);
        let plan = s
            .plan(req(Version::V4, "o"), Expiry::In(600.0), None)
            .unwrap();
        let cache = s.inner.cache.as_ref().unwrap();
        // The caller's lookup misses...
        assert!(cache.lookup(&plan.key, &plan.want).is_none());
        // ...another caller's flight signs, is cached and leaves the table...
        let first = s.sign_planned_entry(plan.clone(), &Cancel::new()).unwrap();
        assert!(!cache.flights().is_running(plan.key.as_str()));
        assert_eq!(blob.calls.load(Ordering::SeqCst), 1);
        // ...and only then does the caller join.
        let deadline = Instant::now() + Duration::from_secs(10);
        let ticket = s.inner.clone().join_flight(cache, &plan, deadline);
        let got = runtime::block_on(ticket.wait(), &Cancel::new(), None).unwrap();
        assert_eq!(got.url, first.url);
        assert_eq!(blob.calls.load(Ordering::SeqCst), 1);
        assert_eq!(Stats::get(&s.inner.stats.coalesced), 1);
    }

    /// Polls `done` until it holds; fails naming `what` after `within`.
    fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(Instant::now() < deadline, "still waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A signBlob-like signer for tests: it fails with `fail` while that is
    /// set, and with a `gate`, each call waits until the gate lets it in.
    #[derive(Debug, Default)]
    struct Scripted {
        fail: parking_lot::Mutex<Option<crate::ErrorKind>>,
        gate: Option<Arc<tokio::sync::Semaphore>>,
        calls: std::sync::atomic::AtomicU64,
    }

    impl BlobSigner for Scripted {
        fn identity(&self) -> &str {
            "iam:metadata:scripted"
        }
        fn email_now(&self) -> Option<String> {
            Some("a@p.iam.gserviceaccount.com".into())
        }
        fn email(&self) -> BoxFuture<'_, Result<String>> {
            Box::pin(std::future::ready(Ok("a@p.iam.gserviceaccount.com".into())))
        }
        fn sign(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let fail = *self.fail.lock();
            let gate = self.gate.clone();
            Box::pin(async move {
                if let Some(gate) = gate {
                    let _open = gate.acquire().await;
                }
                match fail {
                    Some(kind) => Err(Error::new(kind, "injected")),
                    None => Ok(ring::digest::digest(&ring::digest::SHA256, &payload)
                        .as_ref()
                        .repeat(8)),
                }
            })
        }
        fn uses_sign_blob(&self) -> bool {
            true
        }
    }

    /// Two callers of one key at clock `T0`, asking for URLs valid until
    /// `first` and `second` (Unix seconds); `second` misses once `first`'s
    /// flight is running, and the gate opens when both are in. Returns the
    /// URLs' expiries and the signBlob calls.
    fn burst_of_two(first: f64, second: f64) -> (i64, i64, u64) {
        let clock = Arc::new(ManualClock::new(T0 * 1_000_000));
        let blob = Arc::new(Scripted {
            gate: Some(Arc::new(tokio::sync::Semaphore::new(0))),
            ..Scripted::default()
        });
        let options = SignerOptions {
            clock: clock.clone(),
            stale: None,
            ..SignerOptions::default()
        };
        let s = UrlSigner::with_blob_signer(blob.clone(), options, Arc::default()).unwrap();
        let call = |at: f64| {
            let s = s.clone();
            std::thread::spawn(move || {
                let r = req(Version::V4, "o");
                s.signed_url(r, Expiry::At(at), None, &Cancel::new())
            })
        };
        let key = s
            .plan(req(Version::V4, "o"), Expiry::At(first), None)
            .unwrap()
            .key;
        let ten_s = Duration::from_secs(10);
        let a = call(first);
        wait_for("first flight", ten_s, || {
            blob.calls.load(Ordering::SeqCst) == 1
        });
        let b = call(second);
        wait_for("second miss", ten_s, || {
            Stats::get(&s.inner.stats.misses) == 2
        });
        // The second caller is in the flight table (joined) or has passed it.
        wait_for("second join", ten_s, || {
            Stats::get(&s.inner.stats.coalesced) == 1 || blob.calls.load(Ordering::SeqCst) == 2
        });
        blob.gate.as_ref().expect("gated").add_permits(2);
        // Signed at T0 (the clock does not move): the expiry is T0 + X-Goog-Expires.
        let expiry = |url: String| -> i64 {
            let e = url.split("X-Goog-Expires=").nth(1).unwrap();
            T0 + e.split('&').next().unwrap().parse::<i64>().unwrap()
        };
        let (ua, ub) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
        assert!(!s
            .inner
            .cache
            .as_ref()
            .unwrap()
            .flights()
            .is_running(key.as_str()));
        (expiry(ua), expiry(ub), blob.calls.load(Ordering::SeqCst))
    }

    /// A caller asking for a URL valid a second longer than the one being
    /// signed (its thread read the clock a second later) waits for that
    /// flight: the URL signed with the extension covers it.
    #[test]
    fn a_later_expiry_in_a_burst_shares_the_flight() {
        let x = (T0 + 600) as f64;
        let (a, b, calls) = burst_of_two(x, x + 1.0);
        assert_eq!((a, b, calls), (T0 + 660, T0 + 660, 1));
    }

    /// A caller asking for a URL valid a second less than the one being
    /// signed (its thread read the clock a second earlier but arrived
    /// later) cannot use it: it would outlive the request by E + 1 s. It
    /// gets its own signature, within its own window.
    #[test]
    fn an_earlier_expiry_in_a_burst_is_signed_on_its_own() {
        let x = (T0 + 601) as f64;
        let (a, b, calls) = burst_of_two(x, x - 1.0);
        assert_eq!((a, b, calls), (T0 + 661, T0 + 660, 2));
    }

    #[test]
    fn lookup_validates_every_request_it_does_not_answer_from_the_cache() {
        let (s, _) = signer("a@p.iam.gserviceaccount.com");
        let r = req(Version::V4, "o");
        let url = s
            .signed_url(r.clone(), Expiry::In(600.0), None, &Cancel::new())
            .unwrap();
        match s.lookup(r, Expiry::In(600.0), None).unwrap() {
            Lookup::Hit(e) => assert_eq!(e.url, url),
            Lookup::Miss(_) => panic!("expected a hit"),
        }
        let mut bad = req(Version::V4, "../o");
        assert!(s.lookup(bad.clone(), Expiry::In(600.0), None).is_err());
        bad.object = "o".into();
        bad.method = "get".into();
        assert!(s.lookup(bad, Expiry::In(600.0), None).is_err());
    }

    fn key(s: &UrlSigner, plan: &Plan) -> String {
        s.shared_key(plan, &Cancel::new()).unwrap().unwrap()
    }

    #[test]
    fn shared_keys_are_digests_of_email_and_request() {
        let (a, _) = signer("a@p.iam.gserviceaccount.com");
        let (b, _) = signer("b@p.iam.gserviceaccount.com");
        let plan = |s: &UrlSigner, o: &str| s.plan(req(Version::V4, o), Expiry::In(600.0), None);
        let ka = key(&a, &plan(&a, "secret-name.png").unwrap());
        assert_eq!(ka.len(), 64);
        assert!(ka.bytes().all(|c| c.is_ascii_hexdigit()));
        // same request, a minute later: same key (time is not in it)
        let (a2, clock) = signer("a@p.iam.gserviceaccount.com");
        clock.advance_micros(60_000_000);
        assert_eq!(ka, key(&a2, &plan(&a2, "secret-name.png").unwrap()));
        // another account or another object: another key
        assert_ne!(ka, key(&b, &plan(&b, "secret-name.png").unwrap()));
        assert_ne!(ka, key(&a, &plan(&a, "secret-name.pnG").unwrap()));
        // a pinned timestamp is never cached, so never shared
        let pinned = a
            .plan(req(Version::V4, "o"), Expiry::In(600.0), Some(T0))
            .unwrap();
        assert_eq!(a.shared_key(&pinned, &Cancel::new()).unwrap(), None);
    }

    fn adopt_entry(to: &UrlSigner, plan: &Plan, e: &Entry) -> Adoption {
        to.adopt(plan, &e.url, e.expires_at, e.signed_at, e.from_sign_blob)
    }

    #[test]
    fn another_process_url_is_adopted_only_within_the_window() {
        for version in [Version::V4, Version::V2] {
            let (a, _) = signer("a@p.iam.gserviceaccount.com");
            let (b, clock_b) = signer("a@p.iam.gserviceaccount.com");
            let r = req(version, "dir/a b+c.png");
            let plan_a = a.plan(r.clone(), Expiry::In(600.0), None).unwrap();
            let e = a.sign_planned_entry(plan_a, &Cancel::new()).unwrap();
            assert_eq!(e.expires_at, T0 + 660);

            // 30 s later, another process asks for 600 s: X = T0 + 630 <= x.
            clock_b.advance_micros(30_000_000);
            let plan_b = b.plan(r.clone(), Expiry::In(600.0), None).unwrap();
            assert!(b.try_cached(&plan_b).is_none());
            assert_eq!(adopt_entry(&b, &plan_b, &e), Adoption::Taken);
            assert_eq!(
                b.try_cached(&plan_b).map(|h| h.url.clone()),
                Some(e.url.clone())
            );

            // a request for a shorter life would get a URL that outlives it too long
            let short = b.plan(r.clone(), Expiry::In(60.0), None).unwrap();
            assert_eq!(adopt_entry(&b, &short, &e), Adoption::Stale);
            // 61 s later the URL no longer lasts 600 s more
            clock_b.advance_micros(31_000_000);
            let late = b.plan(r.clone(), Expiry::In(600.0), None).unwrap();
            assert_eq!(adopt_entry(&b, &late, &e), Adoption::Stale);
        }
    }

    fn assert_refused(outcome: Adoption) {
        assert_eq!(outcome, Adoption::Refused);
    }

    #[test]
    fn adopt_refuses_urls_that_are_not_this_request() {
        let (a, _) = signer("a@p.iam.gserviceaccount.com");
        let (b, _) = signer("a@p.iam.gserviceaccount.com");
        let r = req(Version::V4, "o.png");
        let e = a
            .sign_planned_entry(
                a.plan(r.clone(), Expiry::In(600.0), None).unwrap(),
                &Cancel::new(),
            )
            .unwrap();
        let plan = b.plan(r, Expiry::In(600.0), None).unwrap();
        let other = b
            .plan(req(Version::V4, "p.png"), Expiry::In(600.0), None)
            .unwrap();
        let (x, s) = (e.expires_at, e.signed_at);
        // another object's plan
        assert_refused(b.adopt(&other, &e.url, x, s, true));
        // an expiry that is not the one in the URL
        assert_refused(b.adopt(&plan, &e.url, x - 1, s, true));
        assert_refused(b.adopt(&plan, &e.url, x, s - 1, true));
        // a signing time from the future
        assert_refused(b.adopt(&plan, &e.url, x + 60, s + 60, true));
        // tampered parameters or signature
        let tampered = e
            .url
            .replace("X-Goog-SignedHeaders=host", "X-Goog-SignedHeaders=host&a=b");
        assert_refused(b.adopt(&plan, &tampered, x, s, true));
        assert_refused(b.adopt(&plan, &format!("{}&x=1", e.url), x, s, true));
        let cut = &e.url[..e.url.len() - e.url.rsplit('=').next().unwrap().len()];
        assert_refused(b.adopt(&plan, cut, x, s, true));
        // another account's URL
        let (c, _) = signer("c@p.iam.gserviceaccount.com");
        let ec = c
            .sign_planned_entry(
                c.plan(req(Version::V4, "o.png"), Expiry::In(600.0), None)
                    .unwrap(),
                &Cancel::new(),
            )
            .unwrap();
        assert_refused(b.adopt(&plan, &ec.url, ec.expires_at, ec.signed_at, true));
        assert!(b.try_cached(&plan).is_none());
        assert_eq!(b.adopt(&plan, &e.url, x, s, true), Adoption::Taken);
    }

    #[test]
    fn adopted_sign_blob_urls_keep_the_twelve_hour_rule() {
        let (a, clock_a) = signer("a@p.iam.gserviceaccount.com");
        let (b, clock_b) = signer("a@p.iam.gserviceaccount.com");
        let r = req(Version::V2, "o.png");
        let long = Expiry::In(3.0 * 86_400.0);
        let e = a
            .sign_planned_entry(a.plan(r.clone(), long, None).unwrap(), &Cancel::new())
            .unwrap();
        // 12 h later a request for a little less life accepts the expiry by
        // the window, but the signature is too old; a claim that it was not
        // made by signBlob does not change that.
        let later = T0 + SIGN_BLOB_MAX_SERVE_SECS;
        clock_a.set_micros(later * 1_000_000);
        clock_b.set_micros(later * 1_000_000);
        let left = (e.expires_at - later) as f64;
        let plan = b.plan(r, Expiry::In(left - 10.0), None).unwrap();
        assert_eq!(
            b.adopt(&plan, &e.url, e.expires_at, e.signed_at, false),
            Adoption::Stale
        );
    }

    fn flaky(
        stale: Option<StaleConfig>,
        refresh: Option<RefreshConfig>,
    ) -> (UrlSigner, Arc<ManualClock>, Arc<Scripted>) {
        let clock = Arc::new(ManualClock::new(T0 * 1_000_000));
        let blob = Arc::new(Scripted::default());
        let options = SignerOptions {
            clock: clock.clone(),
            stale,
            refresh,
            ..SignerOptions::default()
        };
        let s = UrlSigner::with_blob_signer(blob.clone(), options, Arc::default()).unwrap();
        (s, clock, blob)
    }

    fn answer(s: &UrlSigner, object: &str) -> Result<Answer> {
        let plan = s.plan(req(Version::V4, object), Expiry::In(600.0), None)?;
        match s.try_cached(&plan) {
            Some(entry) => Ok(Answer { entry, stale: None }),
            None => s.answer_planned(plan, &Cancel::new()),
        }
    }

    #[test]
    fn availability_errors_are_answered_stale_others_raise() {
        use crate::ErrorKind::*;
        let no_hold = StaleConfig {
            probe_interval: 0,
            ..StaleConfig::default()
        };
        for (kind, served) in [
            (Unavailable, true),
            (Quota, true),
            (Timeout, true),
            (PermissionDenied, false),
            (ApiDisabled, false),
            (WorkloadIdentity, false),
            (Interrupted, false),
            (Protocol, false),
        ] {
            let (s, clock, blob) = flaky(Some(no_hold), None);
            let fresh = answer(&s, "o").unwrap();
            assert!(fresh.stale.is_none());
            clock.advance_micros(120_000_000);
            *blob.fail.lock() = Some(kind);
            let got = answer(&s, "o");
            if served {
                let got = got.unwrap();
                assert_eq!(got.entry.url, fresh.entry.url, "{kind:?}");
                assert_eq!(got.stale.unwrap().kind(), kind);
                assert_eq!(Stats::get(&s.inner.stats.stale_served), 1);
            } else {
                assert_eq!(got.unwrap_err().kind(), kind);
                assert_eq!(Stats::get(&s.inner.stats.stale_served), 0);
            }
            // never a URL for another request
            assert_eq!(answer(&s, "p").unwrap_err().kind(), kind);
        }
        // turned off: raised
        let (s, clock, blob) = flaky(None, None);
        answer(&s, "o").unwrap();
        clock.advance_micros(120_000_000);
        *blob.fail.lock() = Some(Unavailable);
        assert_eq!(answer(&s, "o").unwrap_err().kind(), Unavailable);
    }

    #[test]
    fn stale_only_with_the_minimum_life_left() {
        let (s, clock, blob) = flaky(Some(StaleConfig::default()), None);
        // signed at T0 for 600 s: expires at T0 + 660; min life 60 s
        answer(&s, "o").unwrap();
        *blob.fail.lock() = Some(crate::ErrorKind::Unavailable);
        clock.set_micros((T0 + 600) * 1_000_000);
        assert!(answer(&s, "o").unwrap().stale.is_some());
        clock.set_micros((T0 + 601) * 1_000_000);
        assert_eq!(
            answer(&s, "o").unwrap_err().kind(),
            crate::ErrorKind::Unavailable
        );
        assert_eq!(Stats::get(&s.inner.stats.stale_unavailable), 1);
    }

    #[test]
    fn during_an_outage_one_probe_per_interval() {
        let (s, clock, blob) = flaky(Some(StaleConfig::default()), None);
        answer(&s, "o").unwrap();
        *blob.fail.lock() = Some(crate::ErrorKind::Unavailable);
        clock.advance_micros(120_000_000);
        let before = blob.calls.load(Ordering::SeqCst);
        assert!(answer(&s, "o").unwrap().stale.is_some());
        let after_first = blob.calls.load(Ordering::SeqCst);
        assert!(after_first > before);
        // within the 5 s hold: no call
        for _ in 0..10 {
            assert!(answer(&s, "o").unwrap().stale.is_some());
        }
        assert_eq!(blob.calls.load(Ordering::SeqCst), after_first);
        // after it one probe, which succeeds: fresh again
        *blob.fail.lock() = None;
        clock.advance_micros(5_000_000);
        assert!(answer(&s, "o").unwrap().stale.is_none());
        assert!(blob.calls.load(Ordering::SeqCst) > after_first);
    }

    #[test]
    fn refresh_ahead_re_signs_a_hot_entry_once_in_the_background() {
        let (s, clock, blob) = flaky(None, Some(RefreshConfig::default()));
        s.keep_refreshed();
        let first = answer(&s, "o").unwrap().entry;
        assert_eq!(blob.calls.load(Ordering::SeqCst), 1);
        // E = 60 s, lead 15 s: a hit 40 s later has 20 s of slack, no refresh
        clock.advance_micros(40_000_000);
        answer(&s, "o").unwrap();
        assert_eq!(Stats::get(&s.inner.stats.refreshes), 0);
        // 46 s: 14 s of slack, refresh once
        clock.advance_micros(6_000_000);
        // (the refresh may land between these hits: either URL serves)
        for _ in 0..5 {
            assert!(answer(&s, "o").unwrap().stale.is_none());
        }
        wait_for("a refresh to land", Duration::from_secs(5), || {
            !s.take_refreshed().is_empty()
        });
        assert_eq!(Stats::get(&s.inner.stats.refreshes), 1);
        assert_eq!(blob.calls.load(Ordering::SeqCst), 2);
        // 60 s after the first signing the old entry no longer serves; the
        // refreshed one does, with no miss
        clock.advance_micros(20_000_000);
        let misses = Stats::get(&s.inner.stats.misses);
        let hit = answer(&s, "o").unwrap().entry;
        assert_ne!(hit.url, first.url);
        assert_eq!(Stats::get(&s.inner.stats.misses), misses);
    }

    /// A hit that saw the old entry and starts its refresh just after
    /// another refresh landed (and left the flight table) signs nothing.
    #[test]
    fn a_refresh_started_after_another_landed_does_not_sign_again() {
        let (s, clock, blob) = flaky(None, Some(RefreshConfig::default()));
        s.keep_refreshed();
        let first = answer(&s, "o").unwrap().entry;
        clock.advance_micros(46_000_000); // 14 s of slack: due
        answer(&s, "o").unwrap();
        let five_s = Duration::from_secs(5);
        wait_for("a refresh to land", five_s, || {
            !s.take_refreshed().is_empty()
        });
        assert_eq!(blob.calls.load(Ordering::SeqCst), 2);
        // the late hit: what it looked up was `first`
        let cache = s.inner.cache.as_ref().unwrap();
        let plan = s
            .plan(req(Version::V4, "o"), Expiry::In(600.0), None)
            .unwrap();
        let flying = || cache.flights().is_running(plan.key.as_str());
        wait_for("the refresh to leave the table", five_s, || !flying());
        s.inner.clone().refresh_ahead(cache, &plan, &first);
        wait_for("the late refresh to end", five_s, || !flying());
        assert_eq!(blob.calls.load(Ordering::SeqCst), 2);
        assert_eq!(Stats::get(&s.inner.stats.refreshes), 1);
    }

    #[test]
    fn a_shared_url_too_short_for_the_request_is_kept_for_stale_if_error() {
        let (a, _) = signer("a@p.iam.gserviceaccount.com");
        let (b, clock, blob) = flaky(Some(StaleConfig::default()), None);
        let r = req(Version::V4, "o");
        let e = a
            .sign_planned_entry(
                a.plan(r.clone(), Expiry::In(600.0), None).unwrap(),
                &Cancel::new(),
            )
            .unwrap();
        clock.advance_micros(120_000_000);
        let plan = b.plan(r.clone(), Expiry::In(600.0), None).unwrap();
        // another request's URL is refused, not kept
        let other = a
            .sign_planned_entry(
                a.plan(req(Version::V4, "p"), Expiry::In(600.0), None)
                    .unwrap(),
                &Cancel::new(),
            )
            .unwrap();
        let refused = b.adopt(&plan, &other.url, e.expires_at, e.signed_at, true);
        assert_eq!(refused, Adoption::Refused);
        assert_eq!(adopt_entry(&b, &plan, &e), Adoption::Stale);
        assert!(b.try_cached(&plan).is_none());
        *blob.fail.lock() = Some(crate::ErrorKind::Unavailable);
        let got = b.answer_planned(plan, &Cancel::new()).unwrap();
        assert_eq!(got.entry.url, e.url);
        assert!(got.stale.is_some());
        // with stale-if-error off nothing is kept
        let (c, clock, blob) = flaky(None, None);
        clock.advance_micros(120_000_000);
        let plan = c.plan(r, Expiry::In(600.0), None).unwrap();
        assert_eq!(adopt_entry(&c, &plan, &e), Adoption::Stale);
        *blob.fail.lock() = Some(crate::ErrorKind::Unavailable);
        assert!(c.answer_planned(plan, &Cancel::new()).is_err());
    }
}
