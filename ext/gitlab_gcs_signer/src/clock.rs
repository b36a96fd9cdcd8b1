//! `GitlabGcsSigner::Native::ManualClock`: simulated time for the trace
//! benchmark and cache specs (the core's `ManualClock`).

use gcs_signer::clock::{Clock, ManualClock as CoreClock};
use magnus::{function, method, prelude::*, Error, RModule, Ruby};
use std::sync::Arc;

#[magnus::wrap(class = "GitlabGcsSigner::Native::ManualClock", free_immediately, size)]
pub struct ManualClock(pub Arc<CoreClock>);

impl ManualClock {
    fn new(epoch_seconds: f64) -> Self {
        ManualClock(Arc::new(CoreClock::new((epoch_seconds * 1e6) as i64)))
    }

    fn now(&self) -> f64 {
        self.0.now_micros() as f64 / 1e6
    }

    fn advance(&self, seconds: f64) -> f64 {
        self.0.advance_micros((seconds * 1e6) as i64);
        self.now()
    }

    fn set(&self, epoch_seconds: f64) -> f64 {
        self.0.set_micros((epoch_seconds * 1e6) as i64);
        self.now()
    }
}

pub fn init(ruby: &Ruby, native: RModule) -> Result<(), Error> {
    let class = native.define_class("ManualClock", ruby.class_object())?;
    class.define_singleton_method("new", function!(ManualClock::new, 1))?;
    class.define_method("now", method!(ManualClock::now, 0))?;
    class.define_method("advance", method!(ManualClock::advance, 1))?;
    class.define_method("set", method!(ManualClock::set, 1))?;
    Ok(())
}
