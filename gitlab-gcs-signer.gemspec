# frozen_string_literal: true

require_relative "lib/gitlab_gcs_signer/version"

Gem::Specification.new do |spec|
  spec.name = "gitlab-gcs-signer"
  spec.version = GitlabGcsSigner::VERSION
  spec.summary = "Fast keyless Google Cloud Storage signed URLs for GitLab on GKE Workload Identity"
  spec.description = <<~DESC
    Signs GCS V4 and V2 URLs without a service-account key (IAM signBlob), with one shared
    access token per process and a coalescing signed-URL cache, in a Rust core. A one-line
    initializer makes fog-google and CarrierWave (GitLab) use it.
  DESC
  spec.license = "MIT"
  spec.authors = ["gitlab-gcs-signer developers"]
  spec.required_ruby_version = ">= 3.0"

  spec.files = Dir[
    "lib/**/*.rb", "exe/*", "bench/**/*.rb", "src/**/*.rs", "ext/**/*.{rs,rb,toml}",
    "Cargo.toml", "Cargo.lock", "README.md", "CHANGELOG.md", "LICENSE",
    "spec/fixtures/conformance/*"
  ]
  spec.bindir = "exe"
  spec.executables = Dir["exe/*"].map { |f| File.basename(f) }
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/gitlab_gcs_signer/extconf.rb"]
  spec.metadata["rubygems_mfa_required"] = "true"
end
