//! V2 signed URLs, byte for byte what fog-google 1.15 emits
//! (`Utils#host_path_query` + `Real#signature`, docs/facts.md#v2-signing and #fog-url-path),
//! so switching a GitLab install to this signer changes no URL.
//!
//! ```text
//! string to sign = METHOD "\n"
//!                  Content-MD5 value "\n"            any case, trimmed, "" when absent
//!                  Content-Type value "\n"           any case, trimmed, "" when absent
//!                  EXPIRES "\n"                      Unix seconds
//!                  { name ":" value "\n" }           x-goog-* names lower-cased, sorted, values
//!                                                    trimmed, repeats joined with ","; not the
//!                                                    x-goog-encryption-key(-sha256) headers
//!                  "/" PATH [ "?" sub "&" sub ... ]  subs: acl cors location logging requestPayment versions versioning
//!
//! URL            = SCHEME "://" HOST "/" PATH "?"
//!                  { key "=" Fog::Google.escape(value) "&" }   caller query, caller order, keys raw
//!                  "GoogleAccessId=" EMAIL                     raw
//!                  "&Signature=" CGI.escape(Base64.encode64(signature).chomp)
//!                  "&Expires=" EXPIRES
//! ```
//!
//! Headers follow Cloud Storage, which reads names case-insensitively
//! ("Canonical extension headers" in
//! <https://cloud.google.com/storage/docs/access-control/signed-urls-v2>):
//! fog-google 1.15 matches only its own spellings (`Content-Type`,
//! `x-goog-...`) and leaves others out of the signature, so a restriction
//! spelt `content-type` or `X-Goog-Meta-Owner` was silently dropped. Here
//! every spelling is signed, which gives fog's own bytes for fog's
//! spellings; a header V2 cannot sign at all (anything but Content-MD5,
//! Content-Type and x-goog-*) is refused, never dropped. The two headers
//! that carry a customer-supplied encryption key and its hash are left out
//! of the string to sign, as Cloud Storage leaves them out (the request
//! must still send them, and Cloud Storage checks the key itself).
//!
//! fog keeps the query in a Ruby Hash, so a repeated name counts once, at
//! its first position, with its last value; [`prepare`] does the same with
//! the request's query pairs.

use crate::encoding::{self, cgi_escape, fog115_path, fog_escape, ruby_encode64_chomp};
use crate::error::{Error, ErrorKind, Result};
use crate::request::{UrlRequest, V2Path, Version};

/// Query keys fog-google appends to the canonical resource (`Real#signature`).
const SUB_RESOURCES: [&str; 7] = [
    "acl",
    "cors",
    "location",
    "logging",
    "requestPayment",
    "versions",
    "versioning",
];

/// Query parameters V2 signing writes itself; a caller's copy would make
/// the URL ambiguous (each would appear twice), so it is refused.
const OWN_QUERY_KEYS: [&str; 3] = ["googleaccessid", "expires", "signature"];

/// x-goog-* headers Cloud Storage leaves out of the V2 string to sign: a
/// customer-supplied encryption key is a secret, never signed.
const UNSIGNED_HEADERS: [&str; 2] = ["x-goog-encryption-key", "x-goog-encryption-key-sha256"];

/// Everything about a V2 URL except its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Prepared {
    /// What the signer signs (RSA-SHA256, PKCS#1 v1.5).
    pub string_to_sign: String,
    /// The URL through `GoogleAccessId=<email>`.
    url_before_signature: String,
    expires: i64,
}

impl V2Prepared {
    /// The signed URL, `Signature` and `Expires` last, as fog-google writes them.
    pub fn finish(&self, signature: &[u8]) -> String {
        let encoded = cgi_escape(&ruby_encode64_chomp(signature));
        format!(
            "{}&Signature={encoded}&Expires={}",
            self.url_before_signature, self.expires
        )
    }
}

/// Prepares a path-style V2 URL signed by `email` that expires at
/// `expires_epoch` (absolute Unix seconds, fog's `expires.to_i`).
pub fn prepare(req: &UrlRequest, email: &str, expires_epoch: i64) -> Result<V2Prepared> {
    if req.version != Version::V2 {
        return Err(Error::internal(
            "v2::prepare was given a request for a V4 URL",
        ));
    }
    // validate() also refuses every style but path for V2.
    req.validate()?;
    if email.is_empty() {
        return Err(Error::new(
            ErrorKind::Credentials,
            "the signing service account email is empty; set service_account_email or use credentials that name one",
        ));
    }
    if expires_epoch <= 0 {
        return Err(Error::invalid(format!(
            "V2 expiry must be an absolute Unix time in seconds, got {expires_epoch}"
        )));
    }
    check_query_keys(&req.query)?;
    let path = match &req.v2_path {
        V2Path::Encoded(p) => {
            check_encoded_path(p)?;
            p.clone()
        }
        V2Path::Addressable => {
            let p = encoding::addressable_path(&format!("{}/{}", req.bucket, req.object));
            check_encoded_path(&p)?;
            p
        }
        V2Path::Fog115 => fog115_path(&format!("{}/{}", req.bucket, req.object)),
    };
    let headers = canonical_headers(&req.headers)?;
    let query = ruby_hash(&req.query);
    let string_to_sign = string_to_sign(&req.method, &headers, expires_epoch, &path, &query);
    let url_before_signature = url_before_signature(req, &path, &query, email);
    Ok(V2Prepared {
        string_to_sign,
        url_before_signature,
        expires: expires_epoch,
    })
}

/// A caller-encoded path goes into the URL verbatim, so it must already be
/// URL-safe: no spaces, controls, `?` or `#`, nothing outside ASCII.
fn check_encoded_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::invalid("v2_path must not be empty"));
    }
    // Clients (browsers also in their encoded forms) remove dot segments.
    let dot = |seg: &str| {
        let seg = seg.to_ascii_lowercase().replace("%2e", ".");
        seg == "." || seg == ".."
    };
    if path.split('/').any(dot) {
        return Err(crate::request::dot_segment_error(path));
    }
    match path
        .bytes()
        .find(|b| !b.is_ascii_graphic() || matches!(b, b'?' | b'#'))
    {
        None => Ok(()),
        Some(b) => Err(Error::invalid(format!(
            "v2_path must be percent-encoded already, but contains {:?}",
            b as char
        ))),
    }
}

/// fog-google writes V2 query keys into the URL unescaped (`k.to_s`). Most
/// unusual keys survive that (a client escapes a space or `é` on the way
/// out, and V2 does not sign the query), but `&`, `=`, `#`, `%`, `+` and
/// control characters would make the URL name other parameters than were
/// asked for (found by tests/url_properties.rs), so those are refused.
fn check_query_keys(query: &[(String, String)]) -> Result<()> {
    if let Some((k, _)) = query
        .iter()
        .find(|(k, _)| OWN_QUERY_KEYS.contains(&k.to_ascii_lowercase().as_str()))
    {
        return Err(Error::invalid(format!(
            "query parameter {:?} is set by V2 signing itself; remove it from the query",
            crate::request::shown(k)
        )));
    }
    match query
        .iter()
        .find(|(k, _)| k.chars().any(|c| "&=#%+".contains(c) || c.is_control()))
    {
        None => Ok(()),
        Some((k, _)) => Err(Error::invalid(format!(
            "V2 query parameter name {:?} contains a character that changes the URL's meaning \
             when written unescaped, as V2 URLs carry names (like fog-google); rename it or use \
             version: :v4",
            crate::request::shown(k)
        ))),
    }
}

/// Pairs as a Ruby Hash would hold them: a repeated key keeps its first
/// position and takes its last value.
/// Indexed, so 100k pairs cost milliseconds, not the seconds a linear
/// search per pair took (spec/hardening/bad_input_spec.rb).
fn ruby_hash(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::with_capacity(pairs.len());
    let mut index: std::collections::HashMap<&str, usize> =
        std::collections::HashMap::with_capacity(pairs.len());
    for (k, v) in pairs {
        match index.get(k.as_str()) {
            Some(&i) => out[i].1 = v,
            None => {
                index.insert(k, out.len());
                out.push((k, v));
            }
        }
    }
    out
}

/// The headers as Cloud Storage reads them for V2: Content-MD5 and
/// Content-Type by value, x-goog-* as canonical extension headers.
#[derive(Debug, Default)]
struct V2Headers {
    content_md5: Option<String>,
    content_type: Option<String>,
    /// Lower-case names, sorted, repeats joined with "," in the caller's order.
    extension: Vec<(String, String)>,
}

/// Leading and trailing spaces and tabs go: the whitespace around the
/// colon of a header line is not part of its value (RFC 9110 section 5.5).
fn trim_value(value: &str) -> &str {
    value.trim_matches(|c| c == ' ' || c == '\t')
}

fn canonical_headers(headers: &[(String, String)]) -> Result<V2Headers> {
    let mut out = V2Headers::default();
    // Indexed, so 100k headers cost milliseconds (spec/hardening/bad_input_spec.rb).
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let value = trim_value(value);
        let slot = match lower.as_str() {
            "content-md5" => &mut out.content_md5,
            "content-type" => &mut out.content_type,
            n if n.starts_with("x-goog-") => {
                if UNSIGNED_HEADERS.contains(&n) {
                    continue;
                }
                match index.get(&lower) {
                    Some(&i) => {
                        let joined = &mut out.extension[i].1;
                        joined.push(',');
                        joined.push_str(value);
                    }
                    None => {
                        index.insert(lower.clone(), out.extension.len());
                        out.extension.push((lower, value.to_owned()));
                    }
                }
                continue;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "header {:?} cannot be signed in a V2 URL (V2 signs only Content-MD5, \
                     Content-Type and x-goog-* headers), so the URL would not require it; \
                     use version: :v4 or leave the header out",
                    crate::request::shown(name)
                )))
            }
        };
        match slot {
            Some(old) if old != value => {
                return Err(Error::invalid(format!(
                    "header {:?} is given twice with different values; a request carries one",
                    crate::request::shown(name)
                )))
            }
            _ => *slot = Some(value.to_owned()),
        }
    }
    out.extension.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn string_to_sign(
    method: &str,
    headers: &V2Headers,
    expires: i64,
    path: &str,
    query: &[(&str, &str)],
) -> String {
    let mut out = format!(
        "{method}\n{}\n{}\n{expires}\n",
        headers.content_md5.as_deref().unwrap_or(""),
        headers.content_type.as_deref().unwrap_or(""),
    );
    for (k, v) in &headers.extension {
        out.push_str(k);
        out.push(':');
        out.push_str(v);
        out.push('\n');
    }
    out.push_str(&canonical_resource(path, query));
    out
}

/// `"/" + path`, then `?` and the sub-resource keys in query order joined
/// by `&` (fog appends `"key&"` each and `chop!`s the last character).
fn canonical_resource(path: &str, query: &[(&str, &str)]) -> String {
    let subs: Vec<&str> = query
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| SUB_RESOURCES.contains(k))
        .collect();
    if subs.is_empty() {
        format!("/{path}")
    } else {
        format!("/{path}?{}", subs.join("&"))
    }
}

fn url_before_signature(
    req: &UrlRequest,
    path: &str,
    query: &[(&str, &str)],
    email: &str,
) -> String {
    let mut url = format!("{}://{}/{path}?", req.scheme, req.host());
    for (k, v) in query {
        // fog writes keys as given (`k.to_s`) and escapes only values.
        url.push_str(k);
        url.push('=');
        url.push_str(&fog_escape(v));
        url.push('&');
    }
    url.push_str("GoogleAccessId=");
    url.push_str(email);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::UrlStyle;

    const EMAIL: &str = "signer@p.iam.gserviceaccount.com";
    const EXPIRES: i64 = 1_700_000_000;

    fn req(object: &str) -> UrlRequest {
        UrlRequest::new(Version::V2, "bucket", object)
    }

    #[test]
    fn plain_get() {
        let p = prepare(&req("dir/a b+c.png"), EMAIL, EXPIRES).unwrap();
        assert_eq!(
            p.string_to_sign,
            "GET\n\n\n1700000000\n/bucket/dir/a%20b%2Bc.png"
        );
        assert_eq!(
            p.finish(&[0xfb, 0xff, 0xbf]),
            "https://storage.googleapis.com/bucket/dir/a%20b%2Bc.png?\
             GoogleAccessId=signer@p.iam.gserviceaccount.com&Signature=%2B%2F%2B%2F&Expires=1700000000"
        );
    }

    #[test]
    fn headers_in_any_case_are_signed_like_cloud_storage_reads_them() {
        let mut r = req("o");
        r.method = "PUT".into();
        r.headers = vec![
            ("x-goog-meta-z".into(), " spaced  value ".into()),
            ("content-type".into(), "image/png".into()),
            ("X-Goog-Acl".into(), "public-read".into()),
            ("CONTENT-MD5".into(), "\tmd5==".into()),
            ("x-goog-meta-z".into(), "second".into()),
        ];
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert_eq!(
            p.string_to_sign,
            "PUT\nmd5==\nimage/png\n1700000000\n\
             x-goog-acl:public-read\nx-goog-meta-z:spaced  value,second\n/bucket/o"
        );
        // fog-google's own spellings give fog's bytes.
        r.headers = vec![
            ("Content-Type".into(), "image/png".into()),
            ("x-goog-acl".into(), "public-read".into()),
            ("Content-MD5".into(), "md5==".into()),
        ];
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert_eq!(
            p.string_to_sign,
            "PUT\nmd5==\nimage/png\n1700000000\nx-goog-acl:public-read\n/bucket/o"
        );
    }

    #[test]
    fn headers_v2_cannot_sign_are_refused() {
        let mut r = req("o");
        for (name, value) in [
            ("Cache-Control", "no-store"),
            ("Content-Disposition", "attachment"),
            ("X-Custom", "1"),
        ] {
            r.headers = vec![(name.into(), value.into())];
            let err = prepare(&r, EMAIL, EXPIRES).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{name}");
            assert!(err.message().contains("cannot be signed"), "{name}");
        }
        r.headers = vec![
            ("Content-Type".into(), "a".into()),
            ("content-type".into(), "b".into()),
        ];
        assert_eq!(
            prepare(&r, EMAIL, EXPIRES).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        r.headers = vec![
            ("Content-Type".into(), "a".into()),
            ("content-type".into(), " a".into()),
        ];
        assert!(prepare(&r, EMAIL, EXPIRES).is_ok());
    }

    #[test]
    fn customer_supplied_encryption_key_headers_are_not_signed() {
        let mut r = req("o");
        r.headers = vec![
            ("x-goog-encryption-algorithm".into(), "AES256".into()),
            ("X-Goog-Encryption-Key".into(), "c2VjcmV0".into()),
            ("x-goog-encryption-key-sha256".into(), "aGFzaA==".into()),
        ];
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert_eq!(
            p.string_to_sign,
            "GET\n\n\n1700000000\nx-goog-encryption-algorithm:AES256\n/bucket/o"
        );
        assert!(!p.finish(b"s").contains("c2VjcmV0"));
    }

    #[test]
    fn own_query_keys_are_refused() {
        let mut r = req("o");
        for key in [
            "Expires",
            "Signature",
            "GoogleAccessId",
            "expires",
            "SIGNATURE",
        ] {
            r.query = vec![(key.into(), "1".into())];
            let err = prepare(&r, EMAIL, EXPIRES).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{key}");
            assert!(err.message().contains("set by V2 signing itself"), "{key}");
        }
    }

    #[test]
    fn repeated_query_names_behave_like_a_ruby_hash() {
        let mut r = req("o");
        r.headers = vec![("Content-Type".into(), "b".into())];
        r.query = vec![
            ("x".into(), "1".into()),
            ("y".into(), "2".into()),
            ("x".into(), "3".into()),
        ];
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert!(p.string_to_sign.starts_with("GET\n\nb\n"));
        assert!(p.finish(b"s").contains("/bucket/o?x=3&y=2&GoogleAccessId="));
    }

    #[test]
    fn sub_resources_join_the_canonical_resource_in_query_order() {
        let mut r = req("o");
        r.query = vec![
            ("versions".into(), "".into()),
            ("response-content-type".into(), "text/plain".into()),
            ("acl".into(), "".into()),
            ("ACL".into(), "".into()),
        ];
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert!(p.string_to_sign.ends_with("\n/bucket/o?versions&acl"));
    }

    #[test]
    fn query_values_use_fog_escape_and_keys_stay_raw() {
        let mut r = req("o");
        r.query = vec![
            (
                "response-content-disposition".into(),
                "attachment; filename=\"a~b é.png\"".into(),
            ),
            ("raw key~".into(), "v".into()),
        ];
        let url = prepare(&r, EMAIL, EXPIRES).unwrap().finish(b"s");
        assert!(url.contains(
            "?response-content-disposition=attachment%3B%20filename%3D%22a%7Eb%20%C3%A9.png%22\
             &raw key~=v&GoogleAccessId="
        ));
        // Raw, these would make the URL name other parameters.
        for bad in ["a&b", "a=b", "k#", "50%", "a+b", "tab\t"] {
            r.query = vec![(bad.into(), "v".into())];
            let err = prepare(&r, EMAIL, EXPIRES).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        r.query = vec![("response-content-disposition".into(), "x".into())];
        // V2 does not sign the query (except sub-resources).
        assert!(!prepare(&r, EMAIL, EXPIRES)
            .unwrap()
            .string_to_sign
            .contains("response"));
    }

    #[test]
    fn signature_keeps_ruby_line_breaks_as_percent_0a() {
        let sig = [0xa5u8; 256];
        let url = prepare(&req("o"), EMAIL, EXPIRES).unwrap().finish(&sig);
        let signature = url
            .split("&Signature=")
            .nth(1)
            .unwrap()
            .split("&Expires=")
            .next()
            .unwrap();
        assert_eq!(signature.matches("%0A").count(), 5);
        assert!(!signature.contains('\n') && !signature.contains('+'));
        assert!(url.ends_with("&Expires=1700000000"));
    }

    #[test]
    fn object_names_use_fog_1_15_escaping() {
        let cases = [
            ("/lead", "bucket//lead"),
            ("a//b", "bucket/a//b"),
            ("&?#%=~*'()", "bucket/%26%3F%23%25%3D~%2A%27%28%29"),
            ("é", "bucket/%C3%A9"),
        ];
        for (object, path) in cases {
            let p = prepare(&req(object), EMAIL, EXPIRES).unwrap();
            assert!(
                p.string_to_sign.ends_with(&format!("\n/{path}")),
                "{object:?}"
            );
            assert!(
                p.finish(b"s").contains(&format!(".com/{path}?")),
                "{object:?}"
            );
        }
    }

    #[test]
    fn v2_path_is_used_verbatim_in_url_and_resource() {
        let mut r = req("a b+c.png");
        r.v2_path = V2Path::Encoded("bucket/a%20b+c.png".into());
        r.host = Some("127.0.0.1:8080".into());
        r.scheme = "http".into();
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert!(p.string_to_sign.ends_with("\n/bucket/a%20b+c.png"));
        assert!(p
            .finish(b"s")
            .starts_with("http://127.0.0.1:8080/bucket/a%20b+c.png?GoogleAccessId="));
        for bad in [
            "",
            "a b",
            "a?b",
            "a#b",
            "é",
            "bucket/../x",
            "bucket/%2e%2E/x",
            "bucket/.",
        ] {
            r.v2_path = V2Path::Encoded(bad.into());
            let err = prepare(&r, EMAIL, EXPIRES).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn addressable_path_is_encoded_when_signing() {
        let mut r = req("a b+c [1].png");
        r.v2_path = V2Path::Addressable;
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        // Addressable keeps sub-delimiters (+) and encodes space and brackets.
        assert!(
            p.string_to_sign
                .ends_with("\n/bucket/a%20b+c%20%5B1%5D.png"),
            "{}",
            p.string_to_sign
        );
        assert!(p
            .finish(b"s")
            .contains(".com/bucket/a%20b+c%20%5B1%5D.png?GoogleAccessId="));
        // Not the default (fog-google 1.15's) encoding of the same object.
        r.v2_path = V2Path::Fog115;
        assert_ne!(
            prepare(&r, EMAIL, EXPIRES).unwrap().string_to_sign,
            p.string_to_sign
        );
    }

    #[test]
    fn refuses_what_fog_cannot_express() {
        let mut r = req("o");
        r.style = UrlStyle::VirtualHosted;
        assert_eq!(
            prepare(&r, EMAIL, EXPIRES).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            prepare(&req("o"), EMAIL, 0).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            prepare(&req("o"), "", EXPIRES).unwrap_err().kind(),
            ErrorKind::Credentials
        );
        let v4 = UrlRequest::new(Version::V4, "b", "o");
        assert_eq!(
            prepare(&v4, EMAIL, EXPIRES).unwrap_err().kind(),
            ErrorKind::Internal
        );
    }
}
