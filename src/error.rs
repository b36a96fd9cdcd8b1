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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
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
