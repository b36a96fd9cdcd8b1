//! gitlab-gcs-signer core: keyless (and keyed) Google Cloud Storage signed
//! URLs for GitLab on GKE Workload Identity.
//!
//! One concern per module:
//! - [`config`]: every default and limit, with its one validation message.
//! - [`v4`], [`v2`], [`encoding`]: the signed-URL formats (pure functions).
//! - [`blob`]: the signer abstraction (string-to-sign in, signature out).
//! - [`credentials`]: Application Default Credentials, one file per source.
//! - [`token`]: the one shared access token per credential and process.
//! - [`iam`]: the IAM Credentials `signBlob` client; [`retry`]: its backoff.
//! - [`body`]: size-capped answers, server text redacted for messages.
//! - [`cache`]: the signed-URL cache that coalesces concurrent misses.
//! - [`stale`]: stale-if-error, serving a cached URL through an outage.
//! - [`refresh`]: refresh-ahead of hot URLs in the background.
//! - [`events`]: retries, refreshes and failures queued for the Ruby logger.
//! - [`process`]: state that belongs to one process, and the rule that a
//!   forked child never waits on its parent's locks, flights or tasks.
//! - [`flight`]: single flight, the one way concurrent identical work is coalesced.
//! - [`probe`]: one plain HTTP exchange through the gem's client (the CLI's doctor).
//! - [`process_stats`]: process-wide figures over every signer, for Prometheus.
//! - [`runtime`]: the per-process tokio runtime and HTTP client.
//! - [`signer`]: ties them together behind [`signer::UrlSigner`].
//!
//! No Ruby types live here; `ext/gitlab_gcs_signer` is the binding.

pub mod blob;
pub mod body;
pub mod cache;
pub mod cancel;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod encoding;
pub mod env;
pub mod error;
pub mod events;
pub mod flight;
pub mod iam;
pub mod probe;
pub mod process;
pub mod process_stats;
pub mod refresh;
pub mod request;
pub mod retry;
pub mod runtime;
pub mod signer;
pub mod stale;
pub mod stats;
pub mod token;
pub mod universe;
pub mod v2;
pub mod v4;

pub use error::{Error, ErrorKind, Result};
pub use request::{UrlRequest, UrlStyle, V2Path, Version};
pub use signer::UrlSigner;
