//! `GitlabGcsSigner::Native::Testing::ManualClock`: simulated time for the
//! trace benchmark and cache specs (the core's `ManualClock`). Test support,
//! not public API: only spec/support/manual_clock.rb hands it to a signer.

use crate::convert::arg;
use gcs_signer::clock::{Clock, ManualClock as CoreClock};
use magnus::{function, method, prelude::*, Error, RModule, Ruby, Value};
use std::sync::Arc;

/// 9999-12-31T23:59:59Z, the last time a signed URL can carry; also far
/// inside the clock's i64 microseconds.
const MAX_SECONDS: f64 = 253_402_300_799.0;

#[magnus::wrap(
    class = "GitlabGcsSigner::Native::Testing::ManualClock",
    free_immediately,
    size
)]
pub struct ManualClock(pub Arc<CoreClock>);

/// A finite number of seconds within +-MAX_SECONDS, else `ArgumentError`
/// (NaN would silently become 0 and infinity saturate).
fn seconds(ruby: &Ruby, value: Value, name: &str) -> Result<f64, Error> {
    let secs: f64 = arg(ruby, &[value], 0, name)?;
    if secs.is_finite() && secs.abs() <= MAX_SECONDS {
        Ok(secs)
    } else {
        Err(Error::new(
            ruby.exception_arg_error(),
            format!("{name} must be a finite number of seconds in range (|x| <= {MAX_SECONDS}), got {secs}"),
        ))
    }
}

impl ManualClock {
    fn new(ruby: &Ruby, epoch_seconds: Value) -> Result<Self, Error> {
        let start = seconds(ruby, epoch_seconds, "epoch_seconds")?;
        Ok(ManualClock(Arc::new(CoreClock::new((start * 1e6) as i64))))
    }

    fn now(&self) -> f64 {
        self.0.now_micros() as f64 / 1e6
    }

    fn advance(ruby: &Ruby, rb_self: &Self, by: Value) -> Result<f64, Error> {
        let by = seconds(ruby, by, "seconds")?;
        rb_self.0.advance_micros((by * 1e6) as i64);
        Ok(rb_self.now())
    }

    fn set(ruby: &Ruby, rb_self: &Self, epoch_seconds: Value) -> Result<f64, Error> {
        let at = seconds(ruby, epoch_seconds, "epoch_seconds")?;
        rb_self.0.set_micros((at * 1e6) as i64);
        Ok(rb_self.now())
    }
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let testing = native.define_module("Testing")?;
    let class = testing.define_class("ManualClock", ruby.class_object())?;
    class.define_singleton_method("new", function!(ManualClock::new, 1))?;
    class.define_method("now", method!(ManualClock::now, 0))?;
    class.define_method("advance", method!(ManualClock::advance, 1))?;
    class.define_method("set", method!(ManualClock::set, 1))?;
    Ok(())
}
