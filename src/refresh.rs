//! Refresh-ahead (opt-in): a cached URL that is being hit and is about to
//! stop serving the lifetime asked is re-signed in the background, so a hot
//! object never pays a `signBlob` call on the request path (the
//! `stale-while-revalidate` idea of RFC 5861, done before the URL is stale).
//!
//! An entry expiring at `x` serves requests for `L` seconds until
//! `now = x - L`, that is for `E` seconds after it was signed. A hit whose
//! slack `x - (now + L)` has fallen below `lead * E` starts one background
//! signing for the key (single-flight with the misses: a miss that comes
//! meanwhile waits for it instead of signing again). Every such call goes
//! through the client-side quota guard like any other, and refreshes alone
//! never take more than `max_quota_share` of `max_sign_blob_per_minute`:
//! over that, hits simply do not refresh and the next miss signs as usual.
//! For a key hit continuously the signing period shrinks from `E` to
//! `(1 - lead) * E`: with the default `lead` 0.25, a third more calls for
//! hot keys, none for cold ones (bench/outage.rb measures it).

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshConfig {
    /// Refresh in the last `lead` share of the span in which an entry
    /// serves the lifetime asked (0.0 to 1.0).
    pub lead: f64,
    /// Refreshes spend at most this share of `max_sign_blob_per_minute`.
    pub max_quota_share: f64,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            lead: crate::config::REFRESH_LEAD,
            max_quota_share: crate::config::REFRESH_MAX_QUOTA_SHARE,
        }
    }
}

impl RefreshConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.lead > 0.0 && self.lead < 1.0) {
            return Err(Error::invalid(format!(
                "refresh_ahead lead must be more than 0.0 and less than 1.0, got {}",
                self.lead
            )));
        }
        if !(self.max_quota_share > 0.0 && self.max_quota_share <= 1.0) {
            return Err(Error::invalid(format!(
                "refresh_ahead max_quota_share must be more than 0.0 and at most 1.0, got {}",
                self.max_quota_share
            )));
        }
        Ok(())
    }

    /// Whether a hit with `slack` seconds to spare, for a request whose
    /// window is `extension` seconds wide, should refresh.
    pub fn due(&self, slack: i64, extension: i64) -> bool {
        if extension <= 0 {
            return false;
        }
        let lead = ((extension as f64) * self.lead).ceil() as i64;
        slack < lead.max(1)
    }
}

/// The refreshes' own token bucket: `share * max_per_minute` a minute, at
/// most a minute's worth at once. Real time, like the quota guard.
#[derive(Debug)]
pub struct Budget {
    per_minute: f64,
    state: Mutex<(f64, Option<Instant>)>,
}

impl Budget {
    pub fn new(config: &RefreshConfig, max_per_minute: u32) -> Self {
        let per_minute = (f64::from(max_per_minute) * config.max_quota_share).max(1.0);
        Budget {
            per_minute,
            state: Mutex::new((per_minute, None)),
        }
    }

    /// Takes one call from the budget if there is one.
    pub fn try_take(&self) -> bool {
        let mut s = self.state.lock();
        let now = Instant::now();
        if let Some(last) = s.1 {
            s.0 = (s.0 + (now - last).as_secs_f64() * self.per_minute / 60.0).min(self.per_minute);
        }
        s.1 = Some(now);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_the_last_lead_share_of_the_window() {
        let c = RefreshConfig::default();
        // E = 60 s: refresh when fewer than 15 s of slack are left
        assert!(!c.due(15, 60));
        assert!(c.due(14, 60));
        assert!(c.due(0, 60));
        // E = 0: an entry serves one second only, nothing to refresh ahead
        assert!(!c.due(0, 0));
        // a tiny window still refreshes in its last second
        assert!(c.due(0, 1));
        assert!(RefreshConfig { lead: 1.0, ..c }.validate().is_err());
        assert!(RefreshConfig {
            max_quota_share: 0.0,
            ..c
        }
        .validate()
        .is_err());
    }

    #[test]
    fn the_budget_is_a_share_of_the_quota() {
        let b = Budget::new(
            &RefreshConfig {
                lead: 0.25,
                max_quota_share: 0.1,
            },
            100,
        );
        // 10 a minute, a minute's worth at once
        assert_eq!((0..50).filter(|_| b.try_take()).count(), 10);
    }
}
