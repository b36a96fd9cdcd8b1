# frozen_string_literal: true

$LOAD_PATH.unshift(ENV["FOG_GOOGLE_LIB"]) if ENV["FOG_GOOGLE_LIB"]
require "fog/core"
# fog-google 1.15 logs deprecation notices about its own constant names.
Fog::Logger[:deprecation] = nil
require "fog/google"
require "googleauth"
require "gitlab_gcs_signer/fog"

# fog connections as GitLab builds them. Keyless ones carry a googleauth
# object without a key instead of `google_application_default: true`, whose
# detection would query 169.254.169.254 (docs/facts.md#loopback-tests).
module FogHelpers
  # fog-google's storage class for the installed version (GoogleJSON up to
  # 1.24, Google::StorageJSON from 1.25). FOG_GOOGLE_LIB=/path/to/fog-google/lib
  # runs these specs against another fog-google (see the README).
  def fog_real_class
    (defined?(Fog::Google::StorageJSON::Real) && Fog::Google::StorageJSON::Real) ||
      Fog::Storage::GoogleJSON::Real
  end

  def fog_version
    Gem::Version.new(Fog::Google::VERSION)
  end

  # Why this fog-google cannot take universe_domain:, or nil when it can:
  # fog-google >= 1.29 on a google-apis-core that has universe domains (a
  # newer fog-google's lib/ over Debian 12's google-api-client 0.50, through
  # FOG_GOOGLE_LIB, has not).
  def no_universe_domains
    return "fog-google #{fog_version} has no universe_domain" if fog_version < Gem::Version.new("1.29.0")
    require "google/apis/core/base_service" # fog-google >= 1.25 loads it with the first connection
    return nil if Google::Apis::Core::BaseService.method_defined?(:universe_domain=)

    "this google-apis-core has no universe_domain (fog-google #{fog_version} cannot apply it)"
  end

  def keyless_storage
    Fog::Storage.new(provider: "Google", google_project: "spec",
                     google_auth: Google::Auth::GCECredentials.new)
  end

  def keyed_storage
    Fog::Storage.new(provider: "Google", google_project: "spec",
                     google_json_key_string: File.read(CONFORMANCE_KEY))
  end

  # Passes FOG_GOOGLE_LIB on to child Ruby processes.
  def fog_lib_args
    ENV["FOG_GOOGLE_LIB"] ? ["-I", ENV["FOG_GOOGLE_LIB"]] : []
  end

  # Runs the block with the shim switched off globally (fog's own code).
  def without_shim
    GitlabGcsSigner::Fog.enabled = false
    yield
  ensure
    GitlabGcsSigner::Fog.enabled = true
  end
end

RSpec.configure do |config|
  config.include FogHelpers, :fog
  config.before(:each, :fog) do
    GitlabGcsSigner.default_signer = keyless_signer
    GitlabGcsSigner::Fog.install!(version: :v2)
  end
end
