//! One error type for the core. Each [`ErrorKind`] maps to exactly one Ruby
//! exception class in the binding, and every message says what is wrong and
//! what fixes it. Messages never carry tokens, keys or signatures.

use std::fmt;

/// What went wrong, coarse enough to map one-to-one onto Ruby classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A caller passed a bad argument (Ruby `ArgumentError`).
    InvalidArgument,
    /// No usable credentials, or credentials that cannot sign.
    Credentials,
    /// The metadata server is unreachable or answered something unusable.
    Metadata,
    /// GKE Workload Identity: the Kubernetes service account is not mapped
    /// to a Google service account (email is `PROJECT.svc.id.goog`).
    WorkloadIdentity,
    /// signBlob said 403: the account lacks `iam.serviceAccounts.signBlob`.
    PermissionDenied,
    /// The access token's OAuth scopes do not allow signBlob (fog-google issue 599).
    InsufficientScope,
    /// The IAM Credentials API is not enabled in the project.
    ApiDisabled,
    /// IAM answered 401 even with a freshly fetched token.
    Unauthenticated,
    /// signBlob quota exhausted (429), or the client-side quota guard refused.
    Quota,
    /// A service kept answering 5xx or dropping connections until the deadline.
    Unavailable,
    /// The call's deadline passed.
    Timeout,
    /// A Ruby interrupt (Timeout, Thread#kill, Ctrl-C) cancelled the wait.
    Interrupted,
    /// A server answered with a body we could not understand.
    Protocol,
    /// A bug (a caught panic, a broken invariant).
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// A [`ErrorKind::Metadata`] error that wraps a transient failure (the
    /// metadata server kept answering 5xx/429 or timing out), as opposed to
    /// a configuration one (no service account, not a genuine server).
    outage: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            outage: false,
        }
    }

    /// Marks an error as caused by a service being unavailable (see
    /// [`Error::is_availability`]) whatever its kind.
    pub fn from_outage(mut self) -> Self {
        self.outage = true;
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a retry of the same call may succeed (used by [`crate::retry`]).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Unavailable | ErrorKind::Quota)
    }

    /// Whether the error says a service was *unavailable*, not that the
    /// request or the configuration is wrong: signBlob 429 after its retries
    /// or the client-side quota guard's wait, 5xx, timeouts and dropped
    /// connections, a metadata server that stayed unavailable. Only these
    /// may be answered with a stale URL (stale-if-error, src/stale.rs);
    /// permission, scope, disabled-API, identity, credential, protocol and
    /// internal errors, and interrupts, must reach the caller.
    pub fn is_availability(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Quota | ErrorKind::Unavailable | ErrorKind::Timeout
        ) || self.outage
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// reqwest's error text without the chain of sources that may repeat it.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    // The innermost cause says what happened ("Connection refused (os
    // error 111)"); the layers above it only wrap it ("client error
    // (Connect)").
    let mut cause = std::error::Error::source(e);
    while let Some(deeper) = cause.and_then(std::error::Error::source) {
        cause = Some(deeper);
    }
    match cause {
        Some(src) => format!("{what}: {src}"),
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_outages_are_availability_errors() {
        use ErrorKind::*;
        for kind in [Quota, Unavailable, Timeout] {
            assert!(Error::new(kind, "x").is_availability(), "{kind:?}");
        }
        for kind in [
            InvalidArgument,
            Credentials,
            Metadata,
            WorkloadIdentity,
            PermissionDenied,
            InsufficientScope,
            ApiDisabled,
            Unauthenticated,
            Interrupted,
            Protocol,
            Internal,
        ] {
            assert!(!Error::new(kind, "x").is_availability(), "{kind:?}");
        }
        assert!(Error::new(Metadata, "HTTP 503")
            .from_outage()
            .is_availability());
    }
}
