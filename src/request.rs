//! What a caller asks for: one signed URL, described without any notion of
//! time. Everything here shapes the URL, so everything here is in the cache
//! key ([`UrlRequest::cache_key`]); time (signing date, expiry) is not.

use crate::error::{Error, Result};
use std::borrow::Cow;

/// Google's default endpoint for both V2 and V4 URLs.
pub const DEFAULT_HOST: &str = crate::config::STORAGE_HOST;

/// The longest life a V4 URL may have (7 days), Google's limit.
pub const V4_MAX_EXPIRES: i64 = crate::config::V4_MAX_EXPIRES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V4,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UrlStyle {
    /// `https://host/bucket/object`
    Path,
    /// `https://bucket.host/object`
    VirtualHosted,
    /// `https://bound-hostname/object` (a CNAME or load balancer bound to the bucket)
    BucketBound(String),
}

/// V2 only: how `bucket/object` is written into the URL path (and the
/// signed resource). Each installed fog-google writes it its own way; the
/// fog shim names the way, and the path itself is only built when a URL is
/// signed, never on the cache-hit path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum V2Path {
    /// fog-google 1.15's own escaping (up to fog-google 1.20).
    #[default]
    Fog115,
    /// Addressable's path encoding, as fog-google >= 1.21 writes it
    /// ([`crate::encoding::addressable_path`]).
    Addressable,
    /// Exactly this path, already percent-encoded by the caller.
    Encoded(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlRequest {
    pub version: Version,
    /// Upper-case HTTP verb (`GET`, `PUT`, `DELETE`, `HEAD`, `POST`, `RESUMABLE` for V4).
    /// A `Cow`, so the common verbs cost no allocation on the cache-hit path.
    pub method: Cow<'static, str>,
    pub bucket: String,
    pub object: String,
    /// Headers the client must send. V4 signs them all; V2 signs
    /// `Content-MD5`, `Content-Type` and `x-goog-*` ones, as fog-google does.
    pub headers: Vec<(String, String)>,
    /// Extra query parameters, in the caller's order (V2 keeps that order in
    /// the URL, V4 sorts them).
    pub query: Vec<(String, String)>,
    /// `https` or `http`.
    pub scheme: Cow<'static, str>,
    /// Endpoint host, optionally with a port (`localhost:8080`); `None` means
    /// [`DEFAULT_HOST`].
    pub host: Option<String>,
    pub style: UrlStyle,
    /// V2 only: how the `bucket/object` path is encoded.
    pub v2_path: V2Path,
}

impl UrlRequest {
    /// A GET request for `bucket/object` with every other field at its default.
    pub fn new(version: Version, bucket: impl Into<String>, object: impl Into<String>) -> Self {
        UrlRequest {
            version,
            method: "GET".into(),
            bucket: bucket.into(),
            object: object.into(),
            headers: Vec::new(),
            query: Vec::new(),
            scheme: "https".into(),
            host: None,
            style: UrlStyle::Path,
            v2_path: V2Path::Fog115,
        }
    }

    /// The endpoint host (with its port, if any).
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or(DEFAULT_HOST)
    }

    /// Checks what no signature can fix: the caller gets `ArgumentError`.
    pub fn validate(&self) -> Result<()> {
        self.validate_bucket()?;
        self.validate_object()?;
        self.validate_method_and_scheme()?;
        self.validate_endpoint()?;
        self.validate_headers()?;
        self.validate_query()?;
        if self.version == Version::V2 && self.style != UrlStyle::Path {
            return Err(Error::invalid(
                "V2 URLs are built in path style only (as fog-google does); use version: :v4 for other styles",
            ));
        }
        Ok(())
    }

    /// The bucket goes into the path (or host) verbatim: no dot segments or separators.
    fn validate_bucket(&self) -> Result<()> {
        if self.bucket.is_empty() {
            return Err(Error::invalid("bucket must not be empty"));
        }
        if self.bucket.len() > crate::config::BUCKET_MAX_LEN {
            return Err(Error::invalid(format!(
                "bucket name is longer than {} characters",
                crate::config::BUCKET_MAX_LEN
            )));
        }
        if self.bucket == "." || self.bucket == ".." {
            // A dot segment: clients remove it from the path before sending.
            return Err(Error::invalid(format!(
                "bucket {:?} is not a valid bucket name (a dot segment names no bucket)",
                self.bucket
            )));
        }
        if self
            .bucket
            .chars()
            .any(|c| c == '/' || c.is_control() || c.is_whitespace())
        {
            return Err(Error::invalid(format!(
                "bucket {:?} is not a valid bucket name (no slashes, spaces or control characters)",
                shown(&self.bucket)
            )));
        }
        Ok(())
    }

    /// Cloud Storage's object-name limits, and no dot segment a client would collapse.
    fn validate_object(&self) -> Result<()> {
        // An empty object names the bucket itself; only V4 signs that.
        if self.object.is_empty() && self.version != Version::V4 {
            return Err(Error::invalid(
                "object must not be empty (a bucket-level URL needs version: :v4 and object: nil)",
            ));
        }
        if self.object.len() > crate::config::OBJECT_MAX_BYTES {
            return Err(Error::invalid(format!(
                "object name is longer than {} bytes, the Cloud Storage limit",
                crate::config::OBJECT_MAX_BYTES
            )));
        }
        if self.object.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(Error::invalid(
                "object name contains a carriage return or line feed, which Cloud Storage forbids",
            ));
        }
        if self.object.split('/').any(|seg| seg == "." || seg == "..") {
            return Err(dot_segment_error(&self.object));
        }
        Ok(())
    }

    /// Both are signed verbatim, so only well-formed values are accepted.
    fn validate_method_and_scheme(&self) -> Result<()> {
        if self.method.is_empty()
            || self.method.len() > MAX_METHOD_LEN
            || !self.method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return Err(Error::invalid(format!(
                "method {:?} is not an upper-case HTTP verb such as GET, PUT, DELETE or HEAD",
                shown(&self.method)
            )));
        }
        if self.scheme != "https" && self.scheme != "http" {
            return Err(Error::invalid(format!(
                "scheme {:?} is not \"https\" or \"http\"",
                shown(&self.scheme)
            )));
        }
        Ok(())
    }

    /// The host, and whether the URL style can put the bucket where it asks.
    fn validate_endpoint(&self) -> Result<()> {
        if let Some(host) = &self.host {
            validate_host("host", host)?;
        }
        if self.style == UrlStyle::VirtualHosted
            && !self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            // The bucket becomes part of the host name, unencoded.
            return Err(Error::invalid(format!(
                "bucket {:?} cannot be a host name for a virtual-hosted URL; use url_style: :path",
                shown(&self.bucket)
            )));
        }
        if self.style == UrlStyle::VirtualHosted && self.host().starts_with('[') {
            // `bucket.[::1]:443` is no host name (found by tests/url_properties.rs).
            return Err(Error::invalid(
                "virtual-hosted URLs put the bucket in front of the host name, which an IPv6 \
                 address cannot take; use url_style: :path",
            ));
        }
        if let UrlStyle::BucketBound(h) = &self.style {
            validate_host("bucket_bound_hostname", h)?;
        }
        Ok(())
    }

    /// Signed headers must be sendable: token names, no line breaks (header injection).
    fn validate_headers(&self) -> Result<()> {
        for (k, v) in &self.headers {
            if k.is_empty() || !k.bytes().all(is_tchar) {
                return Err(Error::invalid(format!(
                    "header name {:?} is not a valid HTTP header name (RFC 9110 token: letters, \
                     digits and !#$%&'*+-.^_`|~)",
                    shown(k)
                )));
            }
            if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == b'\0') {
                return Err(Error::invalid(format!(
                    "header {:?} has a value with a line break or NUL byte",
                    shown(k)
                )));
            }
        }
        Ok(())
    }

    /// An empty parameter name would sign as `=value`, which no server reads back.
    fn validate_query(&self) -> Result<()> {
        if self.query.iter().any(|(k, _)| k.is_empty()) {
            return Err(Error::invalid("query parameter names must not be empty"));
        }
        Ok(())
    }

    /// Everything that shapes the URL, except time, as one unambiguous
    /// string: each field is length-prefixed so no two requests share a key.
    /// The signing identity is prepended by the cache.
    pub fn cache_key(&self) -> String {
        let mut key = String::new();
        self.write_cache_key(&mut key);
        key
    }

    /// An upper bound of the cache key's length, so building it allocates once.
    pub fn cache_key_capacity(&self) -> usize {
        let field = |s: &str| s.len() + 21;
        let pairs: usize = self
            .headers
            .iter()
            .chain(&self.query)
            .map(|(k, v)| field(k) + field(v))
            .sum();
        8 + 2 * 21
            + field(&self.method)
            + field(&self.scheme)
            + self.host.as_deref().map_or(21, field)
            + match &self.style {
                UrlStyle::BucketBound(h) => field(h),
                _ => 0,
            }
            + field(&self.bucket)
            + field(&self.object)
            + match &self.v2_path {
                V2Path::Encoded(p) => field(p),
                _ => 1,
            }
            + pairs
    }

    /// [`UrlRequest::cache_key`], appended to `key` (the cache-hit path
    /// builds the signer's identity and this in one allocation).
    pub fn write_cache_key(&self, key: &mut String) {
        key.reserve(self.cache_key_capacity());
        fn push(key: &mut String, s: &str) {
            push_len(key, s.len());
            key.push(':');
            key.push_str(s);
        }
        /// The decimal length, without the allocation of `to_string`.
        fn push_len(key: &mut String, mut n: usize) {
            let mut digits = [0u8; 20];
            let mut i = digits.len();
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            for &d in &digits[i..] {
                key.push(char::from(d));
            }
        }
        key.push_str(match self.version {
            Version::V2 => "2",
            Version::V4 => "4",
        });
        push(key, &self.method);
        push(key, &self.scheme);
        push(key, self.host.as_deref().unwrap_or(""));
        match &self.style {
            UrlStyle::Path => key.push('p'),
            UrlStyle::VirtualHosted => key.push('v'),
            UrlStyle::BucketBound(h) => {
                key.push('b');
                push(key, h);
            }
        }
        push(key, &self.bucket);
        push(key, &self.object);
        match &self.v2_path {
            V2Path::Fog115 => key.push('-'),
            V2Path::Addressable => key.push('a'),
            V2Path::Encoded(p) => push(key, p),
        }
        key.push('h');
        push_len(key, self.headers.len());
        key.push(':');
        for (k, v) in &self.headers {
            push(key, k);
            push(key, v);
        }
        key.push('q');
        push_len(key, self.query.len());
        key.push(':');
        for (k, v) in &self.query {
            push(key, k);
            push(key, v);
        }
    }
}

/// Longer than any HTTP verb (`RESUMABLE` is the longest this gem signs).
const MAX_METHOD_LEN: usize = 32;

/// A caller's value as quoted in an error message: cut to its first 100
/// characters, so that a 10 MB argument does not become a 10 MB message.
pub(crate) fn shown(value: &str) -> String {
    const MAX: usize = 100;
    match value.char_indices().nth(MAX) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// RFC 9110 section 5.6.2 `tchar`: what a header name (a token) is made of.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An object name with a `.` or `..` path segment: every HTTP client
/// removes those before sending (RFC 3986 section 5.2.4), and browsers
/// also remove their percent-encoded forms (`%2E%2E`), so no URL reaches it.
pub(crate) fn dot_segment_error(object: &str) -> Error {
    Error::invalid(format!(
        "object name {:?} has a \".\" or \"..\" path segment, which HTTP clients remove before \
         sending (RFC 3986 section 5.2.4), so no signed URL can reach it; rename the object",
        shown(object)
    ))
}

/// `host [":" port]` where host is a name (letters, digits, `-`, `_`,
/// dot-separated non-empty labels) or a bracketed IPv6 literal, and port
/// is 1 to 65535 (RFC 3986 section 3.2.2, without user info).
fn host_syntax_ok(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if inner.is_empty()
            || !inner.contains(':')
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        if after.is_empty() {
            return true;
        }
        match after.strip_prefix(':') {
            Some(port) => ("x", Some(port)),
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let name_ok = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65_535).contains(&n))
    });
    name_ok && port_ok
}

fn validate_host(what: &str, host: &str) -> Result<()> {
    let ok = !host.is_empty() && host.len() <= 255 && host_syntax_ok(host);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {:?} is not a host name with an optional port (e.g. \"storage.googleapis.com\" or \"127.0.0.1:8080\")",
            shown(host)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Mutation = Box<dyn Fn(&mut UrlRequest)>;

    #[test]
    fn cache_key_separates_fields_that_concatenate_alike() {
        let mut a = UrlRequest::new(Version::V4, "ab", "c");
        let mut b = UrlRequest::new(Version::V4, "a", "bc");
        assert_ne!(a.cache_key(), b.cache_key());
        a.query = vec![("k".into(), "v&x=y".into())];
        b = UrlRequest::new(Version::V4, "ab", "c");
        b.query = vec![("k".into(), "v".into()), ("x".into(), "y".into())];
        assert_ne!(a.cache_key(), b.cache_key());
    }

    #[test]
    fn cache_key_covers_every_field() {
        let base = UrlRequest::new(Version::V2, "b", "o");
        let variants: Vec<Mutation> = vec![
            Box::new(|r| r.version = Version::V4),
            Box::new(|r| r.method = "PUT".into()),
            Box::new(|r| r.scheme = "http".into()),
            Box::new(|r| r.host = Some("h:1".into())),
            Box::new(|r| r.style = UrlStyle::VirtualHosted),
            Box::new(|r| r.style = UrlStyle::BucketBound("x".into())),
            Box::new(|r| r.bucket = "c".into()),
            Box::new(|r| r.object = "p".into()),
            Box::new(|r| r.v2_path = V2Path::Encoded("b/o".into())),
            Box::new(|r| r.v2_path = V2Path::Addressable),
            Box::new(|r| r.headers = vec![("a".into(), "b".into())]),
            Box::new(|r| r.query = vec![("a".into(), "b".into())]),
        ];
        for change in variants {
            let mut r = base.clone();
            change(&mut r);
            assert_ne!(r.cache_key(), base.cache_key(), "{r:?}");
        }
    }

    #[test]
    fn valid_hosts_and_names() {
        for host in [
            "storage.googleapis.com",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:9000",
            "[::ffff:127.0.0.1]:1",
            "my_host-1:65535",
        ] {
            let mut r = UrlRequest::new(Version::V4, "b", "o");
            r.host = Some(host.into());
            assert!(r.validate().is_ok(), "{host}");
        }
        for object in ["a..b", "...", "a/.b/c.", ".hidden", "a//b"] {
            let r = UrlRequest::new(Version::V4, "b", object);
            assert!(r.validate().is_ok(), "{object}");
        }
        let mut r = UrlRequest::new(Version::V4, "b", "o");
        r.headers = vec![("X-Goog-Meta-A!#$%&'*+-.^_`|~1".into(), "v".into())];
        assert!(r.validate().is_ok());
    }

    #[test]
    fn validation_rejects_bad_input() {
        let ok = UrlRequest::new(Version::V4, "b", "o");
        assert!(ok.validate().is_ok());
        let bad: Vec<Mutation> = vec![
            Box::new(|r| r.bucket.clear()),
            // V2 has no bucket-level URL
            Box::new(|r| {
                r.object.clear();
                r.version = Version::V2;
            }),
            Box::new(|r| r.bucket = "a/b".into()),
            Box::new(|r| r.object = "a\nb".into()),
            Box::new(|r| r.method = "get".into()),
            Box::new(|r| r.scheme = "ftp".into()),
            Box::new(|r| r.host = Some("a b".into())),
            Box::new(|r| r.headers = vec![("x".into(), "a\r\nb".into())]),
            Box::new(|r| r.object = "x".repeat(1025)),
            // m5: header names are RFC 9110 tokens
            Box::new(|r| r.headers = vec![("x-goog-meta-a;b".into(), "v".into())]),
            Box::new(|r| r.headers = vec![("a(b)".into(), "v".into())]),
            // m7: host syntax and dot segments
            Box::new(|r| r.host = Some("evil.com]:1:2".into())),
            Box::new(|r| r.host = Some("[::1".into())),
            Box::new(|r| r.host = Some("a:1:2".into())),
            Box::new(|r| r.host = Some("a:0".into())),
            Box::new(|r| r.host = Some("a:65536".into())),
            Box::new(|r| r.host = Some("a..b".into())),
            Box::new(|r| r.host = Some("[]".into())),
            Box::new(|r| r.host = Some("[::1]x".into())),
            Box::new(|r| r.bucket = "..".into()),
            Box::new(|r| r.bucket = ".".into()),
            Box::new(|r| r.object = "../secret".into()),
            Box::new(|r| r.object = "a/./b".into()),
            Box::new(|r| r.object = "a/..".into()),
        ];
        for change in bad {
            let mut r = ok.clone();
            change(&mut r);
            let err = r.validate().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{r:?}");
        }
    }
}
