# frozen_string_literal: true

require "net/http"
require "tmpdir"
require "webrick"
require_relative "support/keyless_helper"

# An impersonated_service_account file (`gcloud auth application-default
# login --impersonate-service-account=SA`) end to end: the authorized_user
# source's refresh token is exchanged at its token_uri, and signBlob runs as
# the target with that token. The emulator has no OAuth endpoint, so a small
# one runs here; it hands out tokens the emulator's metadata server issued,
# which are the only tokens its signBlob accepts.
RSpec.describe "impersonated_service_account credentials", :emulator do
  around do |example|
    @grants = Queue.new
    @oauth = WEBrick::HTTPServer.new(BindAddress: "127.0.0.1", Port: 0, Logger: WEBrick::Log.new(File::NULL), AccessLog: [])
    @oauth.mount_proc("/token") { |req, res| oauth_token(req, res) }
    server = Thread.new { @oauth.start }
    example.run
  ensure
    @oauth.shutdown
    server&.join
  end

  def oauth_token(req, res)
    form = URI.decode_www_form(req.body.to_s).to_h
    @grants << form
    if form["refresh_token"] != "rt-good"
      res.status = 400
      res.body = JSON.generate("error" => "invalid_grant", "error_description" => "Token has been expired or revoked.")
      return
    end
    metadata = Net::HTTP.get_response(URI("#{emulator.url}/computeMetadata/v1/instance/service-accounts/default/token"),
                                      "Metadata-Flavor" => "Google")
    res["Content-Type"] = "application/json"
    res.body = metadata.body
  end

  def credentials(refresh_token: "rt-good")
    {
      "type" => "impersonated_service_account",
      "service_account_impersonation_url" =>
        "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/#{emulator_email}:generateAccessToken",
      "delegates" => [],
      "source_credentials" => { "type" => "authorized_user", "client_id" => "cid.apps", "client_secret" => "cs",
                                "refresh_token" => refresh_token,
                                "token_uri" => "http://127.0.0.1:#{@oauth.config[:Port]}/token" }
    }
  end

  it "signs as the target with a token from the source's refresh token: the same URL a key makes, accepted by GCS" do
    signer = GitlabGcsSigner::Signer.new(credentials: credentials, iam_endpoint: emulator.url)
    expect(signer.email).to eq(emulator_email)
    request = { bucket: "b", object: "imp.txt", expires_in: 600, timestamp: Time.now.to_i }
    url = signer.signed_url(**request)
    expect(url).to eq(key_signer.signed_url(**request))
    emulator.client.put_object("b", "imp.txt", "impersonated")
    expect(gcs(url).body).to eq("impersonated")
    grant = @grants.pop
    expect(grant).to include("grant_type" => "refresh_token", "client_id" => "cid.apps", "refresh_token" => "rt-good")
    # No metadata email lookup: the target is named in the file.
    expect(emulator.stats.values_at("email_requests", "sign_blob_ok")).to eq([0, 1])
    signer.signed_url(**request, object: "other")
    expect(@grants.size).to eq(0) # one token exchange for both signatures
  end

  it "says how to renew a revoked refresh token, without showing it" do
    signer = GitlabGcsSigner::Signer.new(credentials: credentials(refresh_token: "rt-revoked-SECRET"), iam_endpoint: emulator.url)
    expect { signer.signed_url(bucket: "b", object: "o", expires_in: 600) }.to raise_error(GitlabGcsSigner::CredentialsError) { |e|
      expect(e.message).to include("gcloud auth application-default login")
      expect(e.message).not_to include("SECRET")
    }
    expect(emulator.stats["sign_blob_calls"]).to eq(0)
  end
end
