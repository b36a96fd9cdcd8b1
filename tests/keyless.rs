//! The keyless path end to end against a loopback mock of the metadata
//! server, IAM Credentials and the OAuth token endpoint: discovery from an
//! injected environment, the shared token, signBlob retries and error
//! mapping, deadlines and cancellation.

mod support;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gcs_signer::blob::BlobSigner;
use gcs_signer::cancel::Cancel;
use gcs_signer::credentials::metadata::MetadataClient;
use gcs_signer::credentials::{discover_with, CredentialOptions};
use gcs_signer::signer::{Expiry, SignerOptions};
use gcs_signer::stats::Stats;
use gcs_signer::{runtime, ErrorKind, Result, UrlRequest, UrlSigner, Version};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::mock::{Mock, Req, Resp};

const EMAIL: &str = "gitlab-signer@proj.iam.gserviceaccount.com";
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const EMAIL_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/email";
const SIGN_PATH: &str =
    "/v1/projects/-/serviceAccounts/gitlab-signer%40proj.iam.gserviceaccount.com:signBlob";

/// What the mock IAM "signs": a value derived from the payload, so a test
/// can tell that the signature belongs to the bytes it sent.
fn fake_signature(payload_b64: &str) -> Vec<u8> {
    format!("sig:{payload_b64}").into_bytes()
}

fn sign_ok(req: &Req) -> Resp {
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    let payload = body["payload"].as_str().unwrap();
    let sig = B64.encode(fake_signature(payload));
    Resp::new(
        200,
        serde_json::json!({"keyId": "k1", "signedBlob": sig}).to_string(),
    )
}

fn google_error(code: u16, status: &str, message: &str, reason: Option<&str>) -> Resp {
    let details = match reason {
        Some(r) => {
            serde_json::json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": r}])
        }
        None => serde_json::json!([]),
    };
    Resp::new(
        code,
        serde_json::json!({"error": {"code": code, "message": message, "status": status, "details": details}})
            .to_string(),
    )
}

/// A mock Google: the metadata server hands out `tok-N` (N counting from
/// 1) and `email`; signBlob calls go to `iam(request, call number from 1)`.
fn google(email: &'static str, iam: impl Fn(&Req, u64) -> Resp + Send + Sync + 'static) -> Mock {
    let tokens = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    Mock::start(move |req| {
        if req.path.starts_with(TOKEN_PATH) {
            let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
            Resp::metadata(
                200,
                format!(r#"{{"access_token":"tok-{n}","expires_in":3599,"token_type":"Bearer"}}"#),
            )
        } else if req.path == EMAIL_PATH {
            Resp::metadata(200, email)
        } else if req.path.starts_with("/v1/projects/-/serviceAccounts/") {
            iam(req, calls.fetch_add(1, Ordering::SeqCst) + 1)
        } else {
            Resp::new(404, "")
        }
    })
}

fn env_for(mock: &Mock) -> HashMap<String, String> {
    [
        ("GCE_METADATA_HOST", mock.host()),
        ("GCS_SIGNER_IAM_ENDPOINT", mock.url()),
        ("HOME", "/nonexistent".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn signer_with(mock: &Mock, opts: CredentialOptions) -> (Arc<dyn BlobSigner>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let s = discover_with(&opts, stats.clone(), &env_for(mock)).unwrap();
    (s, stats)
}

fn signer(mock: &Mock) -> (Arc<dyn BlobSigner>, Arc<Stats>) {
    signer_with(mock, CredentialOptions::default())
}

fn sign(s: &dyn BlobSigner, payload: &[u8]) -> Result<Vec<u8>> {
    runtime::block_on(s.sign(payload.to_vec()), &Cancel::new(), None)
}

#[test]
fn signs_with_the_metadata_account_and_token() {
    let mock = google(EMAIL, |req, _| sign_ok(req));
    let (s, stats) = signer(&mock);
    let sig = sign(s.as_ref(), b"string to sign").unwrap();
    assert_eq!(sig, fake_signature(&B64.encode(b"string to sign")));
    assert_eq!(s.email_now().as_deref(), Some(EMAIL));

    let reqs = mock.requests();
    let iam: Vec<_> = reqs.iter().filter(|r| r.path == SIGN_PATH).collect();
    assert_eq!(iam.len(), 1);
    assert_eq!(iam[0].method, "POST");
    assert_eq!(iam[0].header("authorization"), Some("Bearer tok-1"));
    let body: serde_json::Value = serde_json::from_str(&iam[0].body).unwrap();
    assert!(body.get("delegates").is_none());
    for r in reqs
        .iter()
        .filter(|r| r.path.starts_with("/computeMetadata/"))
    {
        assert_eq!(r.header("metadata-flavor"), Some("Google"));
        assert_eq!(r.method, "GET");
    }
    let token_req = reqs
        .iter()
        .find(|r| r.path.starts_with(TOKEN_PATH))
        .unwrap();
    assert!(token_req
        .path
        .ends_with("?scopes=https://www.googleapis.com/auth/cloud-platform"));
    assert_eq!(Stats::get(&stats.sign_blob_calls), 1);
}

#[test]
fn one_token_and_one_email_for_many_threads_and_signers() {
    let mock = google(EMAIL, |req, _| sign_ok(req).after(Duration::from_millis(2)));
    let (a, _) = signer(&mock);
    let (b, _) = signer(&mock);
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                for j in 0..20 {
                    let payload = format!("payload {i} {j}");
                    let sig = sign(s.as_ref(), payload.as_bytes()).unwrap();
                    assert_eq!(sig, fake_signature(&B64.encode(&payload)));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(mock.count(TOKEN_PATH), 1, "one token for the process");
    assert_eq!(
        mock.count(EMAIL_PATH),
        1,
        "one email lookup for the process, however many signers"
    );
    assert_eq!(mock.count(SIGN_PATH), 160);
}

#[test]
fn a_401_refreshes_the_token_once() {
    // tok-1 was revoked; tok-2 works.
    let mock = google(EMAIL, |req, _| {
        if req.header("authorization") == Some("Bearer tok-1") {
            google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
                None,
            )
        } else {
            sign_ok(req)
        }
    });
    let (s, _) = signer(&mock);
    sign(s.as_ref(), b"x").unwrap();
    assert_eq!(mock.count(TOKEN_PATH), 2);
    assert_eq!(mock.count(SIGN_PATH), 2);
    // The new token is kept.
    sign(s.as_ref(), b"y").unwrap();
    assert_eq!(mock.count(TOKEN_PATH), 2);
}

#[test]
fn a_persistent_401_is_unauthenticated_after_one_refresh() {
    let mock = google(EMAIL, |_, _| {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        )
    });
    let (s, _) = signer(&mock);
    let e = sign(s.as_ref(), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(e.message().contains(EMAIL) && e.message().contains("401"));
    assert!(!e.message().contains("tok-"), "{}", e.message());
    assert_eq!(mock.count(SIGN_PATH), 2);
    assert_eq!(mock.count(TOKEN_PATH), 2);
}

#[test]
fn transient_errors_are_retried_then_succeed() {
    let mock = google(EMAIL, |req, n| match n {
        1 => google_error(503, "UNAVAILABLE", "try again", None),
        2 => google_error(429, "RESOURCE_EXHAUSTED", "quota", None),
        3 => Resp::new(502, "<html>bad gateway</html>"),
        _ => sign_ok(req),
    });
    let (s, stats) = signer(&mock);
    sign(s.as_ref(), b"x").unwrap();
    assert_eq!(mock.count(SIGN_PATH), 4);
    assert_eq!(Stats::get(&stats.sign_blob_retries), 3);
    assert_eq!(Stats::get(&stats.sign_blob_calls), 4);
    assert_eq!(mock.count(TOKEN_PATH), 1);
}

#[test]
fn a_403_is_not_retried_and_says_how_to_fix_it() {
    let mock = google(EMAIL, |_, _| {
        google_error(
            403,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist).",
            Some("IAM_PERMISSION_DENIED"),
        )
    });
    let (s, stats) = signer(&mock);
    let e = sign(s.as_ref(), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    assert!(e.message().contains("roles/iam.serviceAccountTokenCreator"));
    assert!(e.message().contains(EMAIL) && e.message().contains("403"));
    assert_eq!(mock.count(SIGN_PATH), 1);
    assert_eq!(Stats::get(&stats.sign_blob_errors_permission), 1);
}

#[test]
fn error_kinds_end_to_end() {
    let cases: Vec<(Resp, ErrorKind)> = vec![
        (
            google_error(403, "PERMISSION_DENIED", "Request had insufficient authentication scopes.", Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT")),
            ErrorKind::InsufficientScope,
        ),
        (
            google_error(403, "PERMISSION_DENIED", "IAM Service Account Credentials API has not been used in project 1 before or it is disabled.", Some("SERVICE_DISABLED")),
            ErrorKind::ApiDisabled,
        ),
        (
            google_error(400, "INVALID_ARGUMENT", "Invalid form of account ID proj.svc.id.goog. Should be [Gaia ID |Email |Unique ID |] of the account", None),
            ErrorKind::WorkloadIdentity,
        ),
        (google_error(404, "NOT_FOUND", "Not found", None), ErrorKind::PermissionDenied),
        (Resp::new(200, "{\"signedBl"), ErrorKind::Protocol),
    ];
    for (resp, kind) in cases {
        let r = resp.clone();
        let mock = google(EMAIL, move |_, _| r.clone());
        let (s, _) = signer(&mock);
        let e = sign(s.as_ref(), b"x").unwrap_err();
        assert_eq!(e.kind(), kind, "{resp:?} -> {e:?}");
        assert_eq!(mock.count(SIGN_PATH), 1, "{kind:?} must not be retried");
    }
}

#[test]
fn unmapped_workload_identity_is_explained_before_any_signblob() {
    let mock = google("proj.svc.id.goog", |req, _| sign_ok(req));
    let (s, _) = signer(&mock);
    let e = sign(s.as_ref(), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WorkloadIdentity);
    for needle in [
        "iam.gke.io/gcp-service-account",
        "roles/iam.workloadIdentityUser",
        "gcloud iam service-accounts add-iam-policy-binding",
        "service_account_email:",
    ] {
        assert!(
            e.message().contains(needle),
            "missing {needle}: {}",
            e.message()
        );
    }
    assert_eq!(mock.count(SIGN_PATH), 0);
    // An explicit email bypasses the lookup.
    let (s, _) = signer_with(
        &mock,
        CredentialOptions {
            service_account_email: Some(EMAIL.into()),
            delegates: vec!["d@proj.iam.gserviceaccount.com".into()],
            ..Default::default()
        },
    );
    sign(s.as_ref(), b"x").unwrap();
    let req = mock
        .requests()
        .into_iter()
        .find(|r| r.path == SIGN_PATH)
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
    assert_eq!(
        body["delegates"],
        serde_json::json!(["projects/-/serviceAccounts/d@proj.iam.gserviceaccount.com"])
    );
}

#[test]
fn a_server_without_metadata_flavor_is_not_trusted() {
    let mock = Mock::start(|_| Resp::new(200, r#"{"access_token":"evil","expires_in":3599}"#));
    let client = MetadataClient::with_host(&mock.host());
    let e = runtime::block_on(client.fetch_token(), &Cancel::new(), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Metadata);
    assert!(
        e.message().contains("not a genuine metadata server"),
        "{}",
        e.message()
    );
    assert_eq!(mock.count(TOKEN_PATH), 1, "not retried");
}

#[test]
fn metadata_garbage_is_a_protocol_error_naming_the_endpoint() {
    let mock = Mock::start(|_| Resp::metadata(200, r#"{"access_token":"ya29.trunc"#));
    let client = MetadataClient::with_host(&mock.host());
    let e = runtime::block_on(client.fetch_token(), &Cancel::new(), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(e.message().contains("service-accounts/default/token"));
    assert!(!e.message().contains("ya29"), "{}", e.message());
}

#[test]
fn a_cold_metadata_server_is_retried() {
    let n = AtomicU64::new(0);
    let mock = Mock::start(move |_| match n.fetch_add(1, Ordering::SeqCst) {
        0 => Resp::metadata(503, "warming up"),
        1 => Resp::metadata(429, "slow down"),
        // A slow first token (GKE can take over 2 s) still arrives.
        _ => Resp::metadata(200, r#"{"access_token":"t","expires_in":3599}"#)
            .after(Duration::from_millis(700)),
    });
    let client = MetadataClient::with_host(&mock.host());
    let t = runtime::block_on(client.fetch_token(), &Cancel::new(), None).unwrap();
    assert_eq!(t.expires_in, Duration::from_secs(3599));
    assert_eq!(mock.count(TOKEN_PATH), 3);
}

#[test]
fn a_dead_metadata_server_ends_in_a_metadata_error() {
    let mock = Mock::start(|_| Resp::metadata(500, "boom"));
    let client = MetadataClient::with_timings(
        &mock.host(),
        Duration::from_secs(1),
        Duration::from_millis(800),
    );
    let e = runtime::block_on(client.fetch_token(), &Cancel::new(), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Metadata);
    assert!(e.message().contains("HTTP 500"), "{}", e.message());
    assert!(mock.count(TOKEN_PATH) >= 2);
}

#[test]
fn the_overall_timeout_bounds_retries() {
    let mock = google(EMAIL, |_, _| google_error(503, "UNAVAILABLE", "down", None));
    let (s, stats) = signer_with(
        &mock,
        CredentialOptions {
            timeout: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let started = Instant::now();
    let e = sign(s.as_ref(), b"x").unwrap_err();
    let took = started.elapsed();
    // Either the retry loop gave up before the deadline or the deadline
    // cut a request short; both within the budget.
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e:?}"
    );
    // The 1 s budget plus room for a loaded machine; unbounded, the
    // retries would go on.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    assert!(mock.count(SIGN_PATH) >= 3);
    assert_eq!(Stats::get(&stats.sign_blob_errors_unavailable), 1);
}

#[test]
fn a_slow_iam_ends_in_timeout_naming_the_option() {
    let mock = google(EMAIL, |req, _| sign_ok(req).after(Duration::from_secs(3)));
    let (s, _) = signer_with(
        &mock,
        CredentialOptions {
            timeout: Duration::from_millis(300),
            ..Default::default()
        },
    );
    let started = Instant::now();
    let e = sign(s.as_ref(), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(e.message().contains("`timeout:`"));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_abandoned_call_keeps_its_in_flight_slot_until_its_request_ends() {
    // One slot, IAM takes 3 s: a caller that gives up at 300 ms must not
    // hand its slot to the next caller while its request is still at IAM,
    // or IAM would see two requests from a process allowed one. (3 s, not
    // 1: the second caller must be done long before the slot frees, even
    // on a loaded machine.)
    let mock = google(EMAIL, |req, _| sign_ok(req).after(Duration::from_secs(3)));
    let opts = |ms| CredentialOptions {
        timeout: Duration::from_millis(ms),
        quota: gcs_signer::iam::QuotaConfig {
            max_per_minute: 6000,
            max_in_flight: 1,
        },
        ..Default::default()
    };
    let (s, _) = signer_with(&mock, opts(300));
    let started = Instant::now();
    assert_eq!(
        sign(s.as_ref(), b"a").unwrap_err().kind(),
        ErrorKind::Timeout
    );
    // Same signer, same guard: the slot is still taken, so this call gives
    // up at its own deadline without sending anything.
    let e = sign(s.as_ref(), b"b").unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Quota | ErrorKind::Timeout),
        "{e:?}"
    );
    // Waiting for the slot, it would have taken the 3 s of the first request.
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(mock.count(SIGN_PATH), 1, "the second caller must not send");
    // Once the first request is over, the slot is free: the next call sends
    // (and times out on the slow IAM, which is not the point here). The
    // first answer comes 3 s after its request; on a loaded machine a
    // little later, so calls are made until one sends, for at most 10 s.
    std::thread::sleep(Duration::from_millis(3000).saturating_sub(started.elapsed()));
    while mock.count(SIGN_PATH) < 2 && started.elapsed() < Duration::from_secs(10) {
        let e = sign(s.as_ref(), b"c").unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Quota | ErrorKind::Timeout),
            "{e:?}"
        );
    }
    assert_eq!(mock.count(SIGN_PATH), 2);
}

#[test]
fn cancel_interrupts_a_waiting_sign() {
    let mock = google(EMAIL, |req, _| sign_ok(req).after(Duration::from_secs(5)));
    let (s, _) = signer(&mock);
    let cancel = Arc::new(Cancel::new());
    let c2 = cancel.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        c2.cancel();
    });
    let started = Instant::now();
    let e = runtime::block_on(s.sign(b"x".to_vec()), &cancel, None).unwrap_err();
    t.join().unwrap();
    assert_eq!(e.kind(), ErrorKind::Interrupted);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_429_storm_recovers_with_one_retry_per_caller() {
    // Every caller's first request is refused with 429; the shared
    // cool-down and backoff then let each through on its second.
    let seen = parking_lot::Mutex::new(std::collections::HashSet::new());
    let mock = google(EMAIL, move |req, _| {
        if seen.lock().insert(req.body.clone()) {
            google_error(429, "RESOURCE_EXHAUSTED", "quota", None)
        } else {
            sign_ok(req)
        }
    });
    let (s, stats) = signer(&mock);
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || sign(s.as_ref(), format!("p{i}").as_bytes()))
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(mock.count(SIGN_PATH), 8);
    assert_eq!(Stats::get(&stats.sign_blob_retries), 4);
    assert_eq!(Stats::get(&stats.sign_blob_errors_quota), 0);
}

#[test]
fn impersonation_signs_as_the_target_with_the_source_token() {
    let iam_target = "target@proj.iam.gserviceaccount.com";
    let refreshes = Arc::new(AtomicU64::new(0));
    let r2 = refreshes.clone();
    let mock = Mock::start(move |req| {
        if req.path == "/token" {
            r2.fetch_add(1, Ordering::SeqCst);
            let form: HashMap<_, _> = req
                .body
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .collect();
            if form.get("grant_type") != Some(&"refresh_token")
                || form.get("refresh_token") != Some(&"1%2Frt")
            {
                return Resp::new(
                    400,
                    r#"{"error":"invalid_grant","error_description":"Bad Request"}"#,
                );
            }
            Resp::new(
                200,
                r#"{"access_token":"user-tok","expires_in":3599,"token_type":"Bearer"}"#,
            )
        } else if req.path
            == "/v1/projects/-/serviceAccounts/target%40proj.iam.gserviceaccount.com:signBlob"
            && req.header("authorization") == Some("Bearer user-tok")
        {
            sign_ok(req)
        } else {
            Resp::new(403, "")
        }
    });
    let file = serde_json::json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": format!(
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{iam_target}:generateAccessToken"),
        "delegates": [],
        "source_credentials": {
            "type": "authorized_user",
            "client_id": "cid.apps.googleusercontent.com",
            "client_secret": "secret",
            "refresh_token": "1/rt",
            "token_uri": format!("{}/token", mock.url()),
        }
    });
    let path = std::env::temp_dir().join(format!("gcs-signer-imp-{}.json", std::process::id()));
    std::fs::write(&path, file.to_string()).unwrap();
    let (s, _) = signer_with(
        &mock,
        CredentialOptions {
            credentials: Some(path.to_string_lossy().into_owned()),
            ..Default::default()
        },
    );
    assert_eq!(s.email_now().as_deref(), Some(iam_target));
    for _ in 0..3 {
        assert_eq!(
            sign(s.as_ref(), b"abc").unwrap(),
            fake_signature(&B64.encode(b"abc"))
        );
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert!(format!("{s:?}").contains("cid.apps"));
    assert!(!format!("{s:?}").contains("1/rt"));
}

#[test]
fn impersonation_with_a_revoked_refresh_token_says_how_to_renew() {
    let mock = Mock::start(|req| {
        if req.path == "/token" {
            Resp::new(
                400,
                r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
            )
        } else {
            Resp::new(500, "")
        }
    });
    let file = serde_json::json!({
        "type": "impersonated_service_account",
        "service_account_impersonation_url": "https://x/v1/projects/-/serviceAccounts/t@p.iam.gserviceaccount.com:generateAccessToken",
        "source_credentials": {
            "type": "authorized_user", "client_id": "c", "client_secret": "s", "refresh_token": "revoked-rt",
            "token_uri": format!("{}/token", mock.url()),
        }
    });
    let (s, _) = signer_with(
        &mock,
        CredentialOptions {
            credentials: Some(file.to_string()),
            ..Default::default()
        },
    );
    let e = sign(s.as_ref(), b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Credentials);
    assert!(e.message().contains("invalid_grant"));
    assert!(e
        .message()
        .contains("--impersonate-service-account=t@p.iam.gserviceaccount.com"));
    assert!(!e.message().contains("revoked-rt"));
    assert_eq!(mock.count("/v1/"), 0);
}

#[test]
fn a_429_storm_is_reported_as_quota_even_after_a_slow_email_lookup() {
    // The email takes 2 s. Signing must give up at the caller's own
    // deadline (4 s) with the specific error (Quota); a deadline started
    // after the lookup would outlive the caller's (6 s) and end in a
    // generic Timeout. The 2 s left after the lookup are for the 429s and
    // their backoff (with less, a loaded machine's slow request could be
    // cut by the deadline: Timeout).
    let mock = Mock::start(|req| {
        if req.path == EMAIL_PATH {
            Resp::metadata(200, EMAIL).after(Duration::from_secs(2))
        } else if req.path.starts_with(TOKEN_PATH) {
            Resp::metadata(200, r#"{"access_token":"tok-1","expires_in":3599}"#)
        } else {
            google_error(429, "RESOURCE_EXHAUSTED", "quota", None)
        }
    });
    let stats = Arc::new(Stats::default());
    let blob = discover_with(
        &CredentialOptions::default(),
        stats.clone(),
        &env_for(&mock),
    )
    .unwrap();
    let options = SignerOptions {
        timeout: Duration::from_secs(4),
        ..SignerOptions::default()
    };
    let signer = UrlSigner::with_blob_signer(blob, options, stats).unwrap();
    let started = Instant::now();
    let err = signer
        .signed_url(
            UrlRequest::new(Version::V4, "b", "o"),
            Expiry::In(600.0),
            None,
            &Cancel::new(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Quota, "{}", err.message());
    // Half way between the caller's deadline and the late one.
    assert!(started.elapsed() < Duration::from_secs(5));
}
