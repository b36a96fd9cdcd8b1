//! The signer abstraction: bytes (a string to sign) in, an RSA-SHA256
//! PKCS#1 v1.5 signature out. A service-account key signs locally; the
//! metadata server and impersonated credentials sign through IAM `signBlob`.

use crate::error::Result;
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait BlobSigner: Send + Sync + std::fmt::Debug + 'static {
    /// A stable name for this credential, with no I/O: it keys the URL cache
    /// and the process-wide token registry. Never a secret.
    fn identity(&self) -> &str;

    /// The email known without I/O, if any (a key file's `client_email`, or
    /// an explicit `service_account_email:`).
    fn email_now(&self) -> Option<String>;

    /// The service account email that signs (`GoogleAccessId`, the V4
    /// credential scope). May ask the metadata server once.
    fn email(&self) -> BoxFuture<'_, Result<String>>;

    /// Signs with no I/O when the key is local; `None` for remote signers.
    fn sign_local(&self, _payload: &[u8]) -> Option<Result<Vec<u8>>> {
        None
    }

    /// Signs, remotely if needed.
    fn sign(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>>>;

    /// [`BlobSigner::sign`] within the caller's `deadline`, so that a
    /// specific failure (quota, 5xx) reaches the caller before its own
    /// deadline would turn it into a generic timeout.
    fn sign_until(&self, payload: Vec<u8>, deadline: Instant) -> BoxFuture<'_, Result<Vec<u8>>> {
        let _ = deadline;
        self.sign(payload)
    }

    /// [`BlobSigner::email`] within the caller's `deadline`.
    fn email_until(&self, deadline: Instant) -> BoxFuture<'_, Result<String>> {
        let _ = deadline;
        self.email()
    }

    /// True when signatures come from `signBlob`, whose Google-managed keys
    /// rotate: such signatures are only guaranteed for 12 hours.
    fn uses_sign_blob(&self) -> bool;

    /// Access tokens fetched for this credential in this process (shared by
    /// every signer of the same credential); 0 for local keys.
    fn token_fetches(&self) -> u64 {
        0
    }

    /// Test hook (src/process.rs): this credential's per-process locks.
    #[cfg(test)]
    fn lock_holders(&self) -> Vec<crate::process::Holder<'_>> {
        Vec::new()
    }
}
