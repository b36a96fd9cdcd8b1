# frozen_string_literal: true

# A loopback stand-in for the three Google endpoints the gem talks to (metadata server, IAM
# Credentials signBlob, GCS object endpoint), for specs, benchmarks and the demo.
#
# It is deliberately independent of the gem: it never requires "gitlab_gcs_signer", never loads
# the native extension, and verifies signed URLs with its own Ruby/OpenSSL code written from
# Google's documentation, so one shared canonicalisation bug cannot pass both sides.
#
# Usage (everything on one port, 127.0.0.1 only):
#   emulator = GitlabGcsSigner::Emulator::Process.start        # exe/gitlab-gcs-emulator as a child
#   ENV["GCE_METADATA_HOST"] = emulator.host                   # "127.0.0.1:PORT"
#   iam_endpoint = emulator.url                                # POST /v1/projects/-/serviceAccounts/E:signBlob
#   signed URLs: http://#{emulator.host}/BUCKET/OBJECT?...      (or Host: BUCKET.127.0.0.1:PORT)
#   emulator.configure("iam" => { "latency_ms" => 50 }); emulator.stats; emulator.reset!; emulator.stop
#
# Control API (JSON): GET /_emulator/stats, GET|POST /_emulator/config, POST /_emulator/reset,
# POST /_emulator/revoke_tokens, GET /_emulator/tokens (issued token values, for leak scans),
# GET /_emulator/objects, GET|PUT /_emulator/objects/BUCKET/NAME.
# Settings: email token_lifetime default_scopes honour_scopes_param (false: GCE, ?scopes= ignored)
# deny_sign_blob api_disabled now_override (also the Date header of every answer) seed revoke_tokens. Faults, per service ("metadata" /
# "iam" / "gcs" => {...}) or top level for all three: latency_ms cold_start_ms rate_429 rate_503
# timeout_rate timeout_ms (default 30000) fail_next ([503, 429, "garbage", "truncated", "timeout",
# "no_flavor"]) garbage truncated no_flavor.
# Reset restores the start-up settings and clears faults, counters and objects; issued tokens stay valid.
module GitlabGcsSigner
  module Emulator
    # The repository root, or the installed gitlab-gcs-signer-testing gem's
    # directory (same layout): testing/lib/gitlab_gcs_signer/ is two levels down.
    GEM_ROOT = File.expand_path("../../..", __dir__)
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
require_relative "emulator/options"
