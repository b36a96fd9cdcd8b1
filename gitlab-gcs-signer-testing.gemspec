# frozen_string_literal: true

require_relative "lib/gitlab_gcs_signer/version"

# Test support, never a runtime dependency: the loopback emulator of the GKE
# metadata server, IAM Credentials signBlob and a GCS endpoint that verifies
# signed URLs (exe gitlab-gcs-emulator), the test service-account key it
# signs with (Google's published conformance key, not a secret), and the
# `gitlab-gcs-signer bench|emulator` commands. The emulator does not load the
# runtime gem; the two commands run under the runtime gem's CLI.
Gem::Specification.new do |spec|
  spec.name = "gitlab-gcs-signer-testing"
  spec.version = GitlabGcsSigner::VERSION
  spec.summary = "Loopback GCP emulator (metadata server, IAM signBlob, verifying GCS) for testing gitlab-gcs-signer"
  spec.description = <<~DESC
    A loopback stand-in for the Google endpoints gitlab-gcs-signer talks to, for tests, benchmarks
    and demos: the GKE metadata server, IAM Credentials signBlob and a Cloud Storage endpoint
    that verifies V4 and V2 signed URLs with its own code. Binds 127.0.0.1 by default.
  DESC
  spec.license = "MIT"
  spec.authors = ["gitlab-gcs-signer developers"]
  spec.required_ruby_version = ">= 3.0"

  # Same relative layout as the repository, so the emulator finds its key
  # (spec/fixtures/conformance) from testing/lib in both.
  spec.files = Dir[
    "testing/lib/**/*.rb", "testing/exe/gitlab-gcs-emulator",
    "spec/fixtures/conformance/{test_service_account.not-a-test.json,LICENSE,README.md}", "LICENSE"
  ]
  spec.bindir = "testing/exe"
  spec.executables = ["gitlab-gcs-emulator"]
  spec.require_paths = ["testing/lib"]
  # Ruby 3.0+ no longer bundles webrick; Debian ships it as ruby-webrick.
  spec.add_dependency "webrick", ">= 1.7"
  spec.metadata["rubygems_mfa_required"] = "true"
end
