//! V2 signed URLs, byte for byte what fog-google 1.15 emits
//! (`Utils#host_path_query` + `Real#signature`, docs/facts.md#v2-signing and #fog-url-path),
//! so switching a GitLab install to this signer changes no URL.
//!
//! ```text
//! string to sign = METHOD "\n"
//!                  headers["Content-MD5"] "\n"       exact key, "" when absent
//!                  headers["Content-Type"] "\n"      exact key, "" when absent
//!                  EXPIRES "\n"                      Unix seconds
//!                  { key ":" value "\n" }            keys starting "x-goog-" (case-sensitive), sorted, values raw
//!                  "/" PATH [ "?" sub "&" sub ... ]  subs: acl cors location logging requestPayment versions versioning
//!
//! URL            = SCHEME "://" HOST "/" PATH "?"
//!                  { key "=" Fog::Google.escape(value) "&" }   caller query, caller order, keys raw
//!                  "GoogleAccessId=" EMAIL                     raw
//!                  "&Signature=" CGI.escape(Base64.encode64(signature).chomp)
//!                  "&Expires=" EXPIRES
//! ```
//!
//! fog keeps headers and query in Ruby Hashes, so a repeated name counts
//! once, at its first position, with its last value; [`prepare`] does the
//! same with the request's pair lists.

use crate::encoding::{cgi_escape, fog115_path, fog_escape, ruby_encode64_chomp};
use crate::error::{Error, ErrorKind, Result};
use crate::request::{UrlRequest, Version};

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
        Some(p) => {
            check_encoded_path(p)?;
            p.clone()
        }
        None => fog115_path(&format!("{}/{}", req.bucket, req.object)),
    };
    let headers = ruby_hash(&req.headers);
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

fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map_or("", |(_, v)| v)
}

fn string_to_sign(
    method: &str,
    headers: &[(&str, &str)],
    expires: i64,
    path: &str,
    query: &[(&str, &str)],
) -> String {
    let mut out = format!(
        "{method}\n{}\n{}\n{expires}\n",
        header(headers, "Content-MD5"),
        header(headers, "Content-Type"),
    );
    out.push_str(&canonical_extension_headers(headers));
    out.push_str(&canonical_resource(path, query));
    out
}

/// fog: `key[0..6] == "x-goog-"` (case-sensitive), `sort_by` key, `"key:value\n"`.
/// Ruby compares strings by bytes, as `str::cmp` does; keys are unique here.
fn canonical_extension_headers(headers: &[(&str, &str)]) -> String {
    let mut goog: Vec<&(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-goog-"))
        .collect();
    goog.sort_by(|a, b| a.0.cmp(b.0));
    goog.iter().map(|(k, v)| format!("{k}:{v}\n")).collect()
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
    fn content_headers_by_exact_name_and_sorted_x_goog_headers() {
        let mut r = req("o");
        r.method = "PUT".into();
        r.headers = vec![
            ("x-goog-meta-z".into(), " spaced  value ".into()),
            ("Content-Type".into(), "image/png".into()),
            ("content-md5".into(), "ignored: not the exact name".into()),
            ("X-Goog-Acl".into(), "ignored: upper case".into()),
            ("x-goog-acl".into(), "public-read".into()),
            ("Content-MD5".into(), "md5==".into()),
        ];
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert_eq!(
            p.string_to_sign,
            "PUT\nmd5==\nimage/png\n1700000000\n\
             x-goog-acl:public-read\nx-goog-meta-z: spaced  value \n/bucket/o"
        );
    }

    #[test]
    fn repeated_names_behave_like_a_ruby_hash() {
        let mut r = req("o");
        r.headers = vec![
            ("Content-Type".into(), "a".into()),
            ("Content-Type".into(), "b".into()),
        ];
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
        r.v2_path = Some("bucket/a%20b+c.png".into());
        r.host = Some("127.0.0.1:8080".into());
        r.scheme = "http".into();
        let p = prepare(&r, EMAIL, EXPIRES).unwrap();
        assert!(p.string_to_sign.ends_with("\n/bucket/a%20b+c.png"));
        assert!(p
            .finish(b"s")
            .starts_with("http://127.0.0.1:8080/bucket/a%20b+c.png?GoogleAccessId="));
        for bad in ["", "a b", "a?b", "a#b", "é"] {
            r.v2_path = Some(bad.into());
            let err = prepare(&r, EMAIL, EXPIRES).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
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
