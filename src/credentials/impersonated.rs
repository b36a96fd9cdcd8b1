//! `impersonated_service_account` credential files, as written by
//! `gcloud auth application-default login --impersonate-service-account=SA`.
//!
//! The file names a target account (in `service_account_impersonation_url`)
//! and source credentials that are allowed to act as it. Signing is then
//! `signBlob` as the target, authorised with the source's access token;
//! the source needs `roles/iam.serviceAccountTokenCreator` on the target.
//! Sources: `authorized_user` (OAuth refresh token) and `service_account`
//! (a key, JWT bearer grant, RFC 7523).

use super::service_account::ServiceAccountKey;
use super::{CredentialOptions, Env};
use crate::blob::{BlobSigner, BoxFuture};
use crate::credentials::metadata::{describe, CLOUD_PLATFORM_SCOPE};
use crate::error::{Error, ErrorKind, Result};
use crate::iam::{percent_encode, EmailSource, IamConfig, IamSigner};
use crate::retry::{self, Backoff};
use crate::runtime;
use crate::stats::Stats;
use crate::token::{self, FetchedToken, TokenSource};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_TOKEN_URI: &str = crate::config::OAUTH_TOKEN_URI;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
const BUDGET: Duration = Duration::from_secs(20);

/// Builds the signer for an impersonation file. `origin` names the file in
/// messages (never its content). No I/O.
pub fn signer(
    file: &Value,
    origin: &str,
    opts: &CredentialOptions,
    stats: Arc<Stats>,
    env: &dyn Env,
) -> Result<IamSigner> {
    let bad = |what: &str| {
        Error::new(
            ErrorKind::Credentials,
            format!("{origin} is an impersonated_service_account file, but {what}"),
        )
    };
    let url = file["service_account_impersonation_url"]
        .as_str()
        .ok_or_else(|| bad("it has no `service_account_impersonation_url`"))?;
    let target = target_email(url).ok_or_else(|| {
        bad(
            "its `service_account_impersonation_url` does not name a service account \
             (expected .../serviceAccounts/EMAIL:generateAccessToken)",
        )
    })?;
    let source = &file["source_credentials"];
    let token_uri = source["token_uri"]
        .as_str()
        .or(file["token_uri"].as_str())
        .unwrap_or(DEFAULT_TOKEN_URI)
        .to_string();
    let tokens = match source["type"].as_str() {
        Some("authorized_user") => {
            let field = |name: &str| {
                source[name]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| bad(&format!("its authorized_user source has no `{name}`")))
            };
            let src = RefreshTokenSource {
                client_id: field("client_id")?,
                client_secret: field("client_secret")?,
                refresh_token: field("refresh_token")?,
                token_uri,
                target: target.clone(),
            };
            // The identity must separate two users of gcloud's shared
            // client id without containing the refresh token itself.
            let fp = ring::digest::digest(&ring::digest::SHA256, src.refresh_token.as_bytes());
            let fp: String = fp.as_ref()[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            token::shared(
                &format!("authorized_user:{}:{fp}:{}", src.client_id, src.token_uri),
                src,
            )
        }
        Some("service_account") => {
            let key = ServiceAccountKey::from_json(&source.to_string())?;
            let email = key
                .email_now()
                .ok_or_else(|| bad("its service_account source has no `client_email`"))?;
            let identity = format!("jwt:{email}:{token_uri}");
            token::shared(
                &identity,
                JwtBearerSource {
                    key: Arc::new(key),
                    email,
                    token_uri,
                    target: target.clone(),
                },
            )
        }
        Some(other) => {
            return Err(bad(&format!(
                "its source credentials have type `{other}`; supported sources are \
                 `authorized_user` and `service_account`"
            )))
        }
        None => return Err(bad("it has no `source_credentials` with a `type`")),
    };
    let delegates = if opts.delegates.is_empty() {
        file["delegates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect()
    } else {
        opts.delegates.clone()
    };
    let config = IamConfig {
        email: EmailSource::Known(target),
        endpoint: super::iam_endpoint(opts, env)?,
        delegates,
        quota: opts.quota,
        timeout: opts.timeout,
    };
    Ok(IamSigner::new(config, tokens, stats))
}

/// `https://.../v1/projects/-/serviceAccounts/EMAIL:generateAccessToken` -> EMAIL.
fn target_email(url: &str) -> Option<String> {
    let rest = &url[url.find("/serviceAccounts/")? + "/serviceAccounts/".len()..];
    let email = rest.split(':').next()?;
    let email = percent_decode(email)?;
    (email.contains('@') && !email.contains('/')).then_some(email)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An OAuth refresh-token grant (the `authorized_user` a developer gets
/// from `gcloud auth application-default login`).
struct RefreshTokenSource {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    token_uri: String,
    target: String,
}

impl fmt::Debug for RefreshTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokenSource")
            .field("client_id", &self.client_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl TokenSource for RefreshTokenSource {
    fn fetch(&self) -> BoxFuture<'static, Result<FetchedToken>> {
        let form = form_encode(&[
            ("grant_type", "refresh_token"),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
            ("refresh_token", &self.refresh_token),
        ]);
        let (uri, target) = (self.token_uri.clone(), self.target.clone());
        Box::pin(async move { post_token(&uri, form, &target, "refresh token").await })
    }
}

/// A JWT bearer grant signed by a service account key.
struct JwtBearerSource {
    key: Arc<ServiceAccountKey>,
    email: String,
    token_uri: String,
    target: String,
}

impl fmt::Debug for JwtBearerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtBearerSource")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl TokenSource for JwtBearerSource {
    fn fetch(&self) -> BoxFuture<'static, Result<FetchedToken>> {
        let key = self.key.clone();
        let (email, uri, target) = (
            self.email.clone(),
            self.token_uri.clone(),
            self.target.clone(),
        );
        Box::pin(async move {
            let assertion = jwt_assertion(key.as_ref(), &email, &uri, unix_now()).await?;
            let form = form_encode(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ]);
            post_token(&uri, form, &target, "service account key").await
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RS256 JWT for the OAuth token endpoint (RFC 7523 s.2.1), asking for the
/// cloud-platform scope that signBlob needs.
async fn jwt_assertion(
    key: &dyn BlobSigner,
    email: &str,
    token_uri: &str,
    now: u64,
) -> Result<String> {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let claims = serde_json::json!({
        "iss": email,
        "scope": CLOUD_PLATFORM_SCOPE,
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let input = format!(
        "{}.{}",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    );
    let sig = key.sign(input.clone().into_bytes()).await?;
    Ok(format!("{input}.{}", B64URL.encode(sig)))
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// POSTs a grant to the OAuth token endpoint, retrying transient failures.
async fn post_token(uri: &str, form: String, target: &str, what: &str) -> Result<FetchedToken> {
    let deadline = tokio::time::Instant::now() + BUDGET;
    retry::retry(
        deadline,
        Backoff::default(),
        || token_attempt(uri, &form, target, what),
        |_, _| {},
    )
    .await
}

async fn token_attempt(uri: &str, form: &str, target: &str, what: &str) -> Result<FetchedToken> {
    let client = runtime::http()?;
    let resp = client
        .post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .timeout(ATTEMPT_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            let kind = if retry::is_retryable_transport(&e) {
                ErrorKind::Unavailable
            } else {
                ErrorKind::Credentials
            };
            Error::new(
                kind,
                format!("the OAuth token endpoint {uri} failed: {}", describe(&e)),
            )
        })?;
    let status = resp.status().as_u16();
    let body = match crate::body::read_capped(resp).await {
        Ok(body) => body,
        Err(crate::body::BodyError::TooLarge) => {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "the OAuth token endpoint {uri} answered HTTP {status} with more than {} KiB, \
                     which no token response is",
                    crate::body::MAX_BODY / 1024
                ),
            ))
        }
        Err(crate::body::BodyError::Transport(_)) => String::new(),
    };
    if status == 200 {
        // The body holds the token: never quote it.
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        return match (v["access_token"].as_str(), v["expires_in"].as_u64()) {
            (Some(value), Some(secs)) if !value.is_empty() => Ok(FetchedToken {
                value: value.to_string(),
                expires_in: Duration::from_secs(secs),
            }),
            _ => Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "the OAuth token endpoint {uri} answered HTTP 200 with a body that is not a \
                     token response (expected JSON with access_token and expires_in)"
                ),
            )),
        };
    }
    if retry::is_retryable_status(status) {
        let kind = if status == 429 {
            ErrorKind::Quota
        } else {
            ErrorKind::Unavailable
        };
        return Err(Error::new(
            kind,
            format!("the OAuth token endpoint {uri} answered HTTP {status}"),
        ));
    }
    // OAuth errors are `{"error":"invalid_grant","error_description":"..."}`.
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    // Quoted in the message: whatever looks like a credential goes.
    let code = crate::body::redact(v["error"].as_str().unwrap_or("unknown error"));
    let desc = crate::body::redact(v["error_description"].as_str().unwrap_or(""));
    Err(Error::new(
        ErrorKind::Credentials,
        format!(
            "the OAuth token endpoint {uri} refused the {what} of the impersonation source \
             (HTTP {status}, {code}{}{desc}); renew the credentials with `gcloud auth \
             application-default login --impersonate-service-account={target}`",
            if desc.is_empty() { "" } else { ": " }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_impersonation_url() {
        let url = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/\
                   signer@proj.iam.gserviceaccount.com:generateAccessToken";
        assert_eq!(
            target_email(url).as_deref(),
            Some("signer@proj.iam.gserviceaccount.com")
        );
        let encoded = "https://x/v1/projects/-/serviceAccounts/signer%40proj.iam.gserviceaccount.com:generateAccessToken";
        assert_eq!(
            target_email(encoded).as_deref(),
            Some("signer@proj.iam.gserviceaccount.com")
        );
        assert_eq!(target_email("https://x/v1/projects/-/foo"), None);
        assert_eq!(
            target_email("https://x/serviceAccounts/%zz:generateAccessToken"),
            None
        );
    }

    #[test]
    fn form_is_url_encoded() {
        assert_eq!(
            form_encode(&[("a", "b c"), ("t", "1/x+y=")]),
            "a=b%20c&t=1%2Fx%2By%3D"
        );
    }

    /// Signs by returning the payload reversed, so the test can see what
    /// was signed.
    #[derive(Debug)]
    struct Reverse;
    impl BlobSigner for Reverse {
        fn identity(&self) -> &str {
            "reverse"
        }
        fn email_now(&self) -> Option<String> {
            None
        }
        fn email(&self) -> BoxFuture<'_, Result<String>> {
            Box::pin(async { Ok(String::new()) })
        }
        fn sign(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
            Box::pin(async move { Ok(payload.into_iter().rev().collect()) })
        }
        fn uses_sign_blob(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn jwt_has_the_claims_google_expects() {
        let jwt = jwt_assertion(
            &Reverse,
            "src@p.iam.gserviceaccount.com",
            DEFAULT_TOKEN_URI,
            1000,
        )
        .await
        .unwrap();
        let parts: Vec<_> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&B64URL.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: Value = serde_json::from_slice(&B64URL.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "src@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], DEFAULT_TOKEN_URI);
        assert_eq!(claims["scope"], CLOUD_PLATFORM_SCOPE);
        assert_eq!(claims["exp"], 4600);
        let signed: Vec<u8> = format!("{}.{}", parts[0], parts[1]).bytes().rev().collect();
        assert_eq!(B64URL.decode(parts[2]).unwrap(), signed);
    }
}
