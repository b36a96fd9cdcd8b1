# frozen_string_literal: true

# The main job, end to end on 127.0.0.1: GitLab's object-storage code path on
# GKE Workload Identity (no service-account key), with the gem's one-line
# initializer. The bundled emulator plays the metadata server, IAM
# Credentials (signBlob) and a Cloud Storage endpoint that verifies every
# signed URL with the service account's public key.
#
#   script/demo            # or: ruby -Ilib -Itesting/lib examples/demo.rb

require "gitlab_gcs_signer/emulator"
require "gitlab_gcs_signer/http_route"

emulator = GitlabGcsSigner::Emulator::Process.start(
  config: { "iam" => { "latency_ms" => 50 } } # a signBlob call costs about 50 ms in production
)
at_exit { emulator.stop }
puts "emulator (metadata server, IAM signBlob, GCS verifier): #{emulator.url}"

# What a GitLab pod on GKE has: the metadata server, nothing else.
ENV["GCE_METADATA_HOST"] = emulator.host
ENV["GCS_SIGNER_IAM_ENDPOINT"] = emulator.url

# --- config/initializers/gitlab_gcs_signer.rb, as in the README ----------
require "gitlab_gcs_signer/fog"
GitlabGcsSigner::Fog.install!(signer: GitlabGcsSigner.default_signer, version: :v2)
# -------------------------------------------------------------------------

require "fog/core"
Fog::Logger[:deprecation] = nil # fog-google 1.15's notices about its own constant names
require "fog/google"
require "carrierwave"
require "googleauth"

# GitLab's object-storage connection on Workload Identity: no key. (The
# googleauth object stands in for `google_application_default: true`, whose
# detection would query 169.254.169.254 directly.)
CarrierWave.configure do |config|
  config.fog_provider = "fog/google"
  config.fog_credentials = { provider: "Google", google_project: "demo",
                             google_auth: Google::Auth::GCECredentials.new }
  config.fog_directory = "gitlab-uploads"
  config.fog_public = false
  config.fog_authenticated_url_expiration = 600
  config.storage = :fog
end

class AvatarUploader < CarrierWave::Uploader::Base
  def store_dir = "uploads/user/avatar/42"
end

def check(url, method = "GET", port:, body: nil, headers: {})
  response = GitlabGcsSigner::HttpRoute.request(url, port, method: method, body: body, headers: headers)
  "#{method} -> #{response.code} #{response.message}"
end

port = emulator.port
storage = Fog::Storage.new(provider: "Google", google_project: "demo", google_auth: Google::Auth::GCECredentials.new)
object = "uploads/user/avatar/42/avatar and+sign.png"

puts "\n1. Direct upload (GitLab: put_object_url, then Workhorse PUTs the file)"
t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
put = storage.put_object_url("gitlab-uploads", object, Time.now + 4 * 3600 + 900, "Content-Type" => "image/png")
puts "   #{put[0, 140]}..."
puts "   #{check(put, 'PUT', port: port, body: 'PNG bytes', headers: { 'Content-Type' => 'image/png' })}" \
     " (signed in #{((Process.clock_gettime(Process::CLOCK_MONOTONIC) - t) * 1000).round(1)} ms: token + signBlob)"

puts "\n2. Download redirects through CarrierWave (authenticated_url, 600 s)"
uploader = AvatarUploader.new
file = CarrierWave::Storage::Fog::File.new(uploader, CarrierWave::Storage::Fog.new(uploader), object)
5.times do |i|
  t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  url = file.url(query: { "response-content-disposition" => "inline; filename=\"avatar.png\"" })
  ms = ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - t) * 1000).round(3)
  puts "   request #{i + 1}: #{check(url, port: port)} in #{ms} ms"
end

puts "\n3. A tampered URL is refused by the verifier"
tampered = put.sub("avatar%20and", "avatar%20anD")
puts "   #{check(tampered, 'PUT', port: port, body: 'x', headers: { 'Content-Type' => 'image/png' })}"

stats = GitlabGcsSigner.default_signer.stats
em = emulator.stats
puts "\nsigner:   #{stats.slice(:hits, :misses, :coalesced, :sign_blob_calls, :token_fetches).map { |k, v| "#{k}=#{v}" }.join(' ')}"
puts "emulator: token_requests=#{em['token_requests']} sign_blob_calls=#{em['sign_blob_calls']} " \
     "verifications_passed=#{em['verifications_passed']} verifications_failed=#{em['verifications_failed']}"
puts "\nfog-google alone would have made #{stats[:hits] + stats[:misses]} signBlob calls (one per URL) " \
     "and fetched a token per connection."
