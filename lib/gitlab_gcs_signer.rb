# frozen_string_literal: true

require_relative "gitlab_gcs_signer/version"
require_relative "gitlab_gcs_signer/errors"
require_relative "gitlab_gcs_signer/signal_watch"

require_relative "gitlab_gcs_signer/extension"
GitlabGcsSigner::Extension.load

require_relative "gitlab_gcs_signer/signing"
require_relative "gitlab_gcs_signer/shared_cache"
require_relative "gitlab_gcs_signer/signer"
require_relative "gitlab_gcs_signer/observability"

# Signed Google Cloud Storage URLs for GitLab without a service-account key.
module GitlabGcsSigner
  @default_lock = Mutex.new
  @generation_lock = Mutex.new
  @generation = 0

  class << self
    # Changes whenever the default signer is replaced or the fog shim is
    # installed or switched on or off: each fog-google connection keeps its
    # choice of signer until then (one Integer comparison per URL).
    attr_reader :generation

    # @api private
    def settings_changed
      @generation_lock.synchronize { @generation += 1 }
    end

    # One process-wide signer from Application Default Credentials and the
    # environment (GCE_METADATA_HOST, GCS_SIGNER_IAM_ENDPOINT,
    # GITLAB_GCS_SIGNER_SERVICE_ACCOUNT). Fork-safe: the native runtime is
    # rebuilt in a forked child, while cached URLs and the token carry over.
    def default_signer
      @default_signer || @default_lock.synchronize do
        @default_signer ||= Signer.new(service_account_email: ENV["GITLAB_GCS_SIGNER_SERVICE_ACCOUNT"])
      end
    end

    # Replaces the process-wide signer (an initializer may build its own).
    def default_signer=(signer)
      raise ArgumentError, "default_signer must be a GitlabGcsSigner::Signer" unless signer.is_a?(Signer)

      @default_lock.synchronize { @default_signer = signer }
      settings_changed
    end
  end
end
