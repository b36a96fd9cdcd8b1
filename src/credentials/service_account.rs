//! owned by another branch (placeholder with the agreed minimal shape:
//! `ServiceAccountKey::from_json(&str) -> Result<Self>` implementing `BlobSigner`).

use crate::blob::{BlobSigner, BoxFuture};
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug)]
pub struct ServiceAccountKey {
    identity: String,
    email: String,
}

impl ServiceAccountKey {
    pub fn from_json(json: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(json)
            .map_err(|_| Error::new(ErrorKind::Credentials, "malformed service account key"))?;
        let email = v["client_email"]
            .as_str()
            .ok_or_else(|| Error::new(ErrorKind::Credentials, "key file has no client_email"))?
            .to_string();
        Ok(ServiceAccountKey {
            identity: format!("service_account:{email}"),
            email,
        })
    }
}

impl BlobSigner for ServiceAccountKey {
    fn identity(&self) -> &str {
        &self.identity
    }
    fn email_now(&self) -> Option<String> {
        Some(self.email.clone())
    }
    fn email(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move { Ok(self.email.clone()) })
    }
    fn sign(&self, _payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>> {
        Box::pin(async { Err(Error::internal("placeholder")) })
    }
    fn uses_sign_blob(&self) -> bool {
        false
    }
}
