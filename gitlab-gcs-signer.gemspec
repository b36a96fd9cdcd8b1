# frozen_string_literal: true

require_relative "lib/gitlab_gcs_signer/version"

# The runtime gem: the Rust core and binding (built by cargo at install), the
# signing Ruby layer, the fog shim, the shared cache, instrumentation and the
# operator CLI (doctor, sign). Test support (the emulator, its test key, the
# benchmarks) is in gitlab-gcs-signer-testing.gemspec or never packaged.
# `rake native:gem` repackages this spec as a platform gem with prebuilt
# extensions (rakelib/native.rake).
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

  # Listed by directory, not `git ls-files`: builds from a tarball too, and
  # build trees (ext/*/target, lib/**/*.so) never match.
  spec.files = Dir[
    "lib/**/*.rb", "exe/gitlab-gcs-signer",
    "src/**/*.rs", "ext/gitlab_gcs_signer/{extconf.rb,Cargo.toml}", "ext/gitlab_gcs_signer/src/**/*.rs",
    "Cargo.toml", "Cargo.lock", "README.md", "CHANGELOG.md", "LICENSE"
  ]
  spec.bindir = "exe"
  spec.executables = ["gitlab-gcs-signer"]
  spec.require_paths = ["lib"]
  spec.extensions = ["ext/gitlab_gcs_signer/extconf.rb"]
  spec.metadata["rubygems_mfa_required"] = "true"
end
