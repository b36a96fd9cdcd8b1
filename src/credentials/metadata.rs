//! The GCE / GKE metadata server: access tokens and the service account
//! email (docs/facts.md#metadata-server).
//!
//! The GKE metadata server is slow right after pod start (first tokens can
//! take over 2 s) and can answer 429, so each attempt gets a generous
//! timeout and transient failures are retried with backoff within a budget.

use super::Env;
use crate::blob::BoxFuture;
use crate::body::BodyError;
use crate::error::{describe, Error, ErrorKind, Result};
use crate::flight::{Policy, SingleFlight};
use crate::iam::EmailLookup;
use crate::process::{peek_mutex, ProcessLocal};
use crate::retry::{self, Backoff};
use crate::runtime;
use crate::token::{FetchedToken, TokenSource};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Same as `metadata.google.internal`, without needing DNS.
pub const DEFAULT_HOST: &str = crate::config::METADATA_HOST;
/// signBlob needs this scope; a storage-only token fails with 403
/// `ACCESS_TOKEN_SCOPE_INSUFFICIENT` (fog-google issue 599). GKE honours the
/// `scopes` parameter, GCE ignores it and uses the instance's scopes.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const TOKEN_PATH: &str =
    "instance/service-accounts/default/token?scopes=https://www.googleapis.com/auth/cloud-platform";
const EMAIL_PATH: &str = "instance/service-accounts/default/email";
const UNIVERSE_PATH: &str = "universe/universe-domain";

/// Never as short as the 0.5 s some clients use: a cold GKE metadata server
/// needs seconds for its first token.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Total time for one token or email lookup, retries included. Callers wait
/// with their own (usually shorter) deadline; a lookup they gave up on
/// still finishes and serves the next caller.
const BUDGET: Duration = Duration::from_secs(20);

/// A client's per-process part (src/process.rs): a forked child keeps the
/// email its parent had (if it can read it without waiting) and never waits
/// on the parent's lookup or locks.
#[derive(Debug, Default)]
struct Local {
    email: Arc<Mutex<Option<String>>>,
    lookup: SingleFlight<(), String>,
    /// Why the latest attempt failed (no secrets: a status or a transport
    /// error), for the message of a caller that times out while retries go on.
    last_failure: Mutex<Option<String>>,
}

/// Every process's clients by host, starting from a copy of the parent's
/// (src/process.rs).
static CLIENTS: ProcessLocal<Mutex<HashMap<String, Arc<MetadataClient>>>> = ProcessLocal::new();

/// A metadata server client. Constructing one does no I/O.
#[derive(Debug)]
pub struct MetadataClient {
    host: String,
    base: String,
    attempt_timeout: Duration,
    budget: Duration,
    local: ProcessLocal<Local>,
}

impl MetadataClient {
    /// `host` is the explicit option; else `GCE_METADATA_HOST` (host[:port],
    /// honoured by every Google client library); else 169.254.169.254.
    pub fn new(host: Option<&str>, env: &dyn Env) -> Arc<Self> {
        let host = host
            .map(str::to_string)
            .or_else(|| env.var("GCE_METADATA_HOST"))
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self::with_host(host.trim())
    }

    /// The process-wide client for `host`: like the token, the email is
    /// asked for once per process, not once per signer (a signer built per
    /// request must not cost a metadata round trip each, docs/facts.md#gitlab-urls).
    pub fn with_host(host: &str) -> Arc<Self> {
        let client = Self::with_timings(host, ATTEMPT_TIMEOUT, BUDGET);
        CLIENTS
            .get_or_init(|parent| {
                Mutex::new(
                    parent
                        .and_then(|p| peek_mutex(p, HashMap::clone))
                        .unwrap_or_default(),
                )
            })
            .lock()
            .entry(client.host.clone())
            .or_insert(client)
            .clone()
    }

    /// Custom timings, for tests against a loopback server.
    pub fn with_timings(host: &str, attempt_timeout: Duration, budget: Duration) -> Arc<Self> {
        let authority = host
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        Arc::new(MetadataClient {
            base: format!("http://{authority}/computeMetadata/v1/"),
            host: authority,
            attempt_timeout,
            budget,
            local: ProcessLocal::new(),
        })
    }

    fn local(&self) -> &Local {
        self.local.get_or_init(|parent| Local {
            email: Arc::new(Mutex::new(
                parent.and_then(|p| peek_mutex(&p.email, Option::clone).flatten()),
            )),
            ..Local::default()
        })
    }

    /// `host[:port]`, for identities and messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// A token source for [`crate::token::shared`].
    pub fn token_source(self: &Arc<Self>) -> MetadataTokenSource {
        MetadataTokenSource(self.clone())
    }

    /// An access token with the cloud-platform scope.
    pub async fn fetch_token(&self) -> Result<FetchedToken> {
        let body = self.get(TOKEN_PATH, "token").await?;
        // The body holds the token: never quote it in an error.
        let protocol = || {
            Error::new(
                ErrorKind::Protocol,
                format!(
                    "the metadata server at {} answered the token request ({}) with a body that is \
                     not a token response (expected JSON with access_token and expires_in)",
                    self.host, TOKEN_PATH
                ),
            )
        };
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|_| protocol())?;
        let value = v["access_token"].as_str().filter(|s| !s.is_empty());
        let expires_in = v["expires_in"].as_u64();
        match (value, expires_in) {
            (Some(value), Some(secs)) => Ok(FetchedToken {
                value: value.to_string(),
                expires_in: Duration::from_secs(secs),
            }),
            _ => Err(protocol()),
        }
    }

    /// The default service account's email, checked for the unmapped GKE
    /// Workload Identity case. Asks the server every time; see [`Self::email`].
    pub async fn fetch_email(&self) -> Result<String> {
        let body = self.get(EMAIL_PATH, "email").await?;
        let email = body.trim().to_string();
        if email.ends_with(".svc.id.goog") {
            return Err(unmapped_workload_identity(&email));
        }
        if email.is_empty() || email.contains(char::is_whitespace) || !email.contains('@') {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "the metadata server at {} answered {} with something that is not an email",
                    self.host, EMAIL_PATH
                ),
            ));
        }
        Ok(email)
    }

    /// The universe domain the metadata server names
    /// (`universe/universe-domain`); its 404 means `googleapis.com`.
    pub async fn fetch_universe(&self) -> Result<String> {
        match self.get(UNIVERSE_PATH, "universe domain").await {
            Ok(body) => Ok(body.trim().to_string()),
            Err(e)
                if e.kind() == ErrorKind::Metadata && e.message().contains("(HTTP 404 from ") =>
            {
                Ok(crate::universe::DEFAULT.to_string())
            }
            Err(e) => Err(e),
        }
    }

    /// The email, asked for once per process (single flight) and remembered.
    /// A failure is not remembered.
    pub async fn email(self: &Arc<Self>) -> Result<String> {
        let local = self.local();
        let ticket = {
            let email = local.email.lock();
            if let Some(e) = email.as_ref() {
                return Ok(e.clone());
            }
            let (this, slot) = (self.clone(), local.email.clone());
            local
                .lookup
                .join(&(), Policy::RunToEnd, move || async move {
                    let email = this.fetch_email().await?;
                    *slot.lock() = Some(email.clone());
                    Ok(email)
                })
        };
        ticket.wait().await
    }

    /// Test hook (src/process.rs): the email's, lookup table's and last
    /// failure's locks.
    #[cfg(test)]
    pub(crate) fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        let local = self.local();
        vec![
            crate::process::mutex_holder("metadata email", &local.email),
            local.lookup.holder("metadata email lookup table"),
            crate::process::mutex_holder("metadata last failure", &local.last_failure),
        ]
    }

    /// Test hook (src/process.rs): the client registry's lock.
    #[cfg(test)]
    pub(crate) fn registry_holder() -> crate::process::Holder<'static> {
        (
            "metadata client registry",
            Box::new(|park: &dyn Fn()| {
                let _held = CLIENTS.current().map(|c| c.lock());
                park();
            }),
        )
    }

    /// Why the latest request to this server failed, while it is failing.
    pub fn last_failure(&self) -> Option<String> {
        self.local().last_failure.lock().clone()
    }

    /// The email if it was already fetched (no I/O).
    pub fn cached_email(&self) -> Option<String> {
        self.local().email.lock().clone()
    }

    async fn get(&self, path: &str, what: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + self.budget;
        let url = format!("{}{}", self.base, path);
        let result = retry::retry(
            deadline,
            Backoff::default(),
            || self.attempt(&url, path),
            |e, delay| {
                *self.local().last_failure.lock() = Some(e.message().to_string());
                crate::events::retry("metadata", e, delay);
            },
        )
        .await;
        *self.local().last_failure.lock() = match &result {
            Ok(_) => None,
            Err(e) => Some(e.message().to_string()),
        };
        result.map_err(|e| match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Quota => Error::new(
                ErrorKind::Metadata,
                format!(
                    "could not get the {what} from the metadata server at {}: {}. Outside GCE/GKE, \
                     pass `credentials:` (a key file or an impersonated_service_account file); \
                     with an emulator, set `metadata_host:` or GCE_METADATA_HOST",
                    self.host,
                    e.message()
                ),
            )
            .from_outage(),
            _ => e,
        })
    }

    async fn attempt(&self, url: &str, path: &str) -> Result<String> {
        let resp = self.send(url, path).await?;
        self.check_status(&resp, path)?;
        self.read_body(resp, path).await
    }

    /// One GET with the `Metadata-Flavor` header; transport errors classified for the retry loop.
    async fn send(&self, url: &str, path: &str) -> Result<reqwest::Response> {
        let client = runtime::direct_http()?;
        client
            .get(url)
            .header("Metadata-Flavor", "Google")
            .timeout(self.attempt_timeout)
            .send()
            .await
            .map_err(|e| self.transport_error(&e, path))
    }

    fn transport_error(&self, e: &reqwest::Error, path: &str) -> Error {
        if no_route(e) {
            // No route to the address at all: not on GCE/GKE (or no
            // network). Retrying cannot help, so say so at once
            // instead of waiting out the caller's deadline.
            return Error::new(
                ErrorKind::Metadata,
                format!(
                    "cannot reach the metadata server at {}: {} ({}). Outside GCE/GKE, \
                     pass `credentials:` (a key file or an impersonated_service_account \
                     file); with an emulator, set `metadata_host:` or GCE_METADATA_HOST",
                    self.host,
                    path,
                    describe(e)
                ),
            );
        }
        let kind = if retry::is_retryable_transport(e) {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Metadata
        };
        Error::new(kind, format!("request to {path} failed ({})", describe(e)))
    }

    /// Only a genuine metadata server's 200 is read; transient statuses are retried.
    fn check_status(&self, resp: &reqwest::Response, path: &str) -> Result<()> {
        let status = resp.status().as_u16();
        let genuine = resp
            .headers()
            .get("metadata-flavor")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"Google"));
        if !genuine {
            // A proxy, a captive portal or a wrong GCE_METADATA_HOST: its
            // answer must not be trusted as a token.
            return Err(Error::new(
                ErrorKind::Metadata,
                format!(
                    "{} is not a genuine metadata server: its HTTP {status} answer to {path} lacks \
                     the `Metadata-Flavor: Google` header. Check GCE_METADATA_HOST / \
                     `metadata_host:` and any HTTP proxy settings",
                    self.host
                ),
            ));
        }
        if retry::is_retryable_status(status) {
            return Err(Error::new(
                if status == 429 {
                    ErrorKind::Quota
                } else {
                    ErrorKind::Unavailable
                },
                format!("HTTP {status} from {path}"),
            ));
        }
        if status == 404 {
            return Err(Error::new(
                ErrorKind::Metadata,
                format!(
                    "the metadata server at {} has no default service account (HTTP 404 from \
                     {path}): attach a service account to the GCE instance or enable Workload \
                     Identity on the GKE node pool",
                    self.host
                ),
            ));
        }
        if status != 200 {
            return Err(Error::new(
                ErrorKind::Metadata,
                format!(
                    "the metadata server at {} answered HTTP {status} to {path}",
                    self.host
                ),
            ));
        }
        Ok(())
    }

    /// The body, capped: no metadata answer is large, so a big one is a wrong endpoint.
    async fn read_body(&self, resp: reqwest::Response, path: &str) -> Result<String> {
        crate::body::read_capped(resp).await.map_err(|e| match e {
            BodyError::TooLarge => Error::new(
                ErrorKind::Protocol,
                format!(
                    "the metadata server at {} answered {path} with more than {} KiB, which no \
                     metadata answer is; check GCE_METADATA_HOST / `metadata_host:`",
                    self.host,
                    crate::body::MAX_BODY / 1024
                ),
            ),
            BodyError::Transport(e) => Error::new(
                ErrorKind::Unavailable,
                format!("reading the answer to {path} failed ({})", describe(&e)),
            ),
        })
    }
}

/// The GKE Workload Identity misconfiguration of docs/facts.md#workload-identity: the pod's
/// identity is the workload pool itself, which has no key to sign with.
fn unmapped_workload_identity(email: &str) -> Error {
    let project = email.trim_end_matches(".svc.id.goog");
    Error::new(
        ErrorKind::WorkloadIdentity,
        format!(
            "GKE Workload Identity is on, but the pod's Kubernetes service account is not mapped to \
             a Google service account: the metadata server reports `{email}`, which cannot sign. \
             Annotate the Kubernetes service account: `kubectl annotate serviceaccount KSA \
             --namespace NAMESPACE iam.gke.io/gcp-service-account=GSA@{project}.iam.gserviceaccount.com`, \
             allow it to act as the Google service account: `gcloud iam service-accounts \
             add-iam-policy-binding GSA@{project}.iam.gserviceaccount.com \
             --role=roles/iam.workloadIdentityUser \
             --member=\"serviceAccount:{project}.svc.id.goog[NAMESPACE/KSA]\"`, and restart the pod; \
             or pass the Google service account as `service_account_email:`"
        ),
    )
}

/// ENETUNREACH / EHOSTUNREACH somewhere in the error chain: the kernel has
/// no route to the metadata address (a machine outside Google Cloud, or a
/// network namespace with only loopback), unlike a refused or slow
/// connection, which a metadata server that is starting up can cause.
fn no_route(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::NetworkUnreachable | std::io::ErrorKind::HostUnreachable
            ) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// The metadata server's default account email, for the signBlob client.
#[derive(Debug, Clone)]
pub struct MetadataEmail(pub Arc<MetadataClient>);

impl EmailLookup for MetadataEmail {
    fn origin(&self) -> &str {
        self.0.host()
    }

    fn cached(&self) -> Option<String> {
        self.0.cached_email()
    }

    fn lookup(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(self.0.email())
    }

    fn last_failure(&self) -> Option<String> {
        self.0.last_failure()
    }

    #[cfg(test)]
    fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        self.0.lock_holders()
    }
}

/// Tokens from the metadata server.
#[derive(Debug, Clone)]
pub struct MetadataTokenSource(Arc<MetadataClient>);

impl TokenSource for MetadataTokenSource {
    fn fetch(&self) -> BoxFuture<'static, Result<FetchedToken>> {
        let client = self.0.clone();
        Box::pin(async move { client.fetch_token().await })
    }
}
