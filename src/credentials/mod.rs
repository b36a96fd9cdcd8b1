pub mod service_account;
use crate::{blob::BlobSigner, error::Result, stats::Stats};
use std::sync::Arc;
#[derive(Debug, Clone, Default)]
pub struct QuotaConfig {
    pub max_per_minute: u32,
    pub max_in_flight: usize,
}
#[derive(Debug, Clone, Default)]
pub struct CredentialOptions {
    pub credentials: Option<String>,
    pub service_account_email: Option<String>,
    pub metadata_host: Option<String>,
    pub iam_endpoint: Option<String>,
    pub delegates: Vec<String>,
    pub quota: QuotaConfig,
    pub timeout: std::time::Duration,
}
pub fn discover(_o: &CredentialOptions, _s: Arc<Stats>) -> Result<Arc<dyn BlobSigner>> {
    todo!()
}
