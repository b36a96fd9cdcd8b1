//! Ruby values to core types. The Ruby layer (lib/gitlab_gcs_signer/signer.rb)
//! owns the keyword arguments and their defaults; strings and name/value
//! Hashes are checked here, where it costs less than in Ruby on the cache-hit
//! path (bench/hit_cost.rb). Anything unexpected is an `ArgumentError`.

use magnus::encoding::EncodingCapable;
use magnus::value::ReprValue;
use magnus::{prelude::*, Error, RArray, RHash, RModule, RString, Ruby, Symbol, TryConvert, Value};

pub fn arg<T: TryConvert>(ruby: &Ruby, args: &[Value], i: usize, name: &str) -> Result<T, Error> {
    let value = args
        .get(i)
        .copied()
        .ok_or_else(|| Error::new(ruby.exception_arg_error(), format!("missing {name}")))?;
    T::try_convert(value).map_err(|e| {
        Error::new(
            ruby.exception_arg_error(),
            format!("{name}: {}", e.to_string().replace('\n', " ")),
        )
    })
}

/// A Ruby String as UTF-8 text. Another encoding is converted with
/// `String#encode`; invalid byte sequences and NUL bytes are an
/// `ArgumentError` rather than something signed.
pub fn text(ruby: &Ruby, value: Value, name: &str) -> Result<String, Error> {
    text_named(ruby, value, || name.to_owned())
}

/// [`text`], with the argument's name built only for an error message.
fn text_named(ruby: &Ruby, value: Value, name: impl Fn() -> String) -> Result<String, Error> {
    let Some(s) = RString::from_value(value) else {
        return Err(arg_error(
            ruby,
            format!("{} must be a String, got {}", name(), class_name(value)),
        ));
    };
    let index = s.enc_get();
    // SAFETY (both slices): the bytes are copied before any Ruby code runs.
    let bytes = if index == ruby.utf8_encindex() || index == ruby.usascii_encindex() {
        unsafe { s.as_slice() }.to_vec()
    } else {
        let converted: RString = s.funcall("encode", ("UTF-8",)).map_err(|e| {
            let why = e.to_string();
            arg_error(
                ruby,
                format!("{} cannot be converted to UTF-8 ({why})", name()),
            )
        })?;
        unsafe { converted.as_slice() }.to_vec()
    };
    let text = String::from_utf8(bytes)
        .map_err(|_| arg_error(ruby, format!("{} is not valid UTF-8", name())))?;
    if text.contains('\0') {
        return Err(arg_error(ruby, format!("{} contains a NUL byte", name())));
    }
    Ok(text)
}

fn class_name(value: Value) -> String {
    // SAFETY: the class name is copied at once.
    unsafe { value.classname() }.into_owned()
}

fn arg_error(ruby: &Ruby, message: String) -> Error {
    Error::new(ruby.exception_arg_error(), message)
}

/// A Hash of names (String or Symbol) to values (String or Numeric), in
/// its order; also an Array of `[name, value]` pairs.
pub fn pairs(
    ruby: &Ruby,
    args: &[Value],
    i: usize,
    name: &str,
) -> Result<Vec<(String, String)>, Error> {
    pair_list(ruby, arg(ruby, args, i, name)?, name, false)
}

/// [`pairs`] of `value`; with `drop_nil`, a pair whose name or value is nil
/// is left out (as fog-google leaves it out of a URL's query) rather than
/// refused.
fn pair_list(
    ruby: &Ruby,
    value: Value,
    name: &str,
    drop_nil: bool,
) -> Result<Vec<(String, String)>, Error> {
    let pair = |k: Value, v: Value| -> Result<(String, String), Error> {
        let key = match Symbol::from_value(k) {
            Some(sym) => sym.name()?.into_owned(),
            None => text(ruby, k, name)?,
        };
        let value = if RString::from_value(v).is_none() && v.is_kind_of(ruby.class_numeric()) {
            // A Numeric's to_s may return anything; only a String is text.
            let s: Value = v.funcall("to_s", ())?;
            text_named(ruby, s, || format!("{name}[{key:?}].to_s"))?
        } else {
            text_named(ruby, v, || format!("{name}[{key:?}]"))?
        };
        Ok((key, value))
    };
    let dropped = |k: Value, v: Value| drop_nil && (k.is_nil() || v.is_nil());
    if let Some(hash) = RHash::from_value(value) {
        let mut out = Vec::with_capacity(hash.len());
        hash.foreach(|k: Value, v: Value| {
            if !dropped(k, v) {
                out.push(pair(k, v)?);
            }
            Ok(magnus::r_hash::ForEach::Continue)
        })?;
        return Ok(out);
    }
    let Some(list) = RArray::from_value(value) else {
        return Err(arg_error(
            ruby,
            format!("{name} must be a Hash, got {}", class_name(value)),
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for j in 0..list.len() {
        let entry: RArray = list.entry(j as isize)?;
        if entry.len() != 2 {
            return Err(arg_error(ruby, format!("{name} must be name/value pairs")));
        }
        let (k, v) = (entry.entry(0)?, entry.entry(1)?);
        if !dropped(k, v) {
            out.push(pair(k, v)?);
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------
// Keyword arguments to typed requests, once, at the boundary.
//
// `Signer#signed_url(**request)` hands its keyword Hash over as it is; it
// is read here in one pass (`rb_hash_foreach`), each key matched against
// the static Symbols below, into a `UrlRequest` with named fields. Adding
// an option touches `UrlRequest`, one arm below and the docs.

use crate::clock::ManualClock;
use gcs_signer::cache::CacheConfig;
use gcs_signer::config;
use gcs_signer::credentials::CredentialOptions;
use gcs_signer::refresh::RefreshConfig;
use gcs_signer::signer::{Expiry, SignerOptions};
use gcs_signer::stale::StaleConfig;
use gcs_signer::{UrlRequest, UrlStyle, V2Path, Version};
use magnus::rb_sys::AsRawValue;
use magnus::{Float, Integer, StaticSymbol};
use std::borrow::Cow;
use std::sync::OnceLock;

/// A request as `signed_url`'s keywords describe it.
pub struct Request {
    pub req: UrlRequest,
    pub expiry: Expiry,
    pub timestamp: Option<i64>,
}

/// `signed_url`'s keywords, in the positional form's order (see
/// [`url_request`]; the fog shim passes the first ten: `[version, method,
/// scheme, host, bucket, object, headers, query, expires_at, v2_path]`).
/// The names are exported to Ruby as `Native::REQUEST_KEYS`.
pub const REQUEST_KEYS: [(&str, Key); 14] = [
    ("version", Key::Version),
    ("method", Key::Method),
    ("scheme", Key::Scheme),
    ("host", Key::Host),
    ("bucket", Key::Bucket),
    ("object", Key::Object),
    ("headers", Key::Headers),
    ("query", Key::Query),
    ("expires_at", Key::ExpiresAt),
    ("v2_path", Key::V2Path),
    ("url_style", Key::UrlStyle),
    ("bucket_bound_hostname", Key::BucketBoundHostname),
    ("expires_in", Key::ExpiresIn),
    ("timestamp", Key::Timestamp),
];

/// One of `signed_url`'s keywords (a `match` on these is a jump table, on
/// the cache-hit path).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Version,
    Method,
    Scheme,
    Host,
    Bucket,
    Object,
    Headers,
    Query,
    ExpiresAt,
    V2Path,
    UrlStyle,
    BucketBoundHostname,
    ExpiresIn,
    Timestamp,
}

const SIGNER_KEYS: [&str; 14] = [
    "credentials",
    "service_account_email",
    "metadata_host",
    "iam_endpoint",
    "delegates",
    "cache",
    "timeout",
    "max_sign_blob_per_minute",
    "max_sign_blob_in_flight",
    "clock",
    "universe_domain",
    "universe_domain_from_metadata",
    "stale_if_error",
    "refresh_ahead",
];

const CACHE_KEYS: [&str; 3] = ["extension_ratio", "max_extension", "max_entries"];

/// Static Symbols are immediates that are never collected, so their raw
/// values can be kept and compared without the GVL's help.
struct Names {
    request: [u64; REQUEST_KEYS.len()],
    signer: [u64; SIGNER_KEYS.len()],
    cache: [u64; CACHE_KEYS.len()],
    v2: u64,
    v4: u64,
    path: u64,
    virtual_hosted: u64,
    bucket_bound_hostname: u64,
    addressable: u64,
}

static NAMES: OnceLock<Names> = OnceLock::new();

fn raw(ruby: &Ruby, name: &str) -> u64 {
    let sym: StaticSymbol = ruby.sym_new(name);
    raw_value(sym.as_value())
}

/// A VALUE's bits, to compare with the interned names. VALUE is the width
/// of a C `unsigned long`: u64 on the 64-bit Linux targets, hence the cast
/// is a no-op there and clippy's lint is silenced here, once.
#[allow(clippy::unnecessary_cast)]
fn raw_value(value: Value) -> u64 {
    value.as_raw() as u64
}

/// `Native::REQUEST_KEYS`: the request keywords as frozen Symbols, in the
/// positional form's order (lib/gitlab_gcs_signer/signing.rb turns that form
/// back into keywords for its events).
pub fn define_request_keys(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let keys = ruby.ary_from_iter(REQUEST_KEYS.iter().map(|(name, _)| ruby.to_symbol(name)));
    keys.freeze();
    native.const_set("REQUEST_KEYS", keys)
}

/// Interns the names; called from `init`, with the GVL.
pub fn init(ruby: &Ruby) {
    let raw = |name: &str| raw(ruby, name);
    NAMES.get_or_init(|| Names {
        request: REQUEST_KEYS.map(|(name, _)| raw(name)),
        signer: SIGNER_KEYS.map(raw),
        cache: CACHE_KEYS.map(raw),
        v2: raw("v2"),
        v4: raw("v4"),
        path: raw("path"),
        virtual_hosted: raw("virtual_hosted"),
        bucket_bound_hostname: raw("bucket_bound_hostname"),
        addressable: raw("addressable"),
    });
}

fn names() -> &'static Names {
    NAMES
        .get()
        .expect("convert::init runs when the extension loads")
}

fn key_index(keys: &[u64], key: Value) -> Option<usize> {
    let raw = raw_value(key);
    keys.iter().position(|k| *k == raw)
}

fn unknown_key(ruby: &Ruby, key: Value) -> Error {
    let shown: String = key
        .funcall::<_, _, String>("inspect", ())
        .unwrap_or_else(|_| "?".into());
    arg_error(ruby, format!("unknown keyword: {shown}"))
}

fn inspect(value: Value) -> String {
    value
        .funcall::<_, _, String>("inspect", ())
        .map(|s| {
            let s: String = s.chars().take(100).collect();
            s
        })
        .unwrap_or_else(|_| class_name(value))
}

fn core_error(ruby: &Ruby, err: gcs_signer::Error) -> Error {
    crate::errors::to_ruby(ruby, err)
}

/// `:v2`/`"v2"` and the like: a Symbol or String from a fixed set.
fn choice(ruby: &Ruby, value: Value, name: &str, allowed: &[(u64, &str)]) -> Result<usize, Error> {
    let raw = raw_value(value);
    if let Some(i) = allowed.iter().position(|(sym, _)| *sym == raw) {
        return Ok(i);
    }
    let text = match Symbol::from_value(value) {
        Some(sym) => Some(sym.name()?.into_owned()),
        None => RString::from_value(value).and_then(|s| s.to_string().ok()),
    };
    if let Some(i) = text.and_then(|t| allowed.iter().position(|(_, n)| *n == t)) {
        return Ok(i);
    }
    let names: Vec<String> = allowed.iter().map(|(_, n)| format!(":{n}")).collect();
    Err(arg_error(
        ruby,
        format!(
            "unknown {name} {}: use {}",
            inspect(value),
            names.join(", ")
        ),
    ))
}

/// A real, finite number as `f64`. Integers too large for one are kept as
/// large as possible (`f64::MAX`), so limits refuse them; the caller's own
/// text goes into any message ([`inspect`]).
fn number(ruby: &Ruby, value: Value, name: &str) -> Result<f64, Error> {
    if let Some(f) = Float::from_value(value) {
        let f = f.to_f64();
        if f.is_finite() {
            return Ok(f);
        }
    } else if let Some(i) = Integer::from_value(value) {
        return Ok(match i.to_i64() {
            Ok(i) => i as f64,
            Err(_) if value.funcall::<_, _, bool>("negative?", ())? => f64::MIN,
            Err(_) => f64::MAX,
        });
    } else if value.is_kind_of(ruby.class_numeric()) && value.funcall::<_, _, bool>("real?", ())? {
        let f: f64 = value.funcall("to_f", ())?;
        if f.is_finite() {
            return Ok(f);
        }
    }
    Err(arg_error(
        ruby,
        format!("{name} must be a finite number, got {}", inspect(value)),
    ))
}

/// Unix seconds from a Time (or anything with `to_time`: DateTime,
/// ActiveSupport::TimeWithZone) or a number. A Time with a fraction of a
/// second is rounded up, so the URL is valid at least until then.
fn epoch(ruby: &Ruby, value: Value, name: &str, round_up: bool) -> Result<f64, Error> {
    let mut value = value;
    if !value.is_kind_of(ruby.class_time())
        && !value.is_kind_of(ruby.class_numeric())
        && value.respond_to("to_time", false)?
    {
        value = value.funcall("to_time", ())?;
    }
    if let Some(time) = magnus::Time::from_value(value) {
        // One C call (rb_time_timespec, protected), not `to_i` and `nsec`
        // dispatched: this is on every cache hit. A Time beyond the C
        // range raises Ruby's ArgumentError ("time out of range").
        let spec = time.timespec()?;
        let round = round_up && spec.tv_nsec != 0;
        return Ok((spec.tv_sec + i64::from(round)) as f64);
    }
    if value.is_kind_of(ruby.class_numeric()) {
        return number(ruby, value, name);
    }
    Err(arg_error(
        ruby,
        format!(
            "{name} must be a Time or a Unix timestamp, got {}",
            class_name(value)
        ),
    ))
}

/// The common values of `method:` and `scheme:`, borrowed rather than
/// allocated on the cache-hit path.
const STATIC_WORDS: [&str; 10] = [
    "GET",
    "HEAD",
    "PUT",
    "POST",
    "DELETE",
    "PATCH",
    "OPTIONS",
    "RESUMABLE",
    "https",
    "http",
];

fn interned(text: String) -> Cow<'static, str> {
    match STATIC_WORDS.iter().find(|w| **w == text) {
        Some(w) => Cow::Borrowed(w),
        None => Cow::Owned(text),
    }
}

/// An HTTP verb: a String or Symbol, in any case.
fn verb(ruby: &Ruby, value: Value) -> Result<Cow<'static, str>, Error> {
    let mut text = match Symbol::from_value(value) {
        Some(sym) => sym.name()?.into_owned(),
        None => text(ruby, value, "method")?,
    };
    if !text.bytes().all(|b| b.is_ascii_uppercase()) {
        text.make_ascii_uppercase();
    }
    Ok(interned(text))
}

/// A keyword Hash, else `ArgumentError` (never a `TypeError`).
fn keywords(ruby: &Ruby, value: Value, what: &str) -> Result<RHash, Error> {
    RHash::from_value(value).ok_or_else(|| {
        arg_error(
            ruby,
            format!("{what} takes a Hash of keywords, got {}", class_name(value)),
        )
    })
}

/// `signed_url`'s request as a typed request: its keyword Hash, or the
/// positional form the fog shim builds on the cache-hit path (no Hash to
/// build or walk): an Array in [`REQUEST_KEYS`] order, nil meaning "not
/// given" (except `object`, where nil asks for a bucket-level URL, as
/// `object: nil` does). The positional form carries fog's own arguments,
/// so its query may hold nil entries: they are left out, as fog does.
pub fn url_request(ruby: &Ruby, request: Value) -> Result<Request, Error> {
    let mut kw = RequestKeywords::new();
    if let Some(list) = RArray::from_value(request) {
        kw.positional = true;
        if list.len() > REQUEST_KEYS.len() {
            return Err(arg_error(
                ruby,
                format!(
                    "a positional request has at most {} values, got {}",
                    REQUEST_KEYS.len(),
                    list.len()
                ),
            ));
        }
        for (i, (_, key)) in REQUEST_KEYS.iter().enumerate().take(list.len()) {
            let value: Value = list.entry(i as isize)?;
            // object: nil is a value (a bucket-level URL), not "not given".
            if !value.is_nil() || *key == Key::Object {
                kw.set_key(ruby, *key, value)?;
            }
        }
        return kw.finish(ruby);
    }
    let hash = keywords(ruby, request, "signed_url")?;
    hash.foreach(|key: Value, value: Value| {
        kw.set(ruby, key, value)?;
        Ok(magnus::r_hash::ForEach::Continue)
    })?;
    kw.finish(ruby)
}

/// `signed_url`'s keywords as read one by one; the checks that need several
/// of them (required keys, style, expiry) run in [`RequestKeywords::finish`].
struct RequestKeywords {
    req: UrlRequest,
    bucket: bool,
    object: bool,
    style: usize,
    bound: Option<String>,
    expires_in: Option<(f64, Value)>,
    expires_at: Option<f64>,
    timestamp: Option<i64>,
    /// Read from the positional form (the fog shim's).
    positional: bool,
}

impl RequestKeywords {
    fn new() -> Self {
        RequestKeywords {
            req: UrlRequest::new(Version::V4, String::new(), String::new()),
            bucket: false,
            object: false,
            style: 0,
            bound: None,
            expires_in: None,
            expires_at: None,
            timestamp: None,
            positional: false,
        }
    }

    /// One keyword, converted and checked on its own.
    fn set(&mut self, ruby: &Ruby, key: Value, value: Value) -> Result<(), Error> {
        match key_index(&names().request, key) {
            Some(i) => self.set_key(ruby, REQUEST_KEYS[i].1, value),
            None => Err(unknown_key(ruby, key)),
        }
    }

    /// The keyword `key`.
    fn set_key(&mut self, ruby: &Ruby, key: Key, value: Value) -> Result<(), Error> {
        let n = names();
        let req = &mut self.req;
        match key {
            Key::Version => {
                let v = choice(ruby, value, "version", &[(n.v2, "v2"), (n.v4, "v4")])?;
                req.version = if v == 0 { Version::V2 } else { Version::V4 };
            }
            Key::Method => req.method = verb(ruby, value)?,
            Key::Scheme => req.scheme = interned(text(ruby, value, "scheme")?),
            Key::Host => req.host = opt(ruby, value, "host")?,
            Key::Bucket => {
                req.bucket = text(ruby, value, "bucket")?;
                self.bucket = true;
            }
            Key::Object => {
                self.object = true;
                if !value.is_nil() {
                    req.object = text(ruby, value, "object")?;
                    if req.object.is_empty() {
                        return Err(arg_error(
                            ruby,
                            "object must not be empty (pass object: nil for a bucket-level URL)"
                                .into(),
                        ));
                    }
                }
            }
            Key::Headers => req.headers = hash_pairs(ruby, value, "headers", false)?,
            // The positional form is fog's arguments: fog-google leaves query
            // entries with a nil name or value out of its URLs
            // (storage_json/utils.rb, `reject { |k, v| k.nil? || v.nil? }`).
            Key::Query => req.query = hash_pairs(ruby, value, "query", self.positional)?,
            Key::ExpiresAt if !value.is_nil() => {
                self.expires_at = Some(epoch(ruby, value, "expires_at", true)?)
            }
            // v2_path: :addressable names fog-google >= 1.21's path encoding,
            // applied when a URL is signed (not on the cache-hit path).
            Key::V2Path if raw_value(value) == n.addressable => req.v2_path = V2Path::Addressable,
            Key::V2Path => {
                req.v2_path = opt(ruby, value, "v2_path")?.map_or(V2Path::Fog115, V2Path::Encoded)
            }
            Key::UrlStyle => {
                self.style = choice(
                    ruby,
                    value,
                    "url_style",
                    &[
                        (n.path, "path"),
                        (n.virtual_hosted, "virtual_hosted"),
                        (n.bucket_bound_hostname, "bucket_bound_hostname"),
                    ],
                )?
            }
            Key::BucketBoundHostname => self.bound = opt(ruby, value, "bucket_bound_hostname")?,
            Key::ExpiresIn if !value.is_nil() => {
                self.expires_in = Some((number(ruby, value, "expires_in")?, value))
            }
            Key::Timestamp if !value.is_nil() => {
                self.timestamp = Some(epoch(ruby, value, "timestamp", false)?.floor() as i64)
            }
            _ => {}
        }
        Ok(())
    }

    /// The checks across keywords, in the order callers have always seen them.
    fn finish(self, ruby: &Ruby) -> Result<Request, Error> {
        if !self.bucket || !self.object {
            let missing = if self.bucket { ":object" } else { ":bucket" };
            return Err(arg_error(ruby, format!("missing keyword: {missing}")));
        }
        let mut req = self.req;
        req.style = url_style(ruby, self.style, self.bound)?;
        let expiry = expiry(ruby, req.version, self.expires_in, self.expires_at)?;
        Ok(Request {
            req,
            expiry,
            timestamp: self.timestamp,
        })
    }
}

/// `url_style:` as chosen; the bucket-bound style needs its host name.
fn url_style(ruby: &Ruby, style: usize, bound: Option<String>) -> Result<UrlStyle, Error> {
    Ok(match style {
        0 => UrlStyle::Path,
        1 => UrlStyle::VirtualHosted,
        _ => UrlStyle::BucketBound(bound.ok_or_else(|| {
            arg_error(
                ruby,
                "url_style: :bucket_bound_hostname needs bucket_bound_hostname:".into(),
            )
        })?),
    })
}

/// Exactly one of `expires_in:` and `expires_at:`; a relative one within the version's limit.
fn expiry(
    ruby: &Ruby,
    version: Version,
    expires_in: Option<(f64, Value)>,
    expires_at: Option<f64>,
) -> Result<Expiry, Error> {
    Ok(match (expires_in, expires_at) {
        (Some((secs, given)), None) => {
            config::expires_in(version == Version::V4, secs, &inspect(given))
                .map_or_else(|e| Err(core_error(ruby, e)), |()| Ok(Expiry::In(secs)))?
        }
        (None, Some(at)) => Expiry::At(at),
        _ => {
            return Err(core_error(
                ruby,
                gcs_signer::Error::invalid(config::EXPIRY_EXCLUSIVE),
            ))
        }
    })
}

fn opt(ruby: &Ruby, value: Value, name: &str) -> Result<Option<String>, Error> {
    if value.is_nil() {
        Ok(None)
    } else {
        text(ruby, value, name).map(Some)
    }
}

fn hash_pairs(
    ruby: &Ruby,
    value: Value,
    name: &str,
    drop_nil: bool,
) -> Result<Vec<(String, String)>, Error> {
    if RHash::from_value(value).is_none() {
        return Err(arg_error(
            ruby,
            format!("{name} must be a Hash, got {}", class_name(value)),
        ));
    }
    pair_list(ruby, value, name, drop_nil)
}

/// An Integer option in `1..=max`, shown as given when refused.
fn count(ruby: &Ruby, value: Value, name: &str, max: u64) -> Result<u64, Error> {
    let checked = match Integer::from_value(value).map(|i| i.to_i64()) {
        Some(Ok(i)) => config::count(name, i, max),
        _ => Err(config::count_error(name, &inspect(value), max)),
    };
    checked.map_err(|e| core_error(ruby, e))
}

fn int_option(
    ruby: &Ruby,
    value: Value,
    check: fn(i64) -> gcs_signer::Result<i64>,
    error: fn(&str) -> gcs_signer::Error,
) -> Result<i64, Error> {
    let checked = match Integer::from_value(value).map(|i| i.to_i64()) {
        Some(Ok(i)) => check(i),
        _ => Err(error(&inspect(value))),
    };
    checked.map_err(|e| core_error(ruby, e))
}

fn cache_config(ruby: &Ruby, value: Value) -> Result<Option<CacheConfig>, Error> {
    if value.as_raw() == ruby.qfalse().as_value().as_raw() {
        return Ok(None);
    }
    let Some(hash) = RHash::from_value(value) else {
        return Err(arg_error(
            ruby,
            format!("cache: give false or a Hash, not {}", class_name(value)),
        ));
    };
    let n = names();
    let mut config = CacheConfig::default();
    hash.foreach(|key: Value, value: Value| {
        match key_index(&n.cache, key) {
            Some(0) => {
                let ratio = Float::from_value(value).map(|f| f.to_f64()).or_else(|| {
                    Integer::from_value(value)
                        .and_then(|i| i.to_i64().ok())
                        .map(|i| i as f64)
                });
                config.extension_ratio = ratio
                    .and_then(|r| config::extension_ratio(r).ok())
                    .ok_or_else(|| {
                        core_error(ruby, config::extension_ratio_error(&inspect(value)))
                    })?;
            }
            Some(1) => {
                config.max_extension = int_option(
                    ruby,
                    value,
                    config::max_extension,
                    config::max_extension_error,
                )?
            }
            Some(_) => {
                config.max_entries = int_option(
                    ruby,
                    value,
                    |i| config::max_entries(i).map(|n| n as i64),
                    config::max_entries_error,
                )? as usize
            }
            None => {
                let shown = inspect(key);
                return Err(arg_error(ruby, format!("unknown cache option: {shown}")));
            }
        }
        Ok(magnus::r_hash::ForEach::Continue)
    })?;
    Ok(Some(config))
}

/// `Signer.new`'s keyword Hash (without `shared_cache:`, which Ruby
/// keeps) as the core's options.
/// `stale_if_error:` true, false/nil, or a Hash of min_life:, min_ratio:,
/// probe_interval: (src/stale.rs checks the values).
fn stale_config(ruby: &Ruby, value: Value) -> Result<Option<StaleConfig>, Error> {
    let mut config = StaleConfig::default();
    let Some(hash) = option_hash(ruby, value, "stale_if_error")? else {
        return Ok(None);
    };
    hash.foreach(|key: Value, value: Value| {
        match symbol_name(key).as_deref() {
            Some("min_life") => config.min_life = i64::try_convert(value)?,
            Some("min_ratio") => config.min_ratio = f64::try_convert(value)?,
            Some("probe_interval") => config.probe_interval = i64::try_convert(value)?,
            _ => {
                let shown = inspect(key);
                return Err(arg_error(
                    ruby,
                    format!("unknown stale_if_error option: {shown}"),
                ));
            }
        }
        Ok(magnus::r_hash::ForEach::Continue)
    })?;
    config.validate().map_err(|e| core_error(ruby, e))?;
    Ok(Some(config))
}

/// `refresh_ahead:` true, false/nil, or a Hash of lead:, max_quota_share:
/// (src/refresh.rs checks the values).
fn refresh_config(ruby: &Ruby, value: Value) -> Result<Option<RefreshConfig>, Error> {
    let mut config = RefreshConfig::default();
    let Some(hash) = option_hash(ruby, value, "refresh_ahead")? else {
        return Ok(None);
    };
    hash.foreach(|key: Value, value: Value| {
        match symbol_name(key).as_deref() {
            Some("lead") => config.lead = f64::try_convert(value)?,
            Some("max_quota_share") => config.max_quota_share = f64::try_convert(value)?,
            _ => {
                let shown = inspect(key);
                return Err(arg_error(
                    ruby,
                    format!("unknown refresh_ahead option: {shown}"),
                ));
            }
        }
        Ok(magnus::r_hash::ForEach::Continue)
    })?;
    config.validate().map_err(|e| core_error(ruby, e))?;
    Ok(Some(config))
}

/// None for false/nil, an empty Hash for true, the Hash itself otherwise.
fn option_hash(ruby: &Ruby, value: Value, name: &str) -> Result<Option<RHash>, Error> {
    if value.is_nil() || value.as_raw() == ruby.qfalse().as_value().as_raw() {
        return Ok(None);
    }
    if value.as_raw() == ruby.qtrue().as_value().as_raw() {
        return Ok(Some(ruby.hash_new()));
    }
    RHash::from_value(value).map(Some).ok_or_else(|| {
        arg_error(
            ruby,
            format!(
                "{name}: give true, false or a Hash, not {}",
                class_name(value)
            ),
        )
    })
}

fn symbol_name(key: Value) -> Option<String> {
    magnus::Symbol::from_value(key).and_then(|s| s.name().ok().map(|n| n.into_owned()))
}

pub fn signer_options(ruby: &Ruby, hash: Value) -> Result<SignerOptions, Error> {
    let hash = keywords(ruby, hash, "Signer.new")?;
    let n = names();
    let mut credentials = CredentialOptions::default();
    let mut options = SignerOptions::default();
    let mut timeout = config::TIMEOUT;
    hash.foreach(|key: Value, value: Value| {
        let Some(i) = key_index(&n.signer, key) else {
            return Err(unknown_key(ruby, key));
        };
        match i {
            0 => credentials.credentials = credentials_option(ruby, value)?,
            1 => credentials.service_account_email = opt(ruby, value, "service_account_email")?,
            2 => credentials.metadata_host = opt(ruby, value, "metadata_host")?,
            3 => credentials.iam_endpoint = opt(ruby, value, "iam_endpoint")?,
            4 => credentials.delegates = delegates(ruby, value)?,
            5 => options.cache = cache_config(ruby, value)?,
            6 => timeout = timeout_option(ruby, value)?,
            7 => {
                credentials.quota.max_per_minute = count(
                    ruby,
                    value,
                    "max_sign_blob_per_minute",
                    u64::from(config::SIGN_BLOB_PER_MINUTE_MAX),
                )? as u32
            }
            8 => {
                credentials.quota.max_in_flight = count(
                    ruby,
                    value,
                    "max_sign_blob_in_flight",
                    config::SIGN_BLOB_IN_FLIGHT_MAX as u64,
                )? as usize
            }
            10 => credentials.universe_domain = opt(ruby, value, "universe_domain")?,
            11 => credentials.universe_from_metadata = value.to_bool(),
            12 => options.stale = stale_config(ruby, value)?,
            13 => options.refresh = refresh_config(ruby, value)?,
            _ => {
                if !value.is_nil() {
                    options.clock = manual_clock(ruby, value)?;
                }
            }
        }
        Ok(magnus::r_hash::ForEach::Continue)
    })?;
    credentials.timeout = timeout;
    options.credentials = credentials;
    options.timeout = timeout;
    Ok(options)
}

/// `credentials:`: a path or JSON text; a blank one is a mistake, not "use ADC".
fn credentials_option(ruby: &Ruby, value: Value) -> Result<Option<String>, Error> {
    let credentials = opt(ruby, value, "credentials")?;
    if credentials.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err(arg_error(ruby, "credentials must not be empty".into()));
    }
    Ok(credentials)
}

/// `delegates:`: nil, one email or an Array of them.
fn delegates(ruby: &Ruby, value: Value) -> Result<Vec<String>, Error> {
    if value.is_nil() {
        Ok(Vec::new())
    } else if let Some(list) = RArray::from_value(value) {
        let mut out = Vec::with_capacity(list.len());
        for j in 0..list.len() {
            out.push(text(ruby, list.entry(j as isize)?, "delegates")?);
        }
        Ok(out)
    } else {
        Ok(vec![text(ruby, value, "delegates")?])
    }
}

/// `timeout:`: a Float or Integer number of seconds within the core's limits.
fn timeout_option(ruby: &Ruby, value: Value) -> Result<std::time::Duration, Error> {
    match Float::from_value(value).map(|f| f.to_f64()).or_else(|| {
        Integer::from_value(value)
            .and_then(|i| i.to_i64().ok())
            .map(|i| i as f64)
    }) {
        Some(secs) => config::timeout(secs).ok(),
        None => None,
    }
    .ok_or_else(|| core_error(ruby, config::timeout_error(&inspect(value))))
}

/// `clock:` (tests only): the shared clock inside a ManualClock.
fn manual_clock(
    ruby: &Ruby,
    value: Value,
) -> Result<std::sync::Arc<gcs_signer::clock::ManualClock>, Error> {
    let clock = <&ManualClock>::try_convert(value).map_err(|_| {
        arg_error(
            ruby,
            "clock: give a GitlabGcsSigner::Native::ManualClock or nil".into(),
        )
    })?;
    Ok(clock.0.clone())
}
