//! The IAM Credentials `signBlob` client (docs/facts.md#signblob-api): the only keyless
//! way to get an RSA-SHA256 signature from a Google service account.
//!
//! Each call: wait out a shared 429 cool-down, pass the client-side quota
//! guard, take the shared access token, POST, and retry transient failures
//! with jittered backoff until the deadline. A 401 gets one more try with a
//! freshly fetched token (the cached one may have been revoked early).

use crate::blob::{BlobSigner, BoxFuture};
use crate::body::BodyError;
use crate::error::{describe, Error, ErrorKind, Result};
use crate::process::ProcessLocal;
use crate::retry::{self, Backoff};
use crate::runtime;
use crate::stats::Stats;
use crate::token::{AccessToken, TokenCache};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub const DEFAULT_ENDPOINT: &str = crate::config::IAM_ENDPOINT;
/// The overall budget of one signature, retries included (`timeout:`).
pub const DEFAULT_TIMEOUT: Duration = crate::config::TIMEOUT;
/// One request never waits longer than this, so a black-holed connection
/// leaves time for a retry within [`DEFAULT_TIMEOUT`].
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One attempt may take half the call's budget, and never less than
/// [`ATTEMPT_TIMEOUT`]: with `timeout: 20` for an IAM that answers in 6 s, a
/// fixed 5 s cut would fail every attempt however much `timeout:` is raised.
fn attempt_timeout(budget: Duration) -> Duration {
    ATTEMPT_TIMEOUT.max(budget / 2)
}

/// Client-side limits that keep one process from eating the project's
/// shared signBlob quota (60,000 per minute per project, docs/facts.md#signblob-quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaConfig {
    /// signBlob requests per minute (retries included).
    pub max_per_minute: u32,
    /// signBlob calls waiting for an answer at once.
    pub max_in_flight: usize,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        // A tenth of the project quota per process leaves room for a fleet
        // of pods; 64 in flight is far above what 2 Puma threads need.
        QuotaConfig {
            max_per_minute: crate::config::SIGN_BLOB_PER_MINUTE,
            max_in_flight: crate::config::SIGN_BLOB_IN_FLIGHT,
        }
    }
}

/// Where the signing account's email comes from.
#[derive(Debug, Clone)]
pub enum EmailSource {
    /// `service_account_email:`, or the target of an impersonation file.
    Known(String),
    /// The metadata server's default account, asked once.
    Metadata(Arc<dyn EmailLookup>),
}

/// An email that must be asked for: the metadata server's default account
/// (src/credentials/metadata.rs implements it). Declared here, by the one
/// that needs it, so that this client does not depend on the credentials
/// module that builds it.
pub trait EmailLookup: Send + Sync + fmt::Debug {
    /// Where it is asked (a host), for identities and messages.
    fn origin(&self) -> &str;
    /// The email if it is already known (no I/O).
    fn cached(&self) -> Option<String>;
    /// Asks for it; concurrent callers share one request.
    fn lookup(&self) -> BoxFuture<'_, Result<String>>;
    /// Why the latest attempt failed, while it is failing.
    fn last_failure(&self) -> Option<String>;

    /// Test hook (src/process.rs): the lookup's per-process locks.
    #[cfg(test)]
    fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        Vec::new()
    }
}

/// Everything an [`IamSigner`] needs; all of it known without I/O.
#[derive(Debug, Clone)]
pub struct IamConfig {
    pub email: EmailSource,
    /// Base URL, e.g. `https://iamcredentials.googleapis.com` (http allowed,
    /// for emulators).
    pub endpoint: String,
    /// Delegation chain, as emails or `projects/-/serviceAccounts/EMAIL`.
    pub delegates: Vec<String>,
    pub quota: QuotaConfig,
    pub timeout: Duration,
}

/// A token bucket: `max_per_minute` refills evenly, bursts up to a tenth of
/// a minute's worth (a page with many uncached URLs signs them together).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

#[derive(Debug)]
struct Guard {
    config: QuotaConfig,
    /// Per process (src/process.rs): a forked child never waits on the
    /// parent's locks, nor for permits held by the parent's threads.
    local: ProcessLocal<GuardState>,
}

#[derive(Debug)]
struct GuardState {
    bucket: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
    /// After a 429 every caller waits until then before sending.
    cooldown_until: Mutex<Option<Instant>>,
}

impl Guard {
    fn new(config: QuotaConfig) -> Self {
        Guard {
            config,
            local: ProcessLocal::new(),
        }
    }

    fn state(&self) -> &GuardState {
        self.local.get_or_init(|_parent| GuardState {
            bucket: Mutex::new(Bucket {
                tokens: Self::burst(self.config),
                last: None,
            }),
            in_flight: Arc::new(Semaphore::new(self.config.max_in_flight.max(1))),
            cooldown_until: Mutex::new(None),
        })
    }

    fn burst(config: QuotaConfig) -> f64 {
        (f64::from(config.max_per_minute) / 10.0).max(1.0)
    }

    async fn admit(&self, deadline: Instant, stats: &Stats) -> Result<OwnedSemaphorePermit> {
        let sem = self.state().in_flight.clone();
        if let Ok(p) = sem.clone().try_acquire_owned() {
            return Ok(p);
        }
        Stats::incr(&stats.throttled);
        crate::events::throttled("in_flight");
        match tokio::time::timeout_at(deadline, sem.acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Error::new(
                ErrorKind::Quota,
                format!(
                    "client-side quota guard: {} signBlob calls were already in flight and none \
                     finished before the deadline; raise `max_sign_blob_in_flight:` or `timeout:` if IAM is \
                     merely slow",
                    self.config.max_in_flight
                ),
            )),
        }
    }

    /// Takes one request from the bucket, waiting for a refill if needed.
    async fn take(&self, deadline: Instant, stats: &Stats, throttled: &AtomicBool) -> Result<()> {
        let rate = f64::from(self.config.max_per_minute.max(1)) / 60.0;
        let burst = Self::burst(self.config);
        loop {
            let wait = {
                let mut b = self.state().bucket.lock();
                let now = Instant::now();
                if let Some(last) = b.last {
                    b.tokens = (b.tokens + (now - last).as_secs_f64() * rate).min(burst);
                }
                b.last = Some(now);
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    return Ok(());
                }
                Duration::from_secs_f64((1.0 - b.tokens) / rate)
            };
            if Instant::now() + wait > deadline {
                return Err(Error::new(
                    ErrorKind::Quota,
                    format!(
                        "client-side quota guard: this process already sent {} signBlob requests \
                         in the last minute (`max_sign_blob_per_minute:`); the signed-URL cache should keep \
                         calls far below that, so check for uncacheable requests, or raise \
                         `max_sign_blob_per_minute:` (the project quota is 60,000 per minute for all pods)",
                        self.config.max_per_minute
                    ),
                ));
            }
            if !throttled.swap(true, Ordering::Relaxed) {
                Stats::incr(&stats.throttled);
                crate::events::throttled("rate");
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn wait_cooldown(&self, deadline: Instant) -> Result<()> {
        let until = *self.state().cooldown_until.lock();
        match until {
            Some(t) if t > Instant::now() => {
                if t > deadline {
                    return Err(Error::new(
                        ErrorKind::Quota,
                        "IAM signBlob answered 429 (quota exhausted) and this process is backing \
                         off; the back-off outlasts this call's deadline",
                    ));
                }
                tokio::time::sleep_until(t).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn cool_down(&self, delay: Duration) {
        let t = Instant::now() + delay;
        let mut g = self.state().cooldown_until.lock();
        if g.is_none_or(|old| old < t) {
            *g = Some(t);
        }
    }
}

/// Signs through IAM Credentials `signBlob`.
pub struct IamSigner {
    identity: String,
    config: IamConfig,
    tokens: Arc<TokenCache>,
    stats: Arc<Stats>,
    guard: Guard,
}

impl fmt::Debug for IamSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamSigner")
            .field("identity", &self.identity)
            .field("endpoint", &self.config.endpoint)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl IamSigner {
    pub fn new(config: IamConfig, tokens: Arc<TokenCache>, stats: Arc<Stats>) -> Self {
        let identity = match &config.email {
            EmailSource::Known(e) => format!("iam:{e}"),
            EmailSource::Metadata(m) => format!("iam:metadata:{}", m.origin()),
        };
        IamSigner {
            identity,
            guard: Guard::new(config.quota),
            config,
            tokens,
            stats,
        }
    }

    /// The shared token cache (for stats: `tokens().fetches()`).
    pub fn tokens(&self) -> &Arc<TokenCache> {
        &self.tokens
    }

    async fn email_inner(&self) -> Result<String> {
        match &self.config.email {
            EmailSource::Known(e) => Ok(e.clone()),
            EmailSource::Metadata(m) => m.lookup().await,
        }
    }

    /// Signs `payload`, giving up at `deadline` (retries included). A
    /// deadline that passes mid-request ends in [`ErrorKind::Timeout`].
    pub async fn sign_by(&self, payload: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        let result =
            match tokio::time::timeout_at(deadline, self.sign_inner(payload, deadline)).await {
                Ok(r) => r,
                Err(_) => Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                    "signBlob for {} did not finish within the {:.1} s deadline (the `timeout:` \
                     option); raise it if IAM or the metadata server is slow",
                    self.email_now().unwrap_or_else(|| "the service account".into()),
                    self.config.timeout.as_secs_f64()
                ),
                )),
            };
        if let Err(e) = &result {
            crate::events::sign_blob_failed(e);
            let counter = match e.kind() {
                ErrorKind::PermissionDenied
                | ErrorKind::InsufficientScope
                | ErrorKind::ApiDisabled
                | ErrorKind::WorkloadIdentity
                | ErrorKind::Unauthenticated => &self.stats.sign_blob_errors_permission,
                ErrorKind::Quota => &self.stats.sign_blob_errors_quota,
                ErrorKind::Unavailable | ErrorKind::Timeout => {
                    &self.stats.sign_blob_errors_unavailable
                }
                _ => &self.stats.sign_blob_errors_other,
            };
            Stats::incr(counter);
        }
        result
    }

    async fn sign_inner(&self, payload: &[u8], deadline: Instant) -> Result<Vec<u8>> {
        let email = self.email_inner().await?;
        // Shared with each attempt's request task (see `post`), so that a call
        // abandoned at its deadline keeps its slot until its request is over.
        let permit = Arc::new(self.guard.admit(deadline, &self.stats).await?);
        let call = SignCall {
            body: request_body(payload, &self.config.delegates),
            url: self.sign_blob_url(&email),
            email,
            permit,
            deadline,
            refreshed: AtomicBool::new(false),
            // The call counts once in `throttled`, however many waits it has.
            throttled: AtomicBool::new(false),
        };
        let outcome = retry::retry(
            deadline,
            Backoff::default(),
            || self.attempt(&call),
            |e, delay| {
                Stats::incr(&self.stats.sign_blob_retries);
                crate::events::retry("sign_blob", e, delay);
                if e.kind() == ErrorKind::Quota {
                    self.guard.cool_down(delay);
                }
            },
        )
        .await;
        outcome?
    }

    fn sign_blob_url(&self, email: &str) -> String {
        format!(
            "{}/v1/projects/-/serviceAccounts/{}:signBlob",
            self.config.endpoint.trim_end_matches('/'),
            percent_encode(email)
        )
    }

    /// One try of the retry loop: cool-down, quota, token, POST (and one more
    /// POST with a fresh token after a 401). Errors that must end the call at
    /// once (guard, token) travel as Ok(Err(..)), so the retry loop only sees
    /// signBlob's own answers.
    async fn attempt(&self, call: &SignCall) -> Result<Result<Vec<u8>>> {
        let (deadline, email) = (call.deadline, call.email.as_str());
        if let Err(e) = self.guard.wait_cooldown(deadline).await {
            return Ok(Err(e));
        }
        if let Err(e) = self
            .guard
            .take(deadline, &self.stats, &call.throttled)
            .await
        {
            return Ok(Err(e));
        }
        let token = match self.tokens.token().await {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let (status, text) = self.post(call, &token).await?;
        if status == 401 && !call.refreshed.swap(true, Ordering::SeqCst) {
            // The token may have been revoked or rotated before
            // its expiry: fetch a new one and try once more.
            self.tokens.invalidate(&token);
            let token = match self.tokens.token().await {
                Ok(t) => t,
                Err(e) => return Ok(Err(e)),
            };
            if let Err(e) = self
                .guard
                .take(deadline, &self.stats, &call.throttled)
                .await
            {
                return Ok(Err(e));
            }
            let (status, text) = self.post(call, &token).await?;
            return interpret(status, &text, email).map(Ok);
        }
        interpret(status, &text, email).map(Ok)
    }

    /// One signBlob request. It runs as its own task holding a share of the
    /// call's in-flight permit: when the caller gives up (deadline, Ruby
    /// interrupt) the request is not cut off mid-flight but finishes (or hits
    /// ATTEMPT_TIMEOUT) in the background, so IAM never sees more than
    /// `max_in_flight` requests from this process, abandoned ones included
    /// (bench/faults.rb, "64 threads, in-flight bound 8").
    async fn post(&self, call: &SignCall, token: &AccessToken) -> Result<(u16, String)> {
        let client = runtime::http()?;
        Stats::incr(&self.stats.sign_blob_calls);
        let request = client
            .post(&call.url)
            .bearer_auth(&token.value)
            .header("content-type", "application/json")
            .body(call.body.clone())
            // The call's deadline is enforced around the whole call (and
            // reported as Timeout); this only cuts one hung attempt short.
            .timeout(attempt_timeout(self.config.timeout));
        let slot = call.permit.clone();
        let exchange = tokio::spawn(async move {
            let _slot = slot;
            let resp = request.send().await.map_err(BodyError::Transport)?;
            let status = resp.status().as_u16();
            Ok::<_, BodyError>((status, crate::body::read_capped(resp).await?))
        });
        match exchange.await {
            Ok(answer) => answer.map_err(|e| self.post_error(&call.email, e)),
            Err(e) => Err(Error::internal(format!(
                "the signBlob request task for {} failed: {e}",
                call.email
            ))),
        }
    }

    /// A failed exchange: an oversized answer, a request that cannot be
    /// built (never retried: it would fail the same way again), or a transport error.
    fn post_error(&self, email: &str, e: BodyError) -> Error {
        match e {
            BodyError::TooLarge => Error::new(
                ErrorKind::Protocol,
                format!(
                    "signBlob for {email} at {} answered with more than {} KiB, which no IAM \
                     answer is; is `iam_endpoint:` / GCS_SIGNER_IAM_ENDPOINT pointing at the IAM \
                     Credentials API?",
                    self.config.endpoint,
                    crate::body::MAX_BODY / 1024
                ),
            ),
            BodyError::Transport(e) if e.is_builder() => Error::new(
                ErrorKind::Protocol,
                format!(
                    "the signBlob request for {email} could not be built: {}",
                    describe(&e)
                ),
            ),
            BodyError::Transport(e) => Error::new(
                ErrorKind::Unavailable,
                format!(
                    "signBlob for {email} at {} failed: {}",
                    self.config.endpoint,
                    describe(&e)
                ),
            ),
        }
    }
}

/// One signBlob call's state, shared by its attempts.
struct SignCall {
    url: String,
    body: String,
    email: String,
    permit: Arc<OwnedSemaphorePermit>,
    deadline: Instant,
    /// A 401 gets one retry with a fresh token per call, not per attempt.
    refreshed: AtomicBool,
    throttled: AtomicBool,
}

impl BlobSigner for IamSigner {
    fn identity(&self) -> &str {
        &self.identity
    }

    fn email_now(&self) -> Option<String> {
        match &self.config.email {
            EmailSource::Known(e) => Some(e.clone()),
            EmailSource::Metadata(m) => m.cached(),
        }
    }

    fn email(&self) -> BoxFuture<'_, Result<String>> {
        self.email_until(std::time::Instant::now() + self.config.timeout)
    }

    fn email_until(&self, deadline: std::time::Instant) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.into(), self.email_inner()).await {
                Ok(r) => r,
                Err(_) => {
                    let (host, last) = match &self.config.email {
                        EmailSource::Metadata(m) => (m.origin().to_string(), m.last_failure()),
                        EmailSource::Known(_) => ("?".to_string(), None),
                    };
                    // A wrong GCE_METADATA_HOST fails the same way as a slow
                    // server; the last attempt's failure tells them apart.
                    let last = last
                        .map(|l| format!("; last attempt: {l}"))
                        .unwrap_or_default();
                    Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "the metadata server at {host} did not tell the service account \
                             email within {:.1} s (the `timeout:` option){last}. Raise \
                             `timeout:` if it is starting up, check GCE_METADATA_HOST / \
                             `metadata_host:`, or pass `service_account_email:`",
                            self.config.timeout.as_secs_f64()
                        ),
                    ))
                }
            }
        })
    }

    fn sign(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
        self.sign_until(payload, std::time::Instant::now() + self.config.timeout)
    }

    fn sign_until(
        &self,
        payload: Vec<u8>,
        deadline: std::time::Instant,
    ) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(async move { self.sign_by(&payload, deadline.into()).await })
    }

    fn uses_sign_blob(&self) -> bool {
        true
    }

    #[cfg(test)]
    fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        let st = self.guard.state();
        let max = self.guard.config.max_in_flight as u32;
        let mut holders: Vec<crate::process::Holder<'_>> = vec![
            crate::process::mutex_holder("quota guard bucket", &st.bucket),
            crate::process::mutex_holder("quota guard 429 cool-down", &st.cooldown_until),
            (
                "quota guard in-flight permits (all of them)",
                Box::new(move |park: &dyn Fn()| {
                    let _held = st.in_flight.try_acquire_many(max);
                    park();
                }),
            ),
        ];
        holders.extend(self.tokens.lock_holders());
        if let EmailSource::Metadata(m) = &self.config.email {
            holders.extend(m.lock_holders());
        }
        holders
    }

    fn token_fetches(&self) -> u64 {
        self.tokens().fetches()
    }
}

fn request_body(payload: &[u8], delegates: &[String]) -> String {
    let mut body = serde_json::json!({ "payload": B64.encode(payload) });
    if !delegates.is_empty() {
        let names: Vec<String> = delegates
            .iter()
            .map(|d| {
                if d.starts_with("projects/") {
                    d.clone()
                } else {
                    format!("projects/-/serviceAccounts/{d}")
                }
            })
            .collect();
        body["delegates"] = serde_json::json!(names);
    }
    body.to_string()
}

/// Percent-encodes everything but RFC 3986 unreserved characters (the `@`
/// of an email in a URL path segment): the signed URLs' own encoding.
pub(crate) use crate::encoding::rfc3986 as percent_encode;

/// Google's error envelope `{"error":{"code","message","status","details":[{"reason"}]}}`.
#[derive(Debug, Default)]
struct Envelope {
    message: String,
    status: String,
    reasons: Vec<String>,
}

fn envelope(body: &str) -> Envelope {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return Envelope::default();
    };
    let e = &v["error"];
    Envelope {
        // Quoted in our messages: whatever looks like a credential goes.
        message: crate::body::redact(e["message"].as_str().unwrap_or_default()),
        status: e["status"].as_str().unwrap_or_default().to_string(),
        reasons: e["details"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["reason"].as_str().map(str::to_string))
            .collect(),
    }
}

/// Turns one signBlob answer into a signature or an actionable error.
/// Transient answers (408, 429, 5xx) come back as `Quota`/`Unavailable`,
/// which the retry loop retries.
fn interpret(status: u16, body: &str, email: &str) -> Result<Vec<u8>> {
    if status == 200 {
        let v: serde_json::Value = serde_json::from_str(body).map_err(|_| bad_body(email))?;
        let blob = v["signedBlob"].as_str().ok_or_else(|| bad_body(email))?;
        return B64.decode(blob).map_err(|_| bad_body(email));
    }
    Err(map_error(status, body, email))
}

fn bad_body(email: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!(
            "signBlob for {email} answered HTTP 200 with a body that is not a signBlob response \
             (expected JSON with a base64 `signedBlob`); is `iam_endpoint:` / \
             GCS_SIGNER_IAM_ENDPOINT pointing at the IAM Credentials API?"
        ),
    )
}

fn map_error(status: u16, body: &str, email: &str) -> Error {
    let env = envelope(body);
    let detail = env.detail(status);
    let (kind, text) = match status {
        400 if env.message.contains("Invalid form of account ID") => (
            ErrorKind::WorkloadIdentity,
            format!(
                "signBlob rejected the account `{email}` ({detail}). A `.svc.id.goog` \
                 name means GKE Workload Identity is not mapped: annotate the Kubernetes service \
                 account with `iam.gke.io/gcp-service-account=GSA_EMAIL`, or pass the Google \
                 service account as `service_account_email:`"
            ),
        ),
        403 => forbidden(&env, email, &detail),
        _ => by_status(status, email, &detail),
    };
    Error::new(kind, text)
}

impl Envelope {
    /// `HTTP 403 PERMISSION_DENIED: <Google's message>`, quoted in every error.
    fn detail(&self, status: u16) -> String {
        let label = if self.status.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status} {}", self.status)
        };
        if self.message.is_empty() {
            label
        } else {
            format!("{label}: {}", self.message)
        }
    }

    fn has_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|x| x == reason)
    }
}

/// A 403 has three causes with three different fixes: scope, disabled API, missing role.
fn forbidden(env: &Envelope, email: &str, detail: &str) -> (ErrorKind, String) {
    if env.has_reason("ACCESS_TOKEN_SCOPE_INSUFFICIENT")
        || env
            .message
            .to_ascii_lowercase()
            .contains("insufficient authentication scopes")
    {
        return (
            ErrorKind::InsufficientScope,
            format!(
                "signBlob for {email} refused the access token: it lacks the cloud-platform \
                 scope ({detail}). This is the failure of fog-google < 1.24.1 (issue \
                 599); this gem requests the right scope, so the token's scopes are fixed \
                 elsewhere: check the GKE node pool / GCE instance access scopes \
                 (cloud-platform), or what the metadata server at GCE_METADATA_HOST returns"
            ),
        );
    }
    if env.has_reason("SERVICE_DISABLED") {
        return (
            ErrorKind::ApiDisabled,
            format!(
                "the IAM Credentials API is disabled in the project ({detail}); enable it \
                 with `gcloud services enable iamcredentials.googleapis.com` (signing as {email})"
            ),
        );
    }
    (
        ErrorKind::PermissionDenied,
        format!(
            "signBlob as {email} was denied ({detail}). The signer needs \
             iam.serviceAccounts.signBlob on the account: `gcloud iam service-accounts \
             add-iam-policy-binding {email} --member=serviceAccount:{email} \
             --role=roles/iam.serviceAccountTokenCreator` (new bindings take 2-7 minutes to \
             apply; an unknown account also answers 403)"
        ),
    )
}

/// Every other status: its kind decides whether the retry loop tries again.
fn by_status(status: u16, email: &str, detail: &str) -> (ErrorKind, String) {
    match status {
        401 => (
            ErrorKind::Unauthenticated,
            format!(
                "signBlob for {email} rejected a freshly fetched access token ({detail}); \
                 check that the metadata server or credentials file issues tokens for this project"
            ),
        ),
        404 => (
            ErrorKind::PermissionDenied,
            format!(
                "signBlob found no service account {email} ({detail}); check the \
                 `service_account_email:` option or the impersonation target, and that the \
                 account exists and is enabled"
            ),
        ),
        429 => (
            ErrorKind::Quota,
            format!(
                "signBlob quota exhausted while signing as {email} ({detail}); the project \
                 allows 60,000 signBlob+signJwt calls per minute for all pods together: lower \
                 `max_sign_blob_per_minute:`, lengthen URL lifetimes so the cache serves more, or ask for \
                 more quota"
            ),
        ),
        s if retry::is_retryable_status(s) => (
            ErrorKind::Unavailable,
            format!("signBlob for {email} kept failing ({detail}); IAM may be degraded"),
        ),
        _ => (
            ErrorKind::Protocol,
            format!("signBlob for {email} answered an unexpected {detail}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope_json(code: u16, status: &str, message: &str, reason: Option<&str>) -> String {
        let details = match reason {
            Some(r) => {
                serde_json::json!([{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r }])
            }
            None => serde_json::json!([]),
        };
        serde_json::json!({"error": {"code": code, "status": status, "message": message, "details": details}})
            .to_string()
    }

    const EMAIL: &str = "signer@proj.iam.gserviceaccount.com";

    #[test]
    fn error_mapping() {
        let cases = [
            (
                403,
                envelope_json(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.", None),
                ErrorKind::InsufficientScope,
                "issue 599",
            ),
            (
                403,
                envelope_json(403, "PERMISSION_DENIED", "denied", Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT")),
                ErrorKind::InsufficientScope,
                "cloud-platform",
            ),
            (
                403,
                envelope_json(403, "PERMISSION_DENIED", "IAM Service Account Credentials API has not been used", Some("SERVICE_DISABLED")),
                ErrorKind::ApiDisabled,
                "gcloud services enable iamcredentials.googleapis.com",
            ),
            (
                403,
                envelope_json(403, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.signBlob' denied", Some("IAM_PERMISSION_DENIED")),
                ErrorKind::PermissionDenied,
                "roles/iam.serviceAccountTokenCreator",
            ),
            (
                400,
                envelope_json(400, "INVALID_ARGUMENT", "Invalid form of account ID proj.svc.id.goog. Should be [Gaia ID |Email |Unique ID |] of the account", None),
                ErrorKind::WorkloadIdentity,
                "iam.gke.io/gcp-service-account",
            ),
            (404, envelope_json(404, "NOT_FOUND", "not found", None), ErrorKind::PermissionDenied, "no service account"),
            (429, envelope_json(429, "RESOURCE_EXHAUSTED", "quota", None), ErrorKind::Quota, "60,000"),
            (503, "<html>".into(), ErrorKind::Unavailable, "HTTP 503"),
            (418, "".into(), ErrorKind::Protocol, "HTTP 418"),
        ];
        for (status, body, kind, needle) in cases {
            let e = map_error(status, &body, EMAIL);
            assert_eq!(e.kind(), kind, "{status} {body}");
            assert!(e.message().contains(needle), "{}", e.message());
            assert!(
                e.message().contains(EMAIL) || kind == ErrorKind::ApiDisabled,
                "{}",
                e.message()
            );
            assert!(e.message().contains(&status.to_string()), "{}", e.message());
        }
    }

    #[test]
    fn signed_blob_decodes_and_garbage_is_protocol() {
        let ok = interpret(200, r#"{"keyId":"k","signedBlob":"AQID"}"#, EMAIL).unwrap();
        assert_eq!(ok, vec![1, 2, 3]);
        for body in ["", "{", r#"{"keyId":"k"}"#, r#"{"signedBlob":"!!"}"#] {
            assert_eq!(
                interpret(200, body, EMAIL).unwrap_err().kind(),
                ErrorKind::Protocol
            );
        }
    }

    #[test]
    fn an_attempt_gets_half_the_budget_and_at_least_five_seconds() {
        assert_eq!(attempt_timeout(Duration::from_secs(1)), ATTEMPT_TIMEOUT);
        assert_eq!(attempt_timeout(Duration::from_secs(10)), ATTEMPT_TIMEOUT);
        assert_eq!(
            attempt_timeout(Duration::from_secs(20)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn body_and_path_encoding() {
        assert_eq!(percent_encode("a.b-c_d~@x+y"), "a.b-c_d~%40x%2By");
        let b: serde_json::Value = serde_json::from_str(&request_body(b"hi", &[])).unwrap();
        assert_eq!(b, serde_json::json!({"payload": "aGk="}));
        let d = vec![
            "a@p.iam.gserviceaccount.com".to_string(),
            "projects/-/serviceAccounts/b@p".to_string(),
        ];
        let b: serde_json::Value = serde_json::from_str(&request_body(b"hi", &d)).unwrap();
        assert_eq!(
            b["delegates"],
            serde_json::json!([
                "projects/-/serviceAccounts/a@p.iam.gserviceaccount.com",
                "projects/-/serviceAccounts/b@p"
            ])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_throttles_and_respects_the_deadline() {
        let guard = Guard::new(QuotaConfig {
            max_per_minute: 60,
            max_in_flight: 4,
        });
        let stats = Stats::default();
        let start = Instant::now();
        let far = start + Duration::from_secs(60);
        let throttled = AtomicBool::new(false);
        // Burst: a tenth of a minute's worth, at least 1.
        for _ in 0..6 {
            guard.take(far, &stats, &throttled).await.unwrap();
        }
        assert!(!throttled.load(Ordering::Relaxed));
        assert_eq!(Instant::now(), start);
        // The 7th waits about a second for a refill (60 per minute).
        guard.take(far, &stats, &throttled).await.unwrap();
        assert!(throttled.load(Ordering::Relaxed));
        assert!(Instant::now() - start >= Duration::from_millis(990));
        assert_eq!(Stats::get(&stats.throttled), 1);
        // A wait beyond the deadline fails at once with a Quota error.
        let near = Instant::now() + Duration::from_millis(10);
        let e = guard
            .take(near, &stats, &AtomicBool::new(false))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Quota);
        assert!(e.message().contains("client-side quota guard"));
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_limit_waits_then_gives_up_at_the_deadline() {
        let guard = Guard::new(QuotaConfig {
            max_per_minute: 6000,
            max_in_flight: 1,
        });
        let stats = Stats::default();
        let held = guard
            .admit(Instant::now() + Duration::from_secs(1), &stats)
            .await
            .unwrap();
        let e = guard
            .admit(Instant::now() + Duration::from_millis(100), &stats)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Quota);
        assert!(e.message().contains("client-side quota guard"));
        drop(held);
        let _again = guard
            .admit(Instant::now() + Duration::from_millis(100), &stats)
            .await
            .unwrap();
        assert_eq!(Stats::get(&stats.throttled), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_holds_callers_until_it_ends() {
        let guard = Guard::new(QuotaConfig::default());
        let start = Instant::now();
        guard.cool_down(Duration::from_millis(300));
        // A shorter cool-down never shortens a longer one.
        guard.cool_down(Duration::from_millis(100));
        guard
            .wait_cooldown(start + Duration::from_secs(5))
            .await
            .unwrap();
        assert!(Instant::now() - start >= Duration::from_millis(300));
        guard.cool_down(Duration::from_secs(3));
        let e = guard
            .wait_cooldown(Instant::now() + Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Quota);
    }
}
