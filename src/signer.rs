//! owned by another branch

/// Placeholder so `lib.rs`'s re-export compiles.
#[derive(Debug)]
pub struct UrlSigner;
