//! Property tests over random requests: canonicalisation and URL building
//! never panic, refuse bad input only as `InvalidArgument`, and the URL
//! describes exactly the request that was signed.
//!
//! For V4 the test parses the finished URL back (host, path, query) and
//! rebuilds the canonical request from it with its own code, written from
//! Google's "V4 signing process" rather than from `src/v4.rs`: it must equal
//! `prepared.canonical_request`, and the string to sign must hash it. For V2
//! the URL path must be the canonical resource that was signed, `Expires` the
//! signed expiry, and the decoded path the bucket and object asked for.
//!
//! Deterministic (xorshift64* from a fixed seed) so a failure reproduces;
//! `GCS_SIGNER_PROPTEST_CASES` and `GCS_SIGNER_PROPTEST_SEED` widen a run:
//!   GCS_SIGNER_PROPTEST_CASES=1000000 cargo test --release --test url_properties

use gcs_signer::cancel::Cancel;
use gcs_signer::credentials::CredentialOptions;
use gcs_signer::signer::{Expiry, SignerOptions};
use gcs_signer::{v2, v4, ErrorKind, UrlRequest, UrlSigner, UrlStyle, V2Path, Version};
use std::panic::{catch_unwind, AssertUnwindSafe};

const EMAIL: &str = "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com";
const KEY: &str = include_str!("../spec/fixtures/conformance/test_service_account.not-a-test.json");

fn cases() -> usize {
    std::env::var("GCS_SIGNER_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000)
}

fn seed() -> u64 {
    std::env::var("GCS_SIGNER_PROPTEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_2024)
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn text(&mut self, pool: &[&str], max_parts: usize) -> String {
        (0..self.below(max_parts + 1))
            .map(|_| self.pick(pool))
            .collect()
    }
}

/// Pieces that stress encoders: reserved and unreserved ASCII, `%` escapes
/// that must not be decoded, controls, multi-byte UTF-8, BOM, U+FFFF.
const PARTS: &[&str] = &[
    "a",
    "Z",
    "0",
    "file.png",
    "dir/",
    "/",
    "//",
    " ",
    "  ",
    "+",
    "&",
    "=",
    "?",
    "#",
    "%",
    "%2F",
    "%20",
    "%zz",
    "~",
    "-",
    "_",
    ".",
    "..",
    "*",
    "'",
    "(",
    ")",
    "!",
    "$",
    ",",
    ";",
    ":",
    "@",
    "[",
    "]",
    "\"",
    "<",
    ">",
    "\\",
    "^",
    "`",
    "{",
    "|",
    "}",
    "\t",
    "\u{7f}",
    "\u{1}",
    "é",
    "ü",
    "日本語",
    "😀",
    "\u{feff}",
    "\u{ffff}",
    "\u{a0}",
    "\r",
    "\n",
    "\0",
];
const VALUE_PARTS: &[&str] = &[
    "x",
    "text/plain",
    " ",
    "  ",
    "\t",
    ", ",
    "a,b",
    "é",
    "\u{a0}",
    "&",
    "=",
    "\"q\"",
    "\u{b}",
    "\r\n",
    "\0",
    "日本",
];
const HEADER_NAMES: &[&str] = &[
    "Content-Type",
    "content-type",
    "Content-MD5",
    "x-goog-meta-a",
    "X-Goog-Meta-A",
    "x-goog-encryption-key",
    "x-goog-resumable",
    "host",
    "Host",
    "x-goog-content-sha256",
    "bad name",
    "bad:name",
    "",
    "é",
];
const METHODS: &[&str] = &[
    "GET",
    "PUT",
    "DELETE",
    "HEAD",
    "POST",
    "RESUMABLE",
    "OPTIONS",
    "get",
    "",
    "G T",
];
const HOSTS: &[&str] = &[
    "storage.googleapis.com",
    "localhost:8080",
    "127.0.0.1:9000",
    "[::1]:443",
    "[::1]",
    "mydomain.tld",
    "a b",
    "x/y",
    "",
];
const BUCKET_CHARS: &[&str] = &["a", "b", "z", "0", "9", "-", "_", ".", "/", " ", "é", "\n"];

fn random_request(rng: &mut Rng) -> UrlRequest {
    let version = if rng.chance(50) {
        Version::V4
    } else {
        Version::V2
    };
    let mut req = UrlRequest::new(version, "", "");
    req.method = if rng.chance(90) {
        rng.pick(&METHODS[..6]).to_string().into()
    } else {
        rng.pick(METHODS).to_string().into()
    };
    req.bucket = if rng.chance(92) {
        // Mostly valid names.
        (0..3 + rng.below(20))
            .map(|_| rng.pick(&BUCKET_CHARS[..8]))
            .collect()
    } else {
        rng.text(BUCKET_CHARS, 30)
    };
    req.object = match rng.below(100) {
        0..=2 => String::new(),
        3..=4 => "x".repeat(1000 + rng.below(40)),
        5..=9 => rng.text(PARTS, 40),
        _ => rng.text(&PARTS[..PARTS.len() - 3], 12),
    };
    for _ in 0..rng.below(5) {
        let name = if version == Version::V2 && rng.chance(85) {
            // V2 refuses the headers it cannot sign (host, ...): mostly signable ones.
            rng.pick(&HEADER_NAMES[3..6]).to_string()
        } else if rng.chance(85) {
            rng.pick(&HEADER_NAMES[..10]).to_string()
        } else {
            rng.pick(HEADER_NAMES).to_string()
        };
        let value = if rng.chance(90) {
            rng.text(&VALUE_PARTS[..12], 4)
        } else {
            rng.text(VALUE_PARTS, 4)
        };
        req.headers.push((name, value));
    }
    for _ in 0..rng.below(5) {
        let key = match rng.below(100) {
            0..=4 => String::new(),
            5..=7 => "X-Goog-Date".to_string(),
            8..=75 => rng
                .pick(&[
                    "response-content-disposition",
                    "response-content-type",
                    "generation",
                    "userProject",
                    "acl",
                    "versions",
                    "a",
                ])
                .to_string(),
            _ => rng.text(&PARTS[..PARTS.len() - 3], 4),
        };
        req.query.push((key, rng.text(PARTS, 5)));
    }
    req.scheme = rng
        .pick(&["https", "https", "http", "ftp"])
        .to_string()
        .into();
    if rng.chance(50) {
        req.host = Some(rng.pick(HOSTS).to_string());
    }
    // V2 is path-style only: other styles there only test the refusal.
    let styles = if version == Version::V2 && rng.chance(90) {
        0
    } else {
        rng.below(10)
    };
    req.style = match styles {
        0..=5 => UrlStyle::Path,
        6..=7 => UrlStyle::VirtualHosted,
        _ => UrlStyle::BucketBound(rng.pick(HOSTS).to_string()),
    };
    if version == Version::V2 && rng.chance(15) {
        req.v2_path = match rng.below(10) {
            0..=5 => V2Path::Encoded(pct(&format!("{}/{}", req.bucket, req.object), |b| {
                unreserved(b) || b == b'/'
            })),
            6..=7 => V2Path::Addressable,
            _ => V2Path::Encoded(rng.text(PARTS, 6)),
        };
    }
    req
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte that `keep` rejects, upper-case hex.
fn pct(s: &str, keep: impl Fn(u8) -> bool) -> String {
    s.bytes()
        .map(|b| {
            if keep(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Strict percent-decoding: a `%` must start a valid escape.
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("escape is ASCII");
            out.push(u8::from_str_radix(hex, 16).expect("valid escape"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

/// Google: trim, and collapse each run of (ASCII) whitespace to one space.
fn header_value(v: &str) -> String {
    let mut out = String::new();
    let mut pending_space = false;
    for c in v.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c') {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

struct ParsedUrl<'a> {
    scheme: &'a str,
    host: &'a str,
    path: &'a str,
    query: &'a str,
}

/// `scheme://host/path?query`, checking the URL is plain printable ASCII
/// with one `?` and no fragment.
fn parse(url: &str) -> ParsedUrl<'_> {
    assert!(
        url.bytes().all(|b| b.is_ascii_graphic()),
        "URL has spaces, controls or non-ASCII: {url:?}"
    );
    assert!(!url.contains('#'), "URL has a fragment: {url}");
    assert_eq!(url.matches('?').count(), 1, "URL must have one '?': {url}");
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let slash = rest.find('/').expect("path");
    let (host, path_query) = rest.split_at(slash);
    let (path, query) = path_query.split_once('?').unwrap();
    ParsedUrl {
        scheme,
        host,
        path,
        query,
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        &host[..=host.find(']').unwrap()]
    } else {
        host.split(':').next().unwrap()
    }
}

/// Checks one V4 URL against its request and its prepared strings.
fn check_v4(req: &UrlRequest, p: &v4::V4Prepared, timestamp: i64, expires: i64, sig: &[u8]) {
    let url = p.finish(sig);
    let suffix = format!("&X-Goog-Signature={}", hex(sig));
    assert!(url.ends_with(&suffix), "signature last: {url}");
    let unsigned = &url[..url.len() - suffix.len()];
    let u = parse(unsigned);
    assert_eq!(u.scheme, req.scheme);

    // Host and path name the bucket and object asked for.
    let endpoint = req.host.as_deref().unwrap_or("storage.googleapis.com");
    let (want_host, want_path) = match &req.style {
        UrlStyle::Path if req.object.is_empty() => {
            (endpoint.to_string(), format!("/{}", req.bucket))
        }
        UrlStyle::Path => (
            endpoint.to_string(),
            format!("/{}/{}", req.bucket, req.object),
        ),
        UrlStyle::VirtualHosted => (
            format!("{}.{endpoint}", req.bucket),
            format!("/{}", req.object),
        ),
        UrlStyle::BucketBound(h) => (h.clone(), format!("/{}", req.object)),
    };
    assert_eq!(u.host, want_host);
    assert_eq!(decode(u.path), want_path.as_bytes(), "path of {url}");
    assert!(
        u.path
            .bytes()
            .all(|b| unreserved(b) || b == b'/' || b == b'%'),
        "path must be RFC 3986-encoded: {}",
        u.path
    );

    // The query holds the caller's parameters and the five X-Goog-* ones.
    let pairs: Vec<(String, String)> = u
        .query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("key=value");
            (
                String::from_utf8(decode(k)).unwrap(),
                String::from_utf8(decode(v)).unwrap(),
            )
        })
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} missing from {url}"))
    };
    let datetime = get("X-Goog-Date");
    let date = &datetime[..8];
    let scope = format!("{date}/auto/storage/goog4_request");
    let mut expected_pairs = req.query.clone();
    let signed_names = get("X-Goog-SignedHeaders");
    expected_pairs.extend([
        ("X-Goog-Algorithm".into(), "GOOG4-RSA-SHA256".into()),
        ("X-Goog-Credential".into(), format!("{EMAIL}/{scope}")),
        ("X-Goog-Date".into(), datetime.clone()),
        ("X-Goog-Expires".into(), expires.to_string()),
        ("X-Goog-SignedHeaders".into(), signed_names.clone()),
    ]);
    let mut got = pairs.clone();
    got.sort();
    expected_pairs.sort();
    assert_eq!(got, expected_pairs, "query of {url}");
    assert_eq!(
        datetime,
        civil(timestamp),
        "X-Goog-Date is the signing time"
    );

    // The canonical query is the URL's query, already in code-point order.
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (pct(k, unreserved), pct(v, unreserved)))
        .collect();
    encoded.sort();
    let canonical_query = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(canonical_query, u.query, "URL query is canonical");

    // Headers: lower-case names, normalised values, host always, RESUMABLE
    // adds x-goog-resumable:start, duplicates joined with ',' in order.
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), header_value(v)))
        .collect();
    let method = if req.method == "RESUMABLE" {
        if !headers.iter().any(|(k, _)| k == "x-goog-resumable") {
            headers.push(("x-goog-resumable".into(), "start".into()));
        }
        "POST"
    } else {
        &*req.method
    };
    if !headers.iter().any(|(k, _)| k == "host") {
        headers.push(("host".into(), host_without_port(u.host).to_string()));
    }
    let mut names: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
    names.sort();
    names.dedup();
    let canonical_headers: String = names
        .iter()
        .map(|n| {
            let values: Vec<&str> = headers
                .iter()
                .filter(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
                .collect();
            format!("{n}:{}\n", values.join(","))
        })
        .collect();
    assert_eq!(signed_names, names.join(";"));
    // The payload line is the signed x-goog-content-sha256 header's
    // canonical value (repeats joined, as in the header line).
    let payload = canonical_headers
        .lines()
        .find_map(|l| l.strip_prefix("x-goog-content-sha256:"))
        .unwrap_or("UNSIGNED-PAYLOAD")
        .to_string();
    let canonical = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_names}\n{payload}",
        u.path, u.query
    );
    assert_eq!(canonical, p.canonical_request, "canonical request of {url}");
    assert_eq!(
        p.string_to_sign,
        format!(
            "GOOG4-RSA-SHA256\n{datetime}\n{scope}\n{}",
            sha256_hex(&canonical)
        )
    );
}

/// `YYYYMMDDTHHMMSSZ`, from days-since-epoch arithmetic of its own.
fn civil(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Walk years then months: slow but obviously right for a test.
    let mut year = 1970;
    let mut left = days;
    loop {
        let len = if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 {
            366
        } else {
            365
        };
        if left < len {
            break;
        }
        left -= len;
        year += 1;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while left >= months[month] {
        left -= months[month];
        month += 1;
    }
    format!(
        "{year:04}{:02}{:02}T{:02}{:02}{:02}Z",
        month + 1,
        left + 1,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Checks one V2 URL: its path is the signed canonical resource, its
/// `Expires` the signed expiry, its decoded path the object asked for.
fn check_v2(req: &UrlRequest, p: &v2::V2Prepared, expires: i64, sig: &[u8]) {
    let url = p.finish(sig);
    let lines: Vec<&str> = p.string_to_sign.split('\n').collect();
    assert_eq!(lines[0], req.method);
    assert_eq!(lines[3], expires.to_string());
    let resource = *lines.last().unwrap();
    // Keys are written raw, as fog-google does; nothing may add a fragment
    // or a parameter.
    assert!(!url.contains('#'), "URL has a fragment: {url:?}");
    let (scheme, rest) = url.split_once("://").unwrap();
    assert_eq!(scheme, req.scheme);
    let host = req.host.as_deref().unwrap_or("storage.googleapis.com");
    let rest = rest.strip_prefix(host).expect("host");
    let (path, query) = rest.split_once('?').expect("query");
    let resource_path = resource.split('?').next().unwrap();
    assert_eq!(
        path, resource_path,
        "URL path is the signed resource: {url}"
    );
    match &req.v2_path {
        V2Path::Fog115 | V2Path::Addressable => assert_eq!(
            decode(path),
            format!("/{}/{}", req.bucket, req.object).as_bytes()
        ),
        V2Path::Encoded(v2_path) => assert_eq!(path, format!("/{v2_path}")),
    }
    let (caller, own) = query.split_once("GoogleAccessId=").expect("GoogleAccessId");
    let mut keys = Vec::new();
    for pair in caller.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').expect("key=value");
        keys.push(k.to_string());
        assert!(
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-%".contains(&b)),
            "V2 values are escaped: {v}"
        );
    }
    let mut want_keys: Vec<String> = Vec::new();
    for (k, _) in &req.query {
        if !want_keys.contains(k) {
            want_keys.push(k.clone());
        }
    }
    assert_eq!(keys, want_keys, "query keys of {url}");
    assert_eq!(own.split('&').count(), 3, "{url}");
    let tail = format!("&Expires={expires}");
    assert!(query.ends_with(&tail), "Expires last: {url}");
    assert!(query.contains(&format!("GoogleAccessId={EMAIL}&Signature=")));
    // Sub-resources in the signed resource are exactly those of the query.
    let subs: Vec<&str> = req
        .query
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| {
            [
                "acl",
                "cors",
                "location",
                "logging",
                "requestPayment",
                "versions",
                "versioning",
            ]
            .contains(k)
        })
        .collect();
    let mut seen = Vec::new();
    for s in subs {
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    match resource.split_once('?') {
        None => assert!(seen.is_empty()),
        Some((_, signed)) => assert_eq!(signed, seen.join("&")),
    }
}

fn random_time(rng: &mut Rng) -> (i64, i64) {
    let timestamp = match rng.below(20) {
        0 => 0,
        1 => 253_402_300_799,
        2 => -1 - rng.below(1000) as i64,
        3 => 253_402_300_800 + rng.below(1000) as i64,
        _ => 1_500_000_000 + rng.below(500_000_000) as i64,
    };
    let expires = match rng.below(20) {
        0 => 0,
        1 => -(rng.below(100) as i64),
        2 => 604_801,
        3 => 604_800,
        _ => 1 + rng.below(604_800) as i64,
    };
    (timestamp, expires)
}

#[test]
fn random_requests_never_panic_and_urls_match_what_is_signed() {
    let mut rng = Rng::new(seed());
    let mut signed = [0usize; 2];
    for case in 0..cases() {
        let req = random_request(&mut rng);
        let (timestamp, expires) = random_time(&mut rng);
        let sig: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.next() as u8).collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| match req.version {
            Version::V4 => match v4::prepare(&req, EMAIL, timestamp, expires) {
                Ok(p) => {
                    check_v4(&req, &p, timestamp, expires, &sig);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Version::V2 => match v2::prepare(&req, EMAIL, timestamp + expires) {
                Ok(p) => {
                    check_v2(&req, &p, timestamp + expires, &sig);
                    Ok(())
                }
                Err(e) => Err(e),
            },
        }));
        match outcome {
            Ok(Ok(())) => signed[usize::from(req.version == Version::V4)] += 1,
            Ok(Err(e)) => assert_eq!(
                e.kind(),
                ErrorKind::InvalidArgument,
                "case {case}: {req:?} -> {e}"
            ),
            Err(_) => panic!(
                "case {case} (seed {}): panicked or broke an invariant for {req:?}, timestamp {timestamp}, expires {expires}",
                seed()
            ),
        }
    }
    // The generator must reach the interesting path, not only refusals.
    let n = cases();
    assert!(signed[0] > n / 10, "too few V2 URLs built: {signed:?}");
    assert!(signed[1] > n / 10, "too few V4 URLs built: {signed:?}");
}

/// The full signer (plan, cache, local key) over random expiries and
/// timestamps, including NaN, infinities and extremes: a URL or
/// `InvalidArgument`, never a panic or overflow.
#[test]
fn random_expiries_through_the_signer_never_panic() {
    let signer = UrlSigner::new(SignerOptions {
        credentials: CredentialOptions {
            credentials: Some(KEY.to_string()),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let cancel = Cancel::new();
    let mut rng = Rng::new(seed() ^ 0xdead_beef);
    let floats = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        1e-300,
        0.4,
        1.0,
        599.999,
        600.0,
        604_800.0,
        604_800.5,
        604_801.0,
        1e12,
        1e300,
        -1.0,
        f64::MAX,
        f64::MIN,
    ];
    let mut ok = 0;
    for _ in 0..cases().min(5000) {
        let mut req = UrlRequest::new(
            if rng.chance(50) {
                Version::V4
            } else {
                Version::V2
            },
            "bucket",
            "object",
        );
        req.query = vec![("generation".into(), rng.below(5).to_string())];
        let now = 1_700_000_000.0;
        let x = floats[rng.below(floats.len())];
        let expiry = if rng.chance(50) {
            Expiry::In(x)
        } else {
            Expiry::At(if x.is_finite() && x.abs() < 1e9 {
                now + x
            } else {
                x
            })
        };
        let timestamp = match rng.below(6) {
            0 => None,
            1 => Some(i64::MAX),
            2 => Some(i64::MIN),
            3 => Some(-1),
            4 => Some(253_402_300_799),
            _ => Some(1_700_000_000),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            signer.signed_url(req.clone(), expiry, timestamp, &cancel)
        }));
        match result {
            Ok(Ok(url)) => {
                assert!(url.starts_with("https://storage.googleapis.com/bucket/object?"));
                ok += 1;
            }
            Ok(Err(e)) => assert_eq!(
                e.kind(),
                ErrorKind::InvalidArgument,
                "{expiry:?} {timestamp:?}: {e}"
            ),
            Err(_) => panic!("signer panicked for {req:?} {expiry:?} {timestamp:?}"),
        }
    }
    assert!(ok > 0);
}
