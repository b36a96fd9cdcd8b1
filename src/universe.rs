//! Universe domains (Google Cloud's sovereign and Trusted Partner clouds):
//! the one place that turns a universe into the hosts the signer talks to.
//!
//! Google's client libraries derive every endpoint from one universe domain,
//! `googleapis.com` unless configured: `storage.<universe>` for Cloud
//! Storage and `iamcredentials.<universe>` for the IAM Credentials API
//! (google-apis-core's `https://iamcredentials.UNIVERSE_DOMAIN/` template,
//! fog-google 1.29's `storage_host_for_universe`). The universe comes from,
//! in order: the `universe_domain:` option, `GOOGLE_CLOUD_UNIVERSE_DOMAIN`,
//! the credentials file's `universe_domain` field, and, only when asked
//! (`universe_from_metadata`), the metadata server (docs/gitlab.md).

use crate::credentials::Env;
use crate::error::{Error, Result};

/// Google's public cloud.
pub const DEFAULT: &str = "googleapis.com";

/// The environment variable Google's libraries (and fog-google 1.29) read.
pub const ENV_VAR: &str = "GOOGLE_CLOUD_UNIVERSE_DOMAIN";

/// The Cloud Storage host of a universe (`storage.googleapis.com` by default).
pub fn storage_host(universe: &str) -> String {
    format!("storage.{universe}")
}

/// The IAM Credentials base URL of a universe.
pub fn iam_endpoint(universe: &str) -> String {
    format!("https://iamcredentials.{universe}")
}

/// Checks and normalises a universe domain: a DNS name (letters, digits,
/// `-`, `.`), at least two labels, lower-cased, no trailing dot.
pub fn normalize(value: &str, from: &str) -> Result<String> {
    let u = value.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = u.split('.').count() >= 2
        && u.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if u.len() <= 253 && labels_ok {
        Ok(u)
    } else {
        Err(Error::invalid(format!(
            "the universe domain {:?} (from {from}) is not a domain name like \"googleapis.com\"",
            crate::request::shown(value)
        )))
    }
}

/// Whether the option or [`ENV_VAR`] names a universe.
pub fn configured(option: Option<&str>, env: &dyn Env) -> bool {
    option.is_some_and(|u| !u.trim().is_empty())
        || env.var(ENV_VAR).is_some_and(|u| !u.trim().is_empty())
}

/// The universe in force: `option`, else [`ENV_VAR`], else the credentials
/// file's `universe_domain` field, else [`DEFAULT`]. Empty values count as unset.
pub fn resolve(option: Option<&str>, env: &dyn Env, file_field: Option<&str>) -> Result<String> {
    let set = |v: &&str| !v.trim().is_empty();
    if let Some(u) = option.filter(set) {
        return normalize(u, "the `universe_domain:` option");
    }
    if let Some(u) = env.var(ENV_VAR).filter(|v| !v.trim().is_empty()) {
        return normalize(&u, ENV_VAR);
    }
    if let Some(u) = file_field.filter(set) {
        return normalize(u, "the credentials file's `universe_domain` field");
    }
    Ok(DEFAULT.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(v: Option<&str>) -> HashMap<String, String> {
        v.map(|v| (ENV_VAR.to_string(), v.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn option_then_env_then_file_then_default() {
        let e = env(Some("env.example"));
        assert_eq!(
            resolve(Some("Opt.Example."), &e, Some("f.example")).unwrap(),
            "opt.example"
        );
        assert_eq!(resolve(None, &e, Some("f.example")).unwrap(), "env.example");
        assert_eq!(
            resolve(Some(" "), &env(Some("")), Some("f.example")).unwrap(),
            "f.example"
        );
        assert_eq!(resolve(None, &env(None), None).unwrap(), DEFAULT);
    }

    #[test]
    fn hosts_follow_the_universe() {
        assert_eq!(storage_host(DEFAULT), "storage.googleapis.com");
        assert_eq!(
            iam_endpoint(DEFAULT),
            "https://iamcredentials.googleapis.com"
        );
        assert_eq!(
            iam_endpoint("s3nsapis.fr"),
            "https://iamcredentials.s3nsapis.fr"
        );
    }

    #[test]
    fn refuses_what_is_not_a_domain() {
        for bad in [
            "localhost",
            "a..b",
            "evil.com/x",
            "x.com:443",
            "-a.com",
            "a.com@b",
            "ä.com",
            "",
        ] {
            let err = resolve(Some(bad), &env(None), None)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            // "" is unset, so the default applies
            assert!(
                bad.is_empty() || err.contains("not a domain name"),
                "{bad}: {err}"
            );
        }
    }
}
