//! Core errors to Ruby exceptions, in one exhaustive match. The classes are
//! defined in Ruby (lib/gitlab_gcs_signer/errors.rb, each with its doc line)
//! and looked up once.

use gcs_signer::{Error as CoreError, ErrorKind};
use magnus::value::Lazy;
use magnus::{prelude::*, Error, ExceptionClass, RModule, Ruby};

fn class(ruby: &Ruby, name: &str) -> ExceptionClass {
    let module: RModule = ruby
        .class_object()
        .const_get("GitlabGcsSigner")
        .expect("GitlabGcsSigner is defined before the extension loads");
    module
        .const_get(name)
        .unwrap_or_else(|_| panic!("GitlabGcsSigner::{name} is defined in errors.rb"))
}

macro_rules! classes {
    ($($static:ident => $name:literal),* $(,)?) => {
        $(static $static: Lazy<ExceptionClass> = Lazy::new(|ruby| class(ruby, $name));)*
    };
}

classes! {
    CREDENTIALS => "CredentialsError",
    METADATA => "MetadataError",
    WORKLOAD_IDENTITY => "WorkloadIdentityError",
    PERMISSION_DENIED => "PermissionDeniedError",
    INSUFFICIENT_SCOPE => "InsufficientScopeError",
    API_DISABLED => "ApiDisabledError",
    UNAUTHENTICATED => "AuthenticationError",
    QUOTA => "QuotaError",
    UNAVAILABLE => "ServiceUnavailableError",
    TIMEOUT => "TimeoutError",
    INTERRUPTED => "InterruptedError",
    PROTOCOL => "ProtocolError",
    INTERNAL => "InternalError",
}

/// The Ruby exception for a core error.
pub fn to_ruby(ruby: &Ruby, err: CoreError) -> Error {
    let class = match err.kind() {
        ErrorKind::InvalidArgument => {
            return Error::new(ruby.exception_arg_error(), err.to_string())
        }
        ErrorKind::Credentials => &CREDENTIALS,
        ErrorKind::Metadata => &METADATA,
        ErrorKind::WorkloadIdentity => &WORKLOAD_IDENTITY,
        ErrorKind::PermissionDenied => &PERMISSION_DENIED,
        ErrorKind::InsufficientScope => &INSUFFICIENT_SCOPE,
        ErrorKind::ApiDisabled => &API_DISABLED,
        ErrorKind::Unauthenticated => &UNAUTHENTICATED,
        ErrorKind::Quota => &QUOTA,
        ErrorKind::Unavailable => &UNAVAILABLE,
        ErrorKind::Timeout => &TIMEOUT,
        ErrorKind::Interrupted => &INTERRUPTED,
        ErrorKind::Protocol => &PROTOCOL,
        ErrorKind::Internal => &INTERNAL,
    };
    Error::new(ruby.get_inner(class), err.to_string())
}

/// A Rust panic caught at the FFI boundary.
pub fn panic_to_ruby(ruby: &Ruby, payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::new(
        ruby.get_inner(&INTERNAL),
        format!("internal error in gitlab-gcs-signer (a bug, please report it): {what}"),
    )
}
