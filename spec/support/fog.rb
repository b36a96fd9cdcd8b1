# frozen_string_literal: true

require "fog/core"
# fog-google 1.15 logs deprecation notices about its own constant names.
Fog::Logger[:deprecation] = nil
require "fog/google"
require "googleauth"
require "gitlab_gcs_signer/fog"

# fog connections as GitLab builds them. Keyless ones carry a googleauth
# object without a key instead of `google_application_default: true`, whose
# detection would query 169.254.169.254 (field notes s.8).
module FogHelpers
  def keyless_storage
    Fog::Storage.new(provider: "Google", google_project: "spec",
                     google_auth: Google::Auth::GCECredentials.new)
  end

  def keyed_storage
    Fog::Storage.new(provider: "Google", google_project: "spec",
                     google_json_key_string: File.read(CONFORMANCE_KEY))
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
