//! Application Default Credentials discovery (docs/facts.md#adc), with no
//! network I/O: the first token or email lookup happens on first use, so
//! building a signer at boot (before Puma or Sidekiq fork) is safe and fast.
//!
//! Order: the `credentials:` option, `GOOGLE_APPLICATION_CREDENTIALS`,
//! gcloud's `application_default_credentials.json`, the metadata server.

pub mod impersonated;
pub mod metadata;
pub mod service_account;

use crate::blob::BlobSigner;
use crate::error::{Error, ErrorKind, Result};
pub use crate::iam::QuotaConfig;
use crate::iam::{self, EmailSource, IamConfig, IamSigner};
use crate::stats::Stats;
use crate::token;
use crate::universe;
use metadata::MetadataClient;
use service_account::ServiceAccountKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::env::{Env, ProcessEnv};

#[derive(Debug, Clone)]
pub struct CredentialOptions {
    /// A credentials file path, or the JSON text itself.
    pub credentials: Option<String>,
    /// Sign as this account through IAM (overrides the metadata email).
    pub service_account_email: Option<String>,
    /// `host[:port]` of the metadata server (else `GCE_METADATA_HOST`).
    pub metadata_host: Option<String>,
    /// Base URL of IAM Credentials (else `GCS_SIGNER_IAM_ENDPOINT`).
    pub iam_endpoint: Option<String>,
    /// signBlob delegation chain.
    pub delegates: Vec<String>,
    /// The universe domain (else `GOOGLE_CLOUD_UNIVERSE_DOMAIN`, else the
    /// credentials file's field, else `googleapis.com`): sets the default
    /// IAM endpoint, see [`crate::universe`].
    pub universe_domain: Option<String>,
    /// Ask the metadata server for the universe when neither the option
    /// nor `GOOGLE_CLOUD_UNIVERSE_DOMAIN` names one and the credentials are
    /// the metadata server's (off by default, like googleauth's check).
    pub universe_from_metadata: bool,
    pub quota: QuotaConfig,
    /// Overall budget of one signBlob signature, retries included.
    pub timeout: Duration,
}

impl Default for CredentialOptions {
    fn default() -> Self {
        CredentialOptions {
            credentials: None,
            service_account_email: None,
            metadata_host: None,
            iam_endpoint: None,
            delegates: Vec::new(),
            universe_domain: None,
            universe_from_metadata: false,
            quota: QuotaConfig::default(),
            timeout: iam::DEFAULT_TIMEOUT,
        }
    }
}

/// Finds the credentials to sign with, reading the process environment.
pub fn discover(opts: &CredentialOptions, stats: Arc<Stats>) -> Result<Arc<dyn BlobSigner>> {
    discover_with(opts, stats, &ProcessEnv)
}

/// [`discover`] with an injected environment.
pub fn discover_with(
    opts: &CredentialOptions,
    stats: Arc<Stats>,
    env: &dyn Env,
) -> Result<Arc<dyn BlobSigner>> {
    discover_universe_with(opts, stats, env).map(|(signer, _)| signer)
}

/// [`discover`], with the universe domain in force (see [`universe::resolve`]).
pub fn discover_universe(
    opts: &CredentialOptions,
    stats: Arc<Stats>,
) -> Result<(Arc<dyn BlobSigner>, String)> {
    discover_universe_with(opts, stats, &ProcessEnv)
}

/// [`discover_universe`] with an injected environment.
pub fn discover_universe_with(
    opts: &CredentialOptions,
    stats: Arc<Stats>,
    env: &dyn Env,
) -> Result<(Arc<dyn BlobSigner>, String)> {
    if let Some(c) = opts.credentials.as_deref().filter(|c| !c.trim().is_empty()) {
        // A byte-order mark (a key file saved by a Windows editor) is not
        // whitespace to trim_start, but it is still JSON text, not a path.
        let text = c.trim_start_matches('\u{feff}');
        if text.trim_start().starts_with('{') {
            return from_json(text, "the `credentials:` JSON", opts, stats, env);
        }
        return from_file(c, "the `credentials:` option", opts, stats, env);
    }
    if let Some(path) = env
        .var("GOOGLE_APPLICATION_CREDENTIALS")
        .filter(|p| !p.is_empty())
    {
        return from_file(&path, "GOOGLE_APPLICATION_CREDENTIALS", opts, stats, env);
    }
    if let Some(path) = gcloud_adc_path(env).filter(|p| p.is_file()) {
        let path = path.to_string_lossy().into_owned();
        return from_file(
            &path,
            "gcloud's application default credentials",
            opts,
            stats,
            env,
        );
    }
    let metadata = MetadataClient::new(opts.metadata_host.as_deref(), env);
    let universe = if opts.universe_from_metadata
        && !universe::configured(opts.universe_domain.as_deref(), env)
    {
        metadata_universe(&metadata, opts.timeout)?
    } else {
        universe::resolve(opts.universe_domain.as_deref(), env, None)?
    };
    let opts = &in_universe(opts, &universe);
    Ok((
        Arc::new(metadata_signer(metadata, opts, stats, env)?),
        universe,
    ))
}

/// The metadata server's universe (a blocking lookup: only with
/// `universe_from_metadata`, when the signer is built).
fn metadata_universe(metadata: &Arc<MetadataClient>, timeout: Duration) -> Result<String> {
    let m = metadata.clone();
    let deadline = std::time::Instant::now() + timeout;
    let found = crate::runtime::block_on(
        async move { m.fetch_universe().await },
        &crate::cancel::Cancel::new(),
        Some(deadline),
    )?;
    universe::normalize(&found, "the metadata server")
}

fn in_universe(opts: &CredentialOptions, universe: &str) -> CredentialOptions {
    CredentialOptions {
        universe_domain: Some(universe.to_string()),
        ..opts.clone()
    }
}

/// `$CLOUDSDK_CONFIG` or `$HOME/.config/gcloud`, as gcloud itself uses.
fn gcloud_adc_path(env: &dyn Env) -> Option<PathBuf> {
    let dir = match env.var("CLOUDSDK_CONFIG").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env.var("HOME").filter(|h| !h.is_empty())?).join(".config/gcloud"),
    };
    Some(dir.join("application_default_credentials.json"))
}

/// signBlob as the metadata server's account (or `service_account_email:`),
/// with the metadata server's token shared process-wide per host.
pub fn metadata_signer(
    metadata: Arc<MetadataClient>,
    opts: &CredentialOptions,
    stats: Arc<Stats>,
    env: &dyn Env,
) -> Result<IamSigner> {
    let tokens = token::shared(
        &format!("metadata:{}", metadata.host()),
        metadata.token_source(),
    );
    let email = match opts
        .service_account_email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(e) => EmailSource::Known(e.to_string()),
        None => EmailSource::Metadata(Arc::new(metadata::MetadataEmail(metadata))),
    };
    let config = IamConfig {
        email,
        endpoint: iam_endpoint(opts, env)?,
        delegates: opts.delegates.clone(),
        quota: opts.quota,
        timeout: opts.timeout,
    };
    Ok(IamSigner::new(config, tokens, stats))
}

/// `iam_endpoint:`, else `GCS_SIGNER_IAM_ENDPOINT`, else the universe's
/// (`https://iamcredentials.googleapis.com` in Google's public cloud).
pub(crate) fn iam_endpoint(opts: &CredentialOptions, env: &dyn Env) -> Result<String> {
    let endpoint = opts
        .iam_endpoint
        .clone()
        .or_else(|| env.var("GCS_SIGNER_IAM_ENDPOINT"))
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| match opts.universe_domain.as_deref() {
            Some(u) if u != universe::DEFAULT => universe::iam_endpoint(u),
            _ => iam::DEFAULT_ENDPOINT.to_string(),
        });
    let endpoint = endpoint.trim().trim_end_matches('/').to_string();
    if endpoint.starts_with("https://") {
        return Ok(endpoint);
    }
    match endpoint.strip_prefix("http://") {
        // The access token travels in the Authorization header: in clear
        // only to this machine (an emulator), never over a network.
        Some(rest) if is_loopback_authority(rest) => Ok(endpoint),
        Some(_) => Err(Error::invalid(format!(
            "the IAM endpoint `{endpoint}` (from `iam_endpoint:` or GCS_SIGNER_IAM_ENDPOINT) uses \
             http://, which would send the access token in clear: http:// is allowed only to a \
             loopback address (127.0.0.1, [::1] or localhost, for an emulator); use https://"
        ))),
        None => Err(Error::invalid(format!(
            "the IAM endpoint `{endpoint}` (from `iam_endpoint:` or GCS_SIGNER_IAM_ENDPOINT) must \
             start with https:// (or http:// to a loopback address, for an emulator)"
        ))),
    }
}

/// Whether the authority of `rest` (what follows `http://`) is a loopback
/// host: an address in 127.0.0.0/8, `[::1]`, or `localhost` (RFC 6761 s.6.3),
/// with an optional port. User info (`127.0.0.1@host`) is refused: the host
/// would be what follows the `@`.
fn is_loopback_authority(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((addr, port)) => {
                let ok = addr
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|a| a.is_loopback());
                (ok, port)
            }
            None => return false,
        }
    } else {
        let host = authority.split(':').next().unwrap_or_default();
        let ok = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|a| a.is_loopback());
        (ok, &authority[host.len()..])
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok());
    host && port_ok
}

fn from_file(
    path: &str,
    via: &str,
    opts: &CredentialOptions,
    stats: Arc<Stats>,
    env: &dyn Env,
) -> Result<(Arc<dyn BlobSigner>, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if !looks_like_path(path) {
            // Not a path but mangled JSON (or a PEM key) given as a path:
            // quoting it would print the private key.
            return Error::new(
                ErrorKind::Credentials,
                format!(
                    "{via} is neither JSON text starting with '{{' nor a readable file path \
                     ({} bytes, not shown: it may hold a key); pass the path of a service account \
                     key file, its JSON text, or a Hash",
                    path.len()
                ),
            );
        }
        Error::new(
            ErrorKind::Credentials,
            format!("cannot read the credentials file {path} (from {via}): {e}"),
        )
    })?;
    let origin = format!("the credentials file {path} (from {via})");
    from_json(&text, &origin, opts, stats, env)
}

/// Short, one line, no JSON or PEM markers: safe to quote in a message.
fn looks_like_path(path: &str) -> bool {
    path.len() <= 4096
        && !path.chars().any(char::is_control)
        && !path.contains('{')
        && !path.contains("-----")
}

/// `origin` names where the JSON came from; the JSON itself (which may hold
/// a private key or refresh token) never appears in a message.
fn from_json(
    text: &str,
    origin: &str,
    opts: &CredentialOptions,
    stats: Arc<Stats>,
    env: &dyn Env,
) -> Result<(Arc<dyn BlobSigner>, String)> {
    let v = parse_json(text, origin)?;
    let universe = universe::resolve(
        opts.universe_domain.as_deref(),
        env,
        v["universe_domain"].as_str(),
    )?;
    let opts = &in_universe(opts, &universe);
    let signer: Arc<dyn BlobSigner> = match v["type"].as_str() {
        Some("service_account") => Arc::new(ServiceAccountKey::from_json(text)?),
        Some("impersonated_service_account") => {
            Arc::new(impersonated::signer(&v, origin, opts, stats, env)?)
        }
        other => return Err(unsupported_type(origin, other)),
    };
    Ok((signer, universe))
}

/// The file as JSON; a syntax error names its position, never the file's content.
fn parse_json(text: &str, origin: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::new(
            ErrorKind::Credentials,
            format!(
                "{origin} is not valid JSON (syntax error at line {}, column {}); expected a \
                 service account key or an impersonated_service_account file",
                e.line(),
                e.column()
            ),
        )
    })
}

/// A credentials `type` that cannot sign URLs, each with its own way out.
fn unsupported_type(origin: &str, kind: Option<&str>) -> Error {
    match kind {
        Some("authorized_user") => cannot_sign(
            origin,
            "`authorized_user` credentials (a person's login from `gcloud auth \
             application-default login`)",
        ),
        Some("external_account") => cannot_sign(
            origin,
            "`external_account` credentials (workload identity federation)",
        ),
        Some(other) => Error::new(
            ErrorKind::Credentials,
            format!(
                "{origin} has credentials of type `{other}`, which this gem does not know; \
                 expected `service_account` or `impersonated_service_account`"
            ),
        ),
        None => Error::new(
            ErrorKind::Credentials,
            format!(
                "{origin} has no `type` field; expected a service account key or an \
                 impersonated_service_account file"
            ),
        ),
    }
}

fn cannot_sign(origin: &str, what: &str) -> Error {
    Error::new(
        ErrorKind::Credentials,
        format!(
            "{origin} holds {what}, which can get access tokens but cannot sign URLs: signing \
             needs a service account. Use one of: run on GKE with Workload Identity (no file \
             needed); impersonate a service account with `gcloud auth application-default login \
             --impersonate-service-account=SA_EMAIL` (your account needs \
             roles/iam.serviceAccountTokenCreator on SA_EMAIL); or pass a service account key \
             file as `credentials:`"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn tmp(name: &str, content: &str) -> String {
        let dir = std::env::temp_dir().join(format!("gcs-signer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }

    fn discover_in(
        opts: &CredentialOptions,
        e: &HashMap<String, String>,
    ) -> Result<Arc<dyn BlobSigner>> {
        discover_with(opts, Arc::new(Stats::default()), e)
    }

    #[test]
    fn metadata_is_the_fallback_and_does_no_io() {
        // 192.0.2.1 (TEST-NET-1) would hang if anything connected to it.
        let e = env(&[
            ("GCE_METADATA_HOST", "192.0.2.1:1"),
            ("HOME", "/nonexistent"),
        ]);
        let s = discover_in(&CredentialOptions::default(), &e).unwrap();
        assert_eq!(s.identity(), "iam:metadata:192.0.2.1:1");
        assert!(s.uses_sign_blob());
        assert_eq!(s.email_now(), None);
    }

    #[test]
    fn explicit_email_is_known_without_io() {
        let opts = CredentialOptions {
            service_account_email: Some("gsa@p.iam.gserviceaccount.com".into()),
            metadata_host: Some("192.0.2.1:1".into()),
            ..Default::default()
        };
        let s = discover_in(&opts, &env(&[])).unwrap();
        assert_eq!(
            s.email_now().as_deref(),
            Some("gsa@p.iam.gserviceaccount.com")
        );
        assert_eq!(s.identity(), "iam:gsa@p.iam.gserviceaccount.com");
    }

    #[test]
    fn key_files_dispatch_to_the_local_signer() {
        const KEY: &str =
            include_str!("../../spec/fixtures/conformance/test_service_account.not-a-test.json");
        const EMAIL: &str = "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com";
        let path = tmp("key.json", KEY);
        let e = env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]);
        let s = discover_in(&CredentialOptions::default(), &e).unwrap();
        assert!(!s.uses_sign_blob());
        assert_eq!(s.email_now().as_deref(), Some(EMAIL));
        // The option wins over the environment, and may be JSON text.
        let opts = CredentialOptions {
            credentials: Some(KEY.replace(EMAIL, "other@dummy-project-id.iam.gserviceaccount.com")),
            ..Default::default()
        };
        let s = discover_in(&opts, &e).unwrap();
        assert_eq!(
            s.email_now().as_deref(),
            Some("other@dummy-project-id.iam.gserviceaccount.com")
        );
    }

    #[test]
    fn gcloud_adc_file_is_found_under_home() {
        let home = std::env::temp_dir().join(format!("gcs-signer-home-{}", std::process::id()));
        let dir = home.join(".config/gcloud");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("application_default_credentials.json"),
            r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#,
        )
        .unwrap();
        let e = env(&[("HOME", home.to_str().unwrap())]);
        let err = discover_in(&CredentialOptions::default(), &e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        assert!(err
            .message()
            .contains("gcloud's application default credentials"));
        assert!(err.message().contains("--impersonate-service-account"));
        assert!(err.message().contains("Workload Identity"));
    }

    #[test]
    fn user_and_external_credentials_explain_what_works() {
        for ty in ["authorized_user", "external_account"] {
            let opts = CredentialOptions {
                credentials: Some(format!(r#"{{"type":"{ty}","refresh_token":"SECRET-RT"}}"#)),
                ..Default::default()
            };
            let err = discover_in(&opts, &env(&[])).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Credentials);
            assert!(err.message().contains(ty));
            assert!(err
                .message()
                .contains("gcloud auth application-default login --impersonate-service-account"));
            assert!(!err.message().contains("SECRET"));
        }
    }

    #[test]
    fn bad_files_name_the_path_never_the_content() {
        let path = tmp("garbage.json", "{\"private_key\": \"SECRET-KEY\" oops");
        let opts = CredentialOptions {
            credentials: Some(path.clone()),
            ..Default::default()
        };
        let err = discover_in(&opts, &env(&[])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        assert!(err.message().contains(&path));
        assert!(!err.message().contains("SECRET"));

        let path = tmp("unknown.json", r#"{"type":"martian","secret":"SECRET-X"}"#);
        let e = env(&[("GOOGLE_APPLICATION_CREDENTIALS", &path)]);
        let err = discover_in(&CredentialOptions::default(), &e).unwrap_err();
        assert!(err.message().contains("martian") && err.message().contains(&path));
        assert!(!err.message().contains("SECRET"));

        let e = env(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/creds.json")]);
        let err = discover_in(&CredentialOptions::default(), &e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        assert!(err.message().contains("/nonexistent/creds.json"));
        assert!(err.message().contains("GOOGLE_APPLICATION_CREDENTIALS"));
    }

    #[test]
    fn credentials_that_are_neither_json_nor_a_path_are_not_quoted() {
        const KEY: &str =
            include_str!("../../spec/fixtures/conformance/test_service_account.not-a-test.json");
        let pem_line = KEY.split("\\n").nth(1).unwrap();
        let pem = KEY
            .split('"')
            .find(|f| f.starts_with("-----BEGIN"))
            .unwrap();
        // A BOM before the JSON is still JSON.
        let opts = CredentialOptions {
            credentials: Some(format!("\u{feff}{KEY}")),
            ..Default::default()
        };
        assert!(!discover_in(&opts, &env(&[])).unwrap().uses_sign_blob());
        // Mangled JSON and bare PEM are refused without being echoed.
        for mangled in [
            format!("[{KEY}]"),
            KEY.replace('{', "("),
            pem.to_string(),
            pem.replace("\\n", "\n"),
        ] {
            let opts = CredentialOptions {
                credentials: Some(mangled),
                ..Default::default()
            };
            let err = discover_in(&opts, &env(&[])).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Credentials);
            assert!(!err.message().contains(pem_line), "{}", err.message());
            assert!(err.message().contains("neither JSON"), "{}", err.message());
        }
    }

    #[test]
    fn impersonation_files_sign_as_the_target() {
        let file = r#"{
          "type": "impersonated_service_account",
          "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/target@p.iam.gserviceaccount.com:generateAccessToken",
          "delegates": [],
          "source_credentials": {"type": "authorized_user", "client_id": "cid", "client_secret": "cs", "refresh_token": "rt"}
        }"#;
        let opts = CredentialOptions {
            credentials: Some(file.into()),
            ..Default::default()
        };
        let s = discover_in(&opts, &env(&[])).unwrap();
        assert!(s.uses_sign_blob());
        assert_eq!(
            s.email_now().as_deref(),
            Some("target@p.iam.gserviceaccount.com")
        );

        let broken = file.replace("service_account_impersonation_url", "url");
        let opts = CredentialOptions {
            credentials: Some(broken),
            ..Default::default()
        };
        let err = discover_in(&opts, &env(&[])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Credentials);
        assert!(err.message().contains("service_account_impersonation_url"));
    }

    #[test]
    fn iam_endpoint_resolution() {
        let opts = CredentialOptions::default();
        assert_eq!(
            iam_endpoint(&opts, &env(&[])).unwrap(),
            iam::DEFAULT_ENDPOINT
        );
        let e = env(&[("GCS_SIGNER_IAM_ENDPOINT", "http://127.0.0.1:9/")]);
        assert_eq!(iam_endpoint(&opts, &e).unwrap(), "http://127.0.0.1:9");
        let opts = CredentialOptions {
            iam_endpoint: Some("127.0.0.1:9".into()),
            ..Default::default()
        };
        assert_eq!(
            iam_endpoint(&opts, &e).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    /// Issue 15 M2: the bearer token never goes over cleartext HTTP to
    /// anything but this machine.
    #[test]
    fn http_iam_endpoints_only_on_loopback() {
        let with = |url: &str| CredentialOptions {
            iam_endpoint: Some(url.into()),
            ..Default::default()
        };
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.0.0.1",
            "http://127.1.2.3:9/",
            "http://[::1]:8080",
            "http://localhost:8080",
            "http://LOCALHOST",
            "https://iam.example.com",
            "https://10.0.0.1:443",
        ] {
            assert!(iam_endpoint(&with(ok), &env(&[])).is_ok(), "{ok}");
        }
        for bad in [
            "http://iam.example.com",
            "http://10.0.0.1:8080",
            "http://169.254.169.254",
            "http://127.0.0.1@evil.example.com",
            "http://127.0.0.1.evil.example.com",
            "http://localhost.evil.example.com:80",
            "http://[::ffff:10.0.0.1]:80",
            "http://[::1",
            "http://127.0.0.1:port",
            "http://127.0.0.1:",
            "http://",
        ] {
            let err = iam_endpoint(&with(bad), &env(&[])).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(
                err.message().contains("loopback"),
                "{bad}: {}",
                err.message()
            );
        }
        // The environment variable is held to the same rule.
        let e = env(&[("GCS_SIGNER_IAM_ENDPOINT", "http://iam.internal:8080")]);
        let err = iam_endpoint(&CredentialOptions::default(), &e).unwrap_err();
        assert!(err.message().contains("GCS_SIGNER_IAM_ENDPOINT"));
        assert!(err.message().contains("in clear"));
    }
}
