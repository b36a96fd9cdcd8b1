//! Stale-if-error (RFC 5861 s.4, for signed URLs): when a cache miss cannot
//! be signed because IAM or the metadata server is unavailable or the
//! signBlob quota is exhausted ([`crate::Error::is_availability`]), answer
//! with the URL already cached for exactly the same request, if it still
//! works for at least a minimum time, instead of failing the page.
//!
//! The rules (README "Outages"):
//! - only availability errors; a 403, an unknown account or a disabled API
//!   always reaches the caller;
//! - only the entry for the same cache key (the full request), never a URL
//!   for other parameters;
//! - only a URL that still works for at least [`StaleConfig::min_life_for`]
//!   the lifetime asked (`max(min_life, min_ratio * lifetime)`), and never
//!   one that outlives the request by more than the cache's extension;
//! - each such answer is counted (`stale_served`), and a warning with the
//!   underlying error is queued for the log at most once per minute.
//!
//! During an outage every miss would wait out its call's deadline (signBlob
//! retries until then) before being answered stale. So after an
//! availability error, misses that have a stale URL are answered with it at
//! once for `probe_interval` seconds; then one miss tries IAM again (a
//! probe), and a success ends the outage for everyone.

use crate::clock::Clock;
use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StaleConfig {
    /// A stale URL must still work for at least this many seconds...
    pub min_life: i64,
    /// ...and at least this share of the lifetime asked.
    pub min_ratio: f64,
    /// After an availability error, answer stale without trying IAM for
    /// this many seconds (0: every miss tries first).
    pub probe_interval: i64,
}

impl Default for StaleConfig {
    /// A stale download link (asked for 10 minutes) still works for at least
    /// a minute; a 4 h 15 min upload link for at least 25.5 minutes.
    fn default() -> Self {
        StaleConfig {
            min_life: crate::config::STALE_MIN_LIFE,
            min_ratio: crate::config::STALE_MIN_RATIO,
            probe_interval: crate::config::STALE_PROBE_INTERVAL,
        }
    }
}

impl StaleConfig {
    pub fn validate(&self) -> Result<()> {
        if !(1..=7 * 86_400).contains(&self.min_life) {
            return Err(Error::invalid(format!(
                "stale_if_error min_life must be between 1 and 604800 seconds, got {}",
                self.min_life
            )));
        }
        if !(0.0..=1.0).contains(&self.min_ratio) || self.min_ratio.is_nan() {
            return Err(Error::invalid(format!(
                "stale_if_error min_ratio must be between 0.0 and 1.0, got {}",
                self.min_ratio
            )));
        }
        if !(0..=3600).contains(&self.probe_interval) {
            return Err(Error::invalid(format!(
                "stale_if_error probe_interval must be between 0 and 3600 seconds, got {}",
                self.probe_interval
            )));
        }
        Ok(())
    }

    /// The least remaining life a stale answer to a request for `lifetime`
    /// seconds may have.
    pub fn min_life_for(&self, lifetime: i64) -> i64 {
        let by_ratio = (lifetime.max(0) as f64 * self.min_ratio).ceil() as i64;
        self.min_life.max(by_ratio)
    }
}

/// Warnings about stale answers go to the log at most this often.
pub const WARN_EVERY_MICROS: i64 = 60 * 1_000_000;

/// One signer's outage state.
#[derive(Debug, Default)]
pub struct Outage {
    /// Until when (signer clock, microseconds) misses are answered stale
    /// without trying; 0 when no outage is known.
    hold_until: AtomicI64,
    /// When the last warning was queued (signer clock, microseconds).
    last_warning: AtomicI64,
    /// The availability error that started or extended the outage.
    last_error: Mutex<Option<Error>>,
}

impl Outage {
    /// Whether a miss at `now` should be answered stale without trying IAM.
    /// Once the hold is over, exactly one caller gets `false` (the probe)
    /// and the hold is extended for the others.
    pub fn holding(&self, now: i64, config: &StaleConfig) -> bool {
        let until = self.hold_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        let next = now + config.probe_interval * 1_000_000;
        // The winner probes; the losers see the extended hold.
        self.hold_until
            .compare_exchange(until, next.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    }

    /// A miss failed with an availability error.
    pub fn failed(&self, now: i64, config: &StaleConfig, error: &Error) {
        if config.probe_interval > 0 {
            let next = now + config.probe_interval * 1_000_000;
            self.hold_until.store(next.max(1), Ordering::Release);
        }
        // try_lock: after a fork the lock may be held by a thread that does
        // not exist in the child; the message is only for the log.
        if let Some(mut last) = self.last_error.try_lock() {
            *last = Some(error.clone());
        }
    }

    /// A miss was signed: IAM is back.
    pub fn recovered(&self) {
        if self.hold_until.load(Ordering::Relaxed) != 0 {
            self.hold_until.store(0, Ordering::Release);
        }
    }

    /// The error behind the current outage.
    pub fn last_error(&self) -> Option<Error> {
        self.last_error.try_lock().and_then(|e| e.clone())
    }

    /// Whether a warning is due at `now` (at most one per minute); claims it.
    pub fn warning_due(&self, clock: &dyn Clock) -> bool {
        let now = clock.now_micros();
        let last = self.last_warning.load(Ordering::Acquire);
        if last != 0 && now - last < WARN_EVERY_MICROS {
            return false;
        }
        self.last_warning
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ErrorKind;

    #[test]
    fn minimum_life_is_the_larger_of_the_floor_and_the_share() {
        let c = StaleConfig::default();
        assert_eq!(c.min_life_for(600), 60);
        assert_eq!(c.min_life_for(300), 60);
        assert_eq!(c.min_life_for(601), 61);
        assert_eq!(c.min_life_for(15_300), 1530);
        assert!(StaleConfig { min_life: 0, ..c }.validate().is_err());
        assert!(StaleConfig {
            min_ratio: 1.5,
            ..c
        }
        .validate()
        .is_err());
    }

    #[test]
    fn one_probe_per_interval_during_an_outage() {
        let c = StaleConfig::default();
        let o = Outage::default();
        let s = 1_000_000;
        assert!(!o.holding(100 * s, &c));
        o.failed(100 * s, &c, &Error::new(ErrorKind::Unavailable, "503"));
        assert!(o.holding(101 * s, &c));
        assert!(o.holding(104 * s, &c));
        // the hold is over: one caller probes, the next ones still hold
        assert!(!o.holding(105 * s, &c));
        assert!(o.holding(105 * s, &c));
        assert!(o.holding(109 * s, &c));
        o.recovered();
        assert!(!o.holding(109 * s, &c));
        assert!(!o.holding(109 * s, &c));
        assert_eq!(o.last_error().unwrap().message(), "503");
        // no hold at all with probe_interval 0
        let every = StaleConfig {
            probe_interval: 0,
            ..c
        };
        let o = Outage::default();
        o.failed(100 * s, &every, &Error::new(ErrorKind::Quota, "429"));
        assert!(!o.holding(100 * s, &every));
    }

    #[test]
    fn warnings_at_most_once_a_minute() {
        let clock = ManualClock::new(1_000_000);
        let o = Outage::default();
        assert!(o.warning_due(&clock));
        assert!(!o.warning_due(&clock));
        clock.advance_micros(WARN_EVERY_MICROS - 1);
        assert!(!o.warning_due(&clock));
        clock.advance_micros(1);
        assert!(o.warning_due(&clock));
    }
}
