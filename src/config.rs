//! Every default and limit of the gem, defined once, with the one message
//! that refuses a value outside it. The Ruby binding exports [`DEFAULTS`]
//! as the frozen `GitlabGcsSigner::DEFAULTS` Hash; Ruby code reads that
//! constant and never repeats a number, and every argument is checked here
//! (through the functions below), so a limit has one value and one message
//! wherever it is enforced.

use crate::error::{Error, Result};
use std::time::Duration;

// ---------------------------------------------------------------- endpoints

/// Google's endpoint for V2 and V4 signed URLs.
pub const STORAGE_HOST: &str = "storage.googleapis.com";
/// The GCE / GKE metadata server (the same as `metadata.google.internal`,
/// without needing DNS).
pub const METADATA_HOST: &str = "169.254.169.254";
/// IAM Credentials (`signBlob`, `generateAccessToken`).
pub const IAM_ENDPOINT: &str = "https://iamcredentials.googleapis.com";
/// OAuth 2.0 token endpoint (service-account JWT grant, user refresh tokens).
pub const OAUTH_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

// ----------------------------------------------------------------- the cache

/// A URL may live at most this share of its lifetime longer than asked...
pub const CACHE_EXTENSION_RATIO: f64 = 0.1;
/// ...and never more than this many seconds longer (README "The cache").
pub const CACHE_MAX_EXTENSION: i64 = 300;
/// Bound on cached URLs (each costs about 1 KB).
pub const CACHE_MAX_ENTRIES: usize = 20_000;
/// `max_extension:` may be 0 up to this many seconds.
pub const CACHE_MAX_EXTENSION_LIMIT: i64 = 86_400;
/// `max_entries:` may be 1 up to this.
pub const CACHE_MAX_ENTRIES_LIMIT: usize = 100_000_000;

// -------------------------------------------------------- time and the quota

/// Deadline of one call, network waits and retries included (`timeout:`):
/// long enough for a cold GKE metadata server (first token over 2 s) plus a
/// few signBlob retries, short enough that a Puma request does not hang.
pub const TIMEOUT_SECS: f64 = 10.0;
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// `timeout:` may be more than 0 up to this many seconds.
pub const TIMEOUT_MAX_SECS: f64 = 3600.0;

/// signBlob requests per minute from one process (`max_sign_blob_per_minute:`):
/// a tenth of the project quota of 60,000 per minute leaves room for a fleet.
pub const SIGN_BLOB_PER_MINUTE: u32 = 6000;
pub const SIGN_BLOB_PER_MINUTE_MAX: u32 = 1_000_000;
/// signBlob calls waiting at once (`max_sign_blob_in_flight:`).
pub const SIGN_BLOB_IN_FLIGHT: usize = 64;
pub const SIGN_BLOB_IN_FLIGHT_MAX: usize = 10_000;

// ------------------------------------------- outages (src/stale.rs, src/refresh.rs)

/// A stale-if-error URL still works for at least this many seconds...
pub const STALE_MIN_LIFE: i64 = 60;
/// ...and at least this share of the lifetime asked.
pub const STALE_MIN_RATIO: f64 = 0.1;
/// During an outage, one miss per this many seconds tries IAM again.
pub const STALE_PROBE_INTERVAL: i64 = 5;
/// Refresh-ahead: re-sign in the last this share of an entry's window...
pub const REFRESH_LEAD: f64 = 0.25;
/// ...spending at most this share of `max_sign_blob_per_minute`.
pub const REFRESH_MAX_QUOTA_SHARE: f64 = 0.1;

// ------------------------------------------------------------------ expiry

/// The longest life of a V4 URL (7 days), Google's limit.
pub const V4_MAX_EXPIRES: i64 = 604_800;
/// A `signBlob` signature is served at most this long after it was made:
/// Google guarantees the key behind it for 12 hours.
pub const SIGN_BLOB_MAX_SERVE_SECS: i64 = 12 * 3600;
/// V2 URLs have no limit of their own; more than 10 years is a mistake.
pub const V2_MAX_EXPIRES: i64 = 10 * 365 * 86_400;

// ------------------------------------------------------------------- names

/// Bucket names are at most 222 characters (dotted names, Google's limit).
pub const BUCKET_MAX_LEN: usize = 222;
/// Object names are at most 1024 bytes of UTF-8, Google's limit.
pub const OBJECT_MAX_BYTES: usize = 1024;

/// A default or limit as the Ruby binding exports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Text(&'static str),
}

/// `GitlabGcsSigner::DEFAULTS`: (section, [(name, value)]). Names are the
/// keyword arguments they are the default or limit of.
pub const DEFAULTS: &[(&str, &[(&str, Value)])] = &[
    (
        "endpoints",
        &[
            ("storage_host", Value::Text(STORAGE_HOST)),
            ("metadata_host", Value::Text(METADATA_HOST)),
            ("iam_endpoint", Value::Text(IAM_ENDPOINT)),
            ("oauth_token_uri", Value::Text(OAUTH_TOKEN_URI)),
        ],
    ),
    (
        "cache",
        &[
            ("extension_ratio", Value::Float(CACHE_EXTENSION_RATIO)),
            ("max_extension", Value::Int(CACHE_MAX_EXTENSION)),
            ("max_entries", Value::Int(CACHE_MAX_ENTRIES as i64)),
        ],
    ),
    (
        "signer",
        &[
            ("timeout", Value::Float(TIMEOUT_SECS)),
            (
                "max_sign_blob_per_minute",
                Value::Int(SIGN_BLOB_PER_MINUTE as i64),
            ),
            (
                "max_sign_blob_in_flight",
                Value::Int(SIGN_BLOB_IN_FLIGHT as i64),
            ),
        ],
    ),
    (
        "stale_if_error",
        &[
            ("min_life", Value::Int(STALE_MIN_LIFE)),
            ("min_ratio", Value::Float(STALE_MIN_RATIO)),
            ("probe_interval", Value::Int(STALE_PROBE_INTERVAL)),
        ],
    ),
    (
        "refresh_ahead",
        &[
            ("lead", Value::Float(REFRESH_LEAD)),
            ("max_quota_share", Value::Float(REFRESH_MAX_QUOTA_SHARE)),
        ],
    ),
    (
        "limits",
        &[
            ("extension_ratio_max", Value::Float(1.0)),
            ("max_extension_max", Value::Int(CACHE_MAX_EXTENSION_LIMIT)),
            (
                "max_entries_max",
                Value::Int(CACHE_MAX_ENTRIES_LIMIT as i64),
            ),
            ("timeout_max", Value::Float(TIMEOUT_MAX_SECS)),
            (
                "max_sign_blob_per_minute_max",
                Value::Int(SIGN_BLOB_PER_MINUTE_MAX as i64),
            ),
            (
                "max_sign_blob_in_flight_max",
                Value::Int(SIGN_BLOB_IN_FLIGHT_MAX as i64),
            ),
            ("v4_max_expires_in", Value::Int(V4_MAX_EXPIRES)),
            ("v2_max_expires_in", Value::Int(V2_MAX_EXPIRES)),
            ("sign_blob_max_serve", Value::Int(SIGN_BLOB_MAX_SERVE_SECS)),
            ("bucket_max_length", Value::Int(BUCKET_MAX_LEN as i64)),
            ("object_max_bytes", Value::Int(OBJECT_MAX_BYTES as i64)),
        ],
    ),
];

// -------------------------------------------------------------- validation

/// `timeout:` in seconds.
pub fn timeout(secs: f64) -> Result<Duration> {
    if secs.is_finite() && secs > 0.0 && secs <= TIMEOUT_MAX_SECS {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(timeout_error(&number(secs)))
    }
}

pub fn timeout_error(shown: &str) -> Error {
    Error::invalid(format!(
        "timeout must be a number of seconds, more than 0 and at most {TIMEOUT_MAX_SECS}, got {shown}"
    ))
}

/// An integer option in `1..=max` (`max_sign_blob_*`).
pub fn count(name: &str, value: i64, max: u64) -> Result<u64> {
    match u64::try_from(value) {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(count_error(name, &value.to_string(), max)),
    }
}

/// [`count`]'s message, for a value shown as the caller gave it (a Ruby
/// Bignum, a Float).
pub fn count_error(name: &str, shown: &str, max: u64) -> Error {
    Error::invalid(format!(
        "{name} must be an Integer from 1 to {max}, got {shown}"
    ))
}

/// `cache: { extension_ratio: }`.
pub fn extension_ratio(value: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(extension_ratio_error(&number(value)))
    }
}

pub fn extension_ratio_error(shown: &str) -> Error {
    Error::invalid(format!(
        "cache extension_ratio must be between 0.0 and 1.0, got {shown}"
    ))
}

/// `cache: { max_extension: }`.
pub fn max_extension(value: i64) -> Result<i64> {
    if (0..=CACHE_MAX_EXTENSION_LIMIT).contains(&value) {
        Ok(value)
    } else {
        Err(max_extension_error(&value.to_string()))
    }
}

pub fn max_extension_error(shown: &str) -> Error {
    Error::invalid(format!(
        "cache max_extension must be an Integer from 0 to {CACHE_MAX_EXTENSION_LIMIT} (seconds), got {shown}"
    ))
}

/// `cache: { max_entries: }`.
pub fn max_entries(value: i64) -> Result<usize> {
    match usize::try_from(value) {
        Ok(v) if (1..=CACHE_MAX_ENTRIES_LIMIT).contains(&v) => Ok(v),
        _ => Err(max_entries_error(&value.to_string())),
    }
}

pub fn max_entries_error(shown: &str) -> Error {
    Error::invalid(format!(
        "cache max_entries must be an Integer from 1 to {CACHE_MAX_ENTRIES_LIMIT}, got {shown}"
    ))
}

/// `expires_in:` and `expires_at:` are exclusive, and one is needed.
pub const EXPIRY_EXCLUSIVE: &str =
    "give exactly one of expires_in: (seconds) or expires_at: (a Time)";

/// `expires_in:` must be a positive number of seconds.
pub fn expires_in_error(shown: &str) -> Error {
    Error::invalid(format!(
        "expires_in must be a positive number of seconds, got {shown}"
    ))
}

/// A V4 URL asked to live `lifetime` seconds, more than 7 days.
pub fn v4_lifetime_error(lifetime: &str) -> Error {
    Error::invalid(format!(
        "a V4 URL can live at most {V4_MAX_EXPIRES} seconds (7 days); {lifetime} seconds were asked; \
         pass a shorter expiry"
    ))
}

/// A V2 URL asked to live more than 10 years.
pub fn v2_lifetime_error(lifetime: &str) -> Error {
    Error::invalid(format!(
        "a V2 URL can live at most {V2_MAX_EXPIRES} seconds (10 years); {lifetime} seconds were asked"
    ))
}

/// `expires_in:` as asked, before any clock is read: `shown` is the
/// caller's value as text, so `2**64` is reported as given.
pub fn expires_in(v4: bool, secs: f64, shown: &str) -> Result<()> {
    if !secs.is_finite() || secs <= 0.0 {
        Err(expires_in_error(shown))
    } else if v4 && secs > V4_MAX_EXPIRES as f64 {
        Err(v4_lifetime_error(shown))
    } else if !v4 && secs > V2_MAX_EXPIRES as f64 {
        Err(v2_lifetime_error(shown))
    } else {
        Ok(())
    }
}

/// A float as Ruby prints it when it is whole (`10.0`), else as Rust does.
pub fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts spec/signer/defaults_spec.rb expects from Ruby: the same
    /// functions produce them for every caller.
    #[test]
    fn messages() {
        assert_eq!(
            timeout(0.0).unwrap_err().message(),
            "timeout must be a number of seconds, more than 0 and at most 3600, got 0.0"
        );
        assert_eq!(
            count("max_sign_blob_in_flight", 0, SIGN_BLOB_IN_FLIGHT_MAX as u64)
                .unwrap_err()
                .message(),
            "max_sign_blob_in_flight must be an Integer from 1 to 10000, got 0"
        );
        assert_eq!(
            count_error("max_sign_blob_per_minute", "18446744073709551616", 1_000_000).message(),
            "max_sign_blob_per_minute must be an Integer from 1 to 1000000, got 18446744073709551616"
        );
        assert_eq!(
            extension_ratio(2.0).unwrap_err().message(),
            "cache extension_ratio must be between 0.0 and 1.0, got 2.0"
        );
        assert!(extension_ratio(f64::NAN).is_err());
        assert_eq!(
            max_entries(0).unwrap_err().message(),
            "cache max_entries must be an Integer from 1 to 100000000, got 0"
        );
        assert_eq!(
            v4_lifetime_error("604801").message(),
            "a V4 URL can live at most 604800 seconds (7 days); 604801 seconds were asked; pass a shorter expiry"
        );
        assert!(timeout(3600.0).is_ok() && timeout(f64::NAN).is_err() && timeout(3600.5).is_err());
    }

    #[test]
    fn defaults_hold_the_constants() {
        let find = |section: &str, name: &str| {
            DEFAULTS
                .iter()
                .find(|(s, _)| *s == section)
                .and_then(|(_, v)| v.iter().find(|(n, _)| *n == name))
                .map(|(_, v)| *v)
                .unwrap()
        };
        assert_eq!(find("signer", "max_sign_blob_per_minute"), Value::Int(6000));
        assert_eq!(find("signer", "max_sign_blob_in_flight"), Value::Int(64));
        assert_eq!(find("limits", "v4_max_expires_in"), Value::Int(604_800));
        assert_eq!(find("limits", "sign_blob_max_serve"), Value::Int(43_200));
        assert_eq!(
            find("endpoints", "storage_host"),
            Value::Text("storage.googleapis.com")
        );
    }
}
