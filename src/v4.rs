//! V4 signed URLs (`GOOG4-RSA-SHA256`), following Google's "V4 signing
//! process" and checked against the official conformance vectors
//! (`spec/fixtures/conformance/`, field notes s.4).
//!
//! ```text
//! canonical request = METHOD "\n"
//!                     PATH "\n"                      /bucket/object, RFC 3986, '/' kept
//!                     CANONICAL_QUERY "\n"           caller params + X-Goog-*, sorted
//!                     CANONICAL_HEADERS "\n"         "name:value\n" per header, sorted
//!                     SIGNED_HEADERS "\n"            "host;x-goog-resumable"
//!                     PAYLOAD                        UNSIGNED-PAYLOAD or x-goog-content-sha256
//!
//! string to sign    = "GOOG4-RSA-SHA256" "\n"
//!                     YYYYMMDD "T" HHMMSS "Z" "\n"
//!                     YYYYMMDD "/auto/storage/goog4_request" "\n"
//!                     lowercase hex SHA-256 of the canonical request
//!
//! URL               = SCHEME "://" HOST PATH "?" CANONICAL_QUERY "&X-Goog-Signature=" hex(signature)
//! ```
//!
//! Signing itself happens elsewhere (a local key or IAM `signBlob`), so this
//! module is split into [`prepare`] (everything up to the string to sign)
//! and [`V4Prepared::finish`] (append the signature).

use crate::encoding::{hex_lower, rfc3986, rfc3986_path};
use crate::error::{Error, ErrorKind, Result};
use crate::request::{UrlRequest, UrlStyle, Version, V4_MAX_EXPIRES};

pub const ALGORITHM: &str = "GOOG4-RSA-SHA256";
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Query parameters this module writes itself; a caller's copy would make
/// the URL ambiguous, so it is refused.
const OWN_QUERY_KEYS: [&str; 6] = [
    "x-goog-algorithm",
    "x-goog-credential",
    "x-goog-date",
    "x-goog-expires",
    "x-goog-signedheaders",
    "x-goog-signature",
];
/// 9999-12-31T23:59:59Z: the last second whose date fits `YYYYMMDD`.
const MAX_TIMESTAMP: i64 = 253_402_300_799;

/// Everything about a V4 URL except its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V4Prepared {
    pub canonical_request: String,
    /// What the signer signs (RSA-SHA256, PKCS#1 v1.5).
    pub string_to_sign: String,
    /// The final URL up to, not including, `&X-Goog-Signature=`.
    pub url_without_signature: String,
}

impl V4Prepared {
    /// The signed URL: `X-Goog-Signature` goes last, in lower-case hex.
    pub fn finish(&self, signature: &[u8]) -> String {
        let mut url =
            String::with_capacity(self.url_without_signature.len() + 18 + signature.len() * 2);
        url.push_str(&self.url_without_signature);
        url.push_str("&X-Goog-Signature=");
        url.push_str(&hex_lower(signature));
        url
    }
}

/// Prepares a URL signed by `email`, valid from `timestamp_secs` (Unix
/// time) for `expires_in` seconds (1..=604800). An empty object names the
/// bucket itself (e.g. listing objects, the conformance vector "List
/// Objects": `.../test-bucket?...`).
pub fn prepare(
    req: &UrlRequest,
    email: &str,
    timestamp_secs: i64,
    expires_in: i64,
) -> Result<V4Prepared> {
    check_version(req)?;
    req.validate()?;
    build(req, email, timestamp_secs, expires_in)
}

fn check_version(req: &UrlRequest) -> Result<()> {
    if req.version == Version::V4 {
        Ok(())
    } else {
        Err(Error::internal(
            "v4::prepare was given a request for a V2 URL",
        ))
    }
}

fn build(
    req: &UrlRequest,
    email: &str,
    timestamp_secs: i64,
    expires_in: i64,
) -> Result<V4Prepared> {
    check_expires(expires_in)?;
    if email.is_empty() {
        return Err(Error::new(
            ErrorKind::Credentials,
            "the signing service account email is empty; set service_account_email or use credentials that name one",
        ));
    }
    let (date, datetime) = format_timestamp(timestamp_secs)?;
    let scope = credential_scope(&date);
    let (method, resumable) = effective_method(&req.method);
    let (url_host, path) = host_and_path(req);
    let headers = canonical_headers(&req.headers, resumable, host_without_port(&url_host));
    let signed_headers = signed_header_names(&headers);
    let query = canonical_query(
        &req.query,
        &[
            ("X-Goog-Algorithm", ALGORITHM),
            ("X-Goog-Credential", &format!("{email}/{scope}")),
            ("X-Goog-Date", &datetime),
            ("X-Goog-Expires", &expires_in.to_string()),
            ("X-Goog-SignedHeaders", &signed_headers),
        ],
    )?;
    let canonical_request = canonical_request(
        method,
        &path,
        &query,
        &headers,
        &signed_headers,
        payload_hash(&headers),
    );
    let string_to_sign = string_to_sign(&datetime, &scope, &canonical_request);
    let url_without_signature = format!("{}://{url_host}{path}?{query}", req.scheme);
    Ok(V4Prepared {
        canonical_request,
        string_to_sign,
        url_without_signature,
    })
}

/// Google refuses V4 URLs that live longer than 7 days.
fn check_expires(expires_in: i64) -> Result<()> {
    if (1..=V4_MAX_EXPIRES).contains(&expires_in) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "V4 URLs must expire 1 to {V4_MAX_EXPIRES} seconds (7 days) after signing, got {expires_in} s; \
             pass a shorter expiry (or a later expiry time for short-lived URLs)"
        )))
    }
}

/// `RESUMABLE` is the client libraries' name for "POST that starts a
/// resumable upload": a POST that signs `x-goog-resumable:start`.
fn effective_method(method: &str) -> (&str, bool) {
    if method == "RESUMABLE" {
        ("POST", true)
    } else {
        (method, false)
    }
}

/// `<YYYYMMDD>/auto/storage/goog4_request`
fn credential_scope(date: &str) -> String {
    format!("{date}/auto/storage/goog4_request")
}

/// The URL's host (with any port) and its path, per style:
/// path `host/bucket/object`, virtual-hosted `bucket.host/object`,
/// bucket-bound `hostname/object`. An empty object gives the bucket's URL.
fn host_and_path(req: &UrlRequest) -> (String, String) {
    let object = rfc3986_path(&req.object);
    match &req.style {
        UrlStyle::Path if req.object.is_empty() => {
            (req.host().to_owned(), format!("/{}", rfc3986(&req.bucket)))
        }
        UrlStyle::Path => (
            req.host().to_owned(),
            format!("/{}/{object}", rfc3986(&req.bucket)),
        ),
        UrlStyle::VirtualHosted => (
            format!("{}.{}", req.bucket, req.host()),
            format!("/{object}"),
        ),
        UrlStyle::BucketBound(h) => (h.clone(), format!("/{object}")),
    }
}

/// The signed `host` header carries no port (conformance vectors "Simple
/// GET with endpoint on client" and "...non-default hostname"), while the
/// URL keeps it. IPv6 literals keep their brackets.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) if !port.contains(':') => name,
            _ => host,
        }
    }
}

/// Header values are trimmed and inner runs of spaces and tabs become one
/// space ("Headers should be trimmed"; canonical-requests: "removing
/// leading and trailing whitespace and replacing sequential whitespace with
/// a single space"); commas inside a value stay as they are ("Header value
/// with multiple inline values"). Only space and tab are whitespace in an
/// HTTP field (RFC 9110 section 5.6.3; CR and LF are refused earlier): a
/// form feed or vertical tab is a value byte, kept as it is.
fn normalize_value(value: &str) -> String {
    value
        .split([' ', '\t'])
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lower-cased names sorted by byte, duplicates joined with `,` in the
/// caller's order. `host` is always signed; a caller's own `host` header
/// replaces the computed one, as Google's client libraries do.
fn canonical_headers(
    headers: &[(String, String)],
    resumable: bool,
    host: &str,
) -> Vec<(String, String)> {
    let mut list: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), normalize_value(v)))
        .collect();
    if resumable && !list.iter().any(|(k, _)| k == "x-goog-resumable") {
        list.push(("x-goog-resumable".into(), "start".into()));
    }
    if !list.iter().any(|(k, _)| k == "host") {
        list.push(("host".into(), host.to_owned()));
    }
    // Stable sort: duplicates keep the caller's order for the join below.
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(list.len());
    for (name, value) in list {
        match merged.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }
    merged
}

/// `host;x-goog-resumable`
fn signed_header_names(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";")
}

/// Keys and values RFC 3986-encoded, then sorted by encoded key (code
/// point order, so `X-Goog-*` sorts before lower-case keys), then by value.
fn canonical_query(caller: &[(String, String)], own: &[(&str, &str)]) -> Result<String> {
    if let Some((k, _)) = caller
        .iter()
        .find(|(k, _)| OWN_QUERY_KEYS.contains(&k.to_ascii_lowercase().as_str()))
    {
        return Err(Error::invalid(format!(
            "query parameter {k:?} is set by V4 signing itself; remove it from the query"
        )));
    }
    let mut pairs: Vec<(String, String)> = caller
        .iter()
        .map(|(k, v)| (rfc3986(k), rfc3986(v)))
        .chain(own.iter().map(|(k, v)| (rfc3986(k), rfc3986(v))))
        .collect();
    pairs.sort();
    Ok(pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&"))
}

/// A signed `x-goog-content-sha256` header replaces `UNSIGNED-PAYLOAD`
/// ("Signed Payload Instead of UNSIGNED-PAYLOAD").
fn payload_hash(headers: &[(String, String)]) -> &str {
    headers
        .iter()
        .find(|(k, _)| k == "x-goog-content-sha256")
        .map_or(UNSIGNED_PAYLOAD, |(_, v)| v.as_str())
}

fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    signed_headers: &str,
    payload: &str,
) -> String {
    let mut out = String::with_capacity(256);
    for part in [method, path, query] {
        out.push_str(part);
        out.push('\n');
    }
    for (k, v) in headers {
        out.push_str(k);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(payload);
    out
}

fn string_to_sign(datetime: &str, scope: &str, canonical_request: &str) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, canonical_request.as_bytes());
    format!(
        "{ALGORITHM}\n{datetime}\n{scope}\n{}",
        hex_lower(hash.as_ref())
    )
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` in UTC.
fn format_timestamp(secs: i64) -> Result<(String, String)> {
    if !(0..=MAX_TIMESTAMP).contains(&secs) {
        return Err(Error::invalid(format!(
            "signing time {secs} is outside 1970-01-01..9999-12-31; check the system clock"
        )));
    }
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let date = format!("{y:04}{m:02}{d:02}");
    let datetime = format!(
        "{date}T{:02}{:02}{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    Ok((date, datetime))
}

/// Days since 1970-01-01 to a proleptic Gregorian `(year, month, day)`,
/// using 400-year eras (H. Hinnant's `civil_from_days`), so leap years
/// (every 4th, not every 100th, every 400th) need no table.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "signer@p.iam.gserviceaccount.com";
    const T: i64 = 1_549_011_600; // 2019-02-01T09:00:00Z, the vectors' time

    fn req(object: &str) -> UrlRequest {
        UrlRequest::new(Version::V4, "bucket", object)
    }

    fn lines(p: &V4Prepared) -> Vec<&str> {
        p.canonical_request.split('\n').collect()
    }

    #[test]
    fn canonical_request_layout() {
        let p = prepare(&req("o"), EMAIL, T, 10).unwrap();
        assert_eq!(
            p.canonical_request,
            "GET\n/bucket/o\n\
             X-Goog-Algorithm=GOOG4-RSA-SHA256\
             &X-Goog-Credential=signer%40p.iam.gserviceaccount.com%2F20190201%2Fauto%2Fstorage%2Fgoog4_request\
             &X-Goog-Date=20190201T090000Z&X-Goog-Expires=10&X-Goog-SignedHeaders=host\n\
             host:storage.googleapis.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        let hash = ring::digest::digest(&ring::digest::SHA256, p.canonical_request.as_bytes());
        assert_eq!(
            p.string_to_sign,
            format!(
                "GOOG4-RSA-SHA256\n20190201T090000Z\n20190201/auto/storage/goog4_request\n{}",
                hex_lower(hash.as_ref())
            )
        );
        assert!(p
            .url_without_signature
            .starts_with("https://storage.googleapis.com/bucket/o?X-Goog-Algorithm="));
        assert_eq!(
            p.finish(&[0xab, 0x01]),
            format!("{}&X-Goog-Signature=ab01", p.url_without_signature)
        );
    }

    #[test]
    fn object_names_are_encoded_but_keep_slashes() {
        let cases = [
            ("a b", "/bucket/a%20b"),
            ("a+b&c?d#e%f=g", "/bucket/a%2Bb%26c%3Fd%23e%25f%3Dg"),
            ("/lead", "/bucket//lead"),
            ("a//b/", "/bucket/a//b/"),
            ("é/日本", "/bucket/%C3%A9/%E6%97%A5%E6%9C%AC"),
            ("~._-", "/bucket/~._-"),
        ];
        for (object, path) in cases {
            let p = prepare(&req(object), EMAIL, T, 10).unwrap();
            assert_eq!(lines(&p)[1], path, "{object:?}");
            assert!(p
                .url_without_signature
                .contains(&format!("googleapis.com{path}?")));
        }
    }

    #[test]
    fn styles_place_bucket_in_host_or_path() {
        let mut r = req("o");
        r.style = UrlStyle::VirtualHosted;
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        assert!(p
            .url_without_signature
            .starts_with("https://bucket.storage.googleapis.com/o?"));
        assert_eq!(lines(&p)[1], "/o");
        assert_eq!(lines(&p)[3], "host:bucket.storage.googleapis.com");

        r.style = UrlStyle::BucketBound("cdn.example.org".into());
        r.scheme = "http".into();
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        assert!(p
            .url_without_signature
            .starts_with("http://cdn.example.org/o?"));
        assert_eq!(lines(&p)[3], "host:cdn.example.org");
    }

    #[test]
    fn port_stays_in_url_but_not_in_host_header() {
        let mut r = req("o");
        r.host = Some("127.0.0.1:8080".into());
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        assert!(p
            .url_without_signature
            .starts_with("https://127.0.0.1:8080/bucket/o?"));
        assert_eq!(lines(&p)[3], "host:127.0.0.1");
        assert_eq!(host_without_port("[::1]:9000"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("example.org"), "example.org");
    }

    #[test]
    fn headers_are_lowercased_trimmed_collapsed_sorted_and_joined() {
        let mut r = req("o");
        r.headers = vec![
            ("X-Goog-Meta-B".into(), "  two   words\t\there ".into()),
            ("Content-Type".into(), "text/plain".into()),
            ("x-goog-meta-b".into(), "second".into()),
            ("X-GOOG-META-A".into(), "a, b ,c".into()),
        ];
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        let l = lines(&p);
        assert_eq!(
            &l[3..8],
            [
                "content-type:text/plain",
                "host:storage.googleapis.com",
                "x-goog-meta-a:a, b ,c",
                "x-goog-meta-b:two words here,second",
                "",
            ]
        );
        assert_eq!(l[8], "content-type;host;x-goog-meta-a;x-goog-meta-b");
        assert!(l[2]
            .contains("X-Goog-SignedHeaders=content-type%3Bhost%3Bx-goog-meta-a%3Bx-goog-meta-b"));
    }

    #[test]
    fn only_spaces_and_tabs_are_collapsed() {
        assert_eq!(normalize_value(" \t a \t\t b  "), "a b");
        assert_eq!(normalize_value("a\x0cb \x0b c"), "a\x0cb \x0b c");
        assert_eq!(normalize_value("\x0ca"), "\x0ca");
    }

    #[test]
    fn caller_host_header_replaces_computed_one() {
        let mut r = req("o");
        r.headers = vec![("Host".into(), "cdn.example.org".into())];
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        assert_eq!(lines(&p)[3], "host:cdn.example.org");
        assert_eq!(lines(&p)[5], "host");
    }

    #[test]
    fn resumable_signs_a_post_with_x_goog_resumable() {
        let mut r = req("o");
        r.method = "RESUMABLE".into();
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        let l = lines(&p);
        assert_eq!(l[0], "POST");
        assert_eq!(l[4], "x-goog-resumable:start");
        assert_eq!(l[6], "host;x-goog-resumable");
    }

    #[test]
    fn content_sha256_header_replaces_unsigned_payload() {
        let mut r = req("o");
        r.headers = vec![("X-Goog-Content-SHA256".into(), "abc123".into())];
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        assert!(p.canonical_request.ends_with("\nabc123"));
    }

    #[test]
    fn query_is_encoded_and_sorted_by_encoded_key() {
        let mut r = req("o");
        r.query = vec![
            (
                "response-content-disposition".into(),
                "attachment; filename=\"a b+c.png\"".into(),
            ),
            ("a".into(), "2".into()),
            ("a".into(), "1".into()),
            ("Z&?#=%/".into(), "~é".into()),
        ];
        let p = prepare(&r, EMAIL, T, 10).unwrap();
        let q = lines(&p)[2];
        let keys: Vec<&str> = q
            .split('&')
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "X-Goog-Algorithm",
                "X-Goog-Credential",
                "X-Goog-Date",
                "X-Goog-Expires",
                "X-Goog-SignedHeaders",
                "Z%26%3F%23%3D%25%2F",
                "a",
                "a",
                "response-content-disposition",
            ]
        );
        assert!(q.contains("Z%26%3F%23%3D%25%2F=~%C3%A9&a=1&a=2&"));
        assert!(q.ends_with(
            "response-content-disposition=attachment%3B%20filename%3D%22a%20b%2Bc.png%22"
        ));
        // The URL's query is the canonical query itself.
        assert!(p.url_without_signature.ends_with(&format!("?{q}")));
    }

    #[test]
    fn own_query_keys_are_refused() {
        let mut r = req("o");
        r.query = vec![("x-goog-signature".into(), "forged".into())];
        let err = prepare(&r, EMAIL, T, 10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.message().contains("x-goog-signature"));
    }

    #[test]
    fn expiry_bounds() {
        assert!(prepare(&req("o"), EMAIL, T, 1).is_ok());
        assert!(prepare(&req("o"), EMAIL, T, V4_MAX_EXPIRES).is_ok());
        for bad in [0, -1, V4_MAX_EXPIRES + 1, i64::MAX] {
            let err = prepare(&req("o"), EMAIL, T, bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.message().contains("604800"), "{}", err.message());
        }
    }

    #[test]
    fn an_empty_object_names_the_bucket() {
        let p = prepare(&req(""), EMAIL, T, 10).unwrap();
        assert_eq!(lines(&p)[1], "/bucket");
        let mut bad = req("");
        bad.method = "get".into();
        assert!(prepare(&bad, EMAIL, T, 10).is_err());
    }

    #[test]
    fn v2_requests_and_empty_email_are_refused() {
        let r = UrlRequest::new(Version::V2, "b", "o");
        assert_eq!(
            prepare(&r, EMAIL, T, 10).unwrap_err().kind(),
            ErrorKind::Internal
        );
        assert_eq!(
            prepare(&req("o"), "", T, 10).unwrap_err().kind(),
            ErrorKind::Credentials
        );
    }

    #[test]
    fn timestamps_format_in_utc() {
        let f = |s| format_timestamp(s).unwrap().1;
        assert_eq!(f(0), "19700101T000000Z");
        assert_eq!(f(T), "20190201T090000Z");
        assert_eq!(f(951_782_400), "20000229T000000Z"); // 2000 is a leap year (400)
        assert_eq!(f(951_868_799), "20000229T235959Z");
        assert_eq!(f(951_868_800), "20000301T000000Z");
        assert_eq!(f(1_709_164_800), "20240229T000000Z");
        assert_eq!(f(4_107_456_000), "21000228T000000Z"); // 2100 is not (100)
        assert_eq!(f(4_107_542_400), "21000301T000000Z");
        assert_eq!(f(1_735_689_599), "20241231T235959Z");
        assert_eq!(f(MAX_TIMESTAMP), "99991231T235959Z");
        assert!(format_timestamp(-1).is_err());
        assert!(format_timestamp(MAX_TIMESTAMP + 1).is_err());
    }

    #[test]
    fn civil_from_days_agrees_with_day_by_day_counting() {
        // An independent, obviously-correct walk over 1970..2500.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..(530 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
