# frozen_string_literal: true

require "gitlab_gcs_signer/emulator"
require "gitlab_gcs_signer/http_route"

# One emulator process for the whole run (started on first use), reset
# before each example that uses it: metadata server, IAM signBlob and a GCS
# endpoint that verifies signed URLs with the service account's public key.
module EmulatorHelpers
  def self.emulator
    @emulator ||= GitlabGcsSigner::Emulator::Process.start
  end

  def emulator
    EmulatorHelpers.emulator
  end

  # The account the emulator's key signs as.
  def emulator_email
    JSON.parse(File.read(CONFORMANCE_KEY))["client_email"]
  end

  # A signer configured as on a GKE pod with Workload Identity, pointed at
  # the emulator (never at 169.254.169.254 or Google).
  def keyless_signer(**options)
    GitlabGcsSigner::Testing.signer(metadata_host: emulator.host, iam_endpoint: emulator.url, **options)
  end

  # Sends the URL's request to the emulator's GCS endpoint (Host header,
  # path and query exactly as in the URL) and returns the response.
  def gcs(url, method: "GET", body: nil, headers: {})
    GitlabGcsSigner::HttpRoute.request(url, emulator.port, method: method, body: body, headers: headers)
  end

  # gcs(url, ...) with the emulator's verifier judging the URL at Unix time
  # +at+ (a ManualClock's now), then at the real time again.
  def gcs_at(url, at:, **options)
    emulator.configure("now_override" => at)
    gcs(url, **options)
  ensure
    emulator.configure("now_override" => nil)
  end

  # A key signer that signs with the same key as the emulator's signBlob.
  def key_signer(**options)
    GitlabGcsSigner::Testing.signer(credentials: CONFORMANCE_KEY, **options)
  end
end

RSpec.configure do |config|
  config.include EmulatorHelpers, :emulator
  config.before(:each, :emulator) { EmulatorHelpers.emulator.reset! }
end
