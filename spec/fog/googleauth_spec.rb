# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"

# GitLab always loads googleauth (fog-google's API clients authenticate with
# it), and on GKE googleauth's GCECredentials reads tokens from the same
# metadata server as the gem. Both in one process, at the same time, against
# the emulator's metadata server (GCE_METADATA_HOST, which both honour; never
# 169.254.169.254): the gem's URLs verify, googleauth gets its own tokens, and
# neither changes what the other does.
RSpec.describe "googleauth in the same process", :emulator do
  before do
    require "googleauth/version"
    # GitLab's googleauth (1.14+; sid's 1.17) honours GCE_METADATA_HOST.
    # Debian 12's 0.13 hard-codes http://169.254.169.254
    # (googleauth/compute_engine.rb), so there it cannot be pointed at the
    # emulator.
    if Gem::Version.new(Google::Auth::VERSION) < Gem::Version.new("1.0")
      skip "googleauth #{Google::Auth::VERSION} ignores GCE_METADATA_HOST (metadata IP hard-coded)"
    end
  end

  let(:child) { <<~'RUBY' }
    require "json"
    require "googleauth"
    require "gitlab_gcs_signer"
    # google-cloud-env 2 (googleauth 1.9+) asks the metadata server only on a
    # machine whose SMBIOS names Google (a GKE node does); this is its
    # documented override for that one fact. Everything else is real HTTP to
    # the emulator.
    if defined?(Google::Cloud) && Google::Cloud.respond_to?(:env) && Google::Cloud.env.respond_to?(:compute_smbios)
      Google::Cloud.env.compute_smbios.override_product_name = "Google Compute Engine"
    end
    signer = GitlabGcsSigner::Signer.new # metadata server and IAM from the environment
    creds = Google::Auth::GCECredentials.new
    on_gce = Google::Auth::GCECredentials.on_gce?({}, true)
    signing = Array.new(4) do |t|
      Thread.new { Array.new(10) { |i| signer.signed_url(bucket: "b", object: "o/#{t}-#{i}", expires_in: 600) } }
    end
    fetching = Array.new(2) { Thread.new { Array.new(3) { creds.fetch_access_token!.fetch("access_token") } } }
    puts JSON.generate("on_gce" => on_gce,
                       "urls" => signing.flat_map(&:value), "tokens" => fetching.flat_map(&:value),
                       "stats" => signer.stats.slice(:token_fetches, :sign_blob_calls))
  RUBY

  it "lets googleauth's GCECredentials fetch its own tokens while the gem signs" do
    40.times { |n| emulator.client.put_object("b", "o/#{n / 10}-#{n % 10}", "x") }
    env = { "GCE_METADATA_HOST" => emulator.host, "GCS_SIGNER_IAM_ENDPOINT" => emulator.url,
            "GOOGLE_APPLICATION_CREDENTIALS" => nil, "NO_PROXY" => "127.0.0.1", "no_proxy" => "127.0.0.1" }
    out, err, status = Open3.capture3(env, RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e", child)
    expect(status).to be_success, err
    result = JSON.parse(out)

    expect(result["on_gce"]).to be(true) # googleauth found the (emulated) metadata server
    expect(result["urls"].size).to eq(40)
    result["urls"].each { |url| expect(gcs(url).code).to eq("200"), url }
    # googleauth's tokens are ones the metadata server issued (google-cloud-env
    # caches a token until shortly before it expires)
    expect(result["tokens"].size).to eq(6)
    expect(emulator.client.tokens).to include(*result["tokens"])
    # the gem kept its one token per process and signed each object once,
    # whatever googleauth fetched meanwhile
    expect(emulator.stats["tokens_issued"]).to eq(result["tokens"].uniq.size + 1)
    expect(emulator.stats["sign_blob_calls"]).to eq(40)
  end
end
