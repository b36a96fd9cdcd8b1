//! Environment lookups, injectable so tests never touch the process env.
//! Its own module: credentials discovery and universe resolution both read
//! the environment, and neither depends on the other for it.

use std::collections::HashMap;

/// Reads one environment variable.
pub trait Env: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}
