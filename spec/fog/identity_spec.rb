# frozen_string_literal: true

require "cgi"
require "logger"
require "stringio"

# Each keyless fog connection is signed as the account fog-google itself
# would sign as (Real#google_access_id: the authorization's issuer, else the
# metadata server's account), never silently as the default signer's.
RSpec.describe GitlabGcsSigner::Fog, :emulator, :fog do
  let(:bucket) { "gitlab-uploads" }
  let(:second_email) { emulator.client.config.fetch("second_email") }

  def access_id(url)
    CGI.parse(URI(url).query).fetch("GoogleAccessId").first
  end

  # A keyless googleauth credential that names another account: its token
  # is the pod's (metadata server), the account it signs as is its issuer.
  def storage_as(email)
    auth = Google::Auth::GCECredentials.new
    auth.issuer = email
    Fog::Storage.new(provider: "Google", google_project: "spec", google_auth: auth)
  end

  it "signs two connections with two accounts in one process, each URL as its own account" do
    emulator.client.put_object(bucket, "a.txt", "A")
    default_url = keyless_storage.get_object_https_url(bucket, "a.txt", Time.now + 600)
    second_url = storage_as(second_email).get_object_https_url(bucket, "a.txt", Time.now + 600)

    expect(access_id(default_url)).to eq(emulator_email)
    expect(access_id(second_url)).to eq(second_email)
    # The emulator verifies each with the named account's public key.
    expect([gcs(default_url).code, gcs(second_url).code]).to eq(%w[200 200])
    # A URL whose GoogleAccessId is swapped no longer verifies: the signature is the account's own.
    swapped = second_url.sub("GoogleAccessId=#{CGI.escape(second_email).sub('%40', '@')}",
                             "GoogleAccessId=#{CGI.escape(emulator_email).sub('%40', '@')}")
    expect(swapped).not_to eq(second_url)
    expect(gcs(swapped).code).to eq("403")
    # One signer per account, each with its own cache: a repeated URL is a hit.
    storage_as(second_email).get_object_https_url(bucket, "a.txt", Time.now + 600)
    expect(GitlabGcsSigner.default_signer.for_account(second_email).stats[:hits]).to eq(1)
  end

  it "signs URLs fog builds itself (Real#signature) as the connection's account too" do
    emulator.client.put_object(bucket, "raw.txt", "raw")
    url = storage_as(second_email).https_url({ headers: {}, host: "storage.googleapis.com", method: "GET",
                                               path: "#{bucket}/raw.txt" }, Time.now + 600)
    expect(access_id(url)).to eq(second_email)
    expect(gcs(url).code).to eq("200")
  end

  it "with V4 too: X-Goog-Credential names the connection's account" do
    described_class.install!(version: :v4)
    emulator.client.put_object(bucket, "v4.txt", "four")
    url = storage_as(second_email).get_object_https_url(bucket, "v4.txt", Time.now + 600)
    expect(url).to include("X-Goog-Credential=#{CGI.escape(second_email)}")
    expect(gcs(url).code).to eq("200")
  ensure
    described_class.install!(version: :v2)
  end

  def warnings
    io = StringIO.new
    GitlabGcsSigner.logger = Logger.new(io)
    yield
    io.string.lines.grep(/WARN/)
  ensure
    GitlabGcsSigner.logger = nil
  end

  it "leaves a connection whose account it cannot name to fog, with one warning" do
    logged = warnings do
      2.times do
        storage = Fog::Storage.new(provider: "Google", google_project: "spec",
                                   google_auth: Signet::OAuth2::Client.new(access_token: "not-used"))
        expect(storage.send(:gcs_signer)).to be_nil
      end
    end
    expect(logged.join).to match(/with Signet::OAuth2::Client credentials, .*cannot sign as; leaving such connections to fog-google/)
    expect(logged.size).to be <= 1 # one per kind of connection and process (0 if an earlier example warned)
  end

  it "leaves a connection to fog when the default signer cannot sign as its account (a key signer)" do
    GitlabGcsSigner.default_signer = key_signer
    other = "third-#{rand(1 << 30)}@spec.iam.gserviceaccount.com"
    logged = warnings { expect(storage_as(other).send(:gcs_signer)).to be_nil }
    expect(logged.join).to include("as #{other}")
  end
end
