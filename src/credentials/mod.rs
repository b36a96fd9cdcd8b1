//! Credential sources (the keyless branch owns this file; the lead merges the line below).
pub mod service_account;
