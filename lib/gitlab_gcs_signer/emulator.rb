# frozen_string_literal: true

# A loopback stand-in for the three Google endpoints the gem talks to (metadata server, IAM
# Credentials signBlob, GCS object endpoint), for specs, benchmarks and the demo.
#
# It is deliberately independent of the gem: it never requires "gitlab_gcs_signer", never loads
# the native extension, and verifies signed URLs with its own Ruby/OpenSSL code written from
# Google's documentation, so one shared canonicalisation bug cannot pass both sides.
module GitlabGcsSigner
  module Emulator
    GEM_ROOT = File.expand_path("../..", __dir__)
    DEFAULT_KEY_FILE = File.join(GEM_ROOT, "spec/fixtures/conformance/test_service_account.not-a-test.json")
  end
end

require_relative "emulator/service_account"
require_relative "emulator/config"
require_relative "emulator/stats"
require_relative "emulator/faults"
require_relative "emulator/tokens"
require_relative "emulator/object_store"
require_relative "emulator/signed_request"
require_relative "emulator/verifier_v2"
require_relative "emulator/verifier_v4"
require_relative "emulator/reply"
require_relative "emulator/metadata"
require_relative "emulator/iam"
require_relative "emulator/gcs"
require_relative "emulator/server"
require_relative "emulator/process"
