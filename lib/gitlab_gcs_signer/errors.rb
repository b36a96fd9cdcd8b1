# frozen_string_literal: true

module GitlabGcsSigner
  # Base class of every error this gem raises (bad arguments raise ArgumentError).
  class Error < StandardError; end

  # No usable credentials were found, or they cannot sign (authorized_user, external_account).
  class CredentialsError < Error; end

  # The metadata server is unreachable, not genuine, or answered something unusable.
  class MetadataError < Error; end

  # GKE Workload Identity: the Kubernetes service account is not mapped to a Google service account.
  class WorkloadIdentityError < CredentialsError; end

  # signBlob said 403: the account lacks roles/iam.serviceAccountTokenCreator on itself.
  class PermissionDeniedError < Error; end

  # The access token lacks the cloud-platform scope (fog-google issue 599).
  class InsufficientScopeError < PermissionDeniedError; end

  # The IAM Service Account Credentials API is disabled in the project.
  class ApiDisabledError < PermissionDeniedError; end

  # IAM rejected even a freshly fetched access token (401).
  class AuthenticationError < Error; end

  # signBlob quota exhausted (429), or the gem's own quota guard refused to queue more.
  class QuotaError < Error; end

  # A Google service kept failing (5xx, dropped connections) until the deadline.
  class ServiceUnavailableError < Error; end

  # The call's deadline (`timeout:`) passed.
  class TimeoutError < Error; end

  # The wait was interrupted and Ruby had no exception pending to raise instead.
  class InterruptedError < Error; end

  # A server answered with a body the gem could not understand.
  class ProtocolError < Error; end

  # A fog connection is in another universe domain than its signer: signing
  # would call the wrong IAM endpoint or name the wrong storage host.
  class UniverseMismatchError < Error; end

  # A bug in the gem (for example a caught Rust panic). Please report it.
  class InternalError < Error; end
end
