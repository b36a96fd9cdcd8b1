# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"

# Where keyless signing sends its requests comes only from explicit options
# or from GCE_METADATA_HOST / GCS_SIGNER_IAM_ENDPOINT (docs/facts.md#metadata-server, #loopback-tests).
# Each case runs in a fresh Ruby with a cleared environment (no token or
# email left over, nothing inherited), and the emulator's counters show
# where the requests went.
RSpec.describe "endpoints: explicit options, then the environment, then Google's", :emulator do
  lib = File.expand_path("../../lib", __dir__)
  probe = <<~RUBY
    require "gitlab_gcs_signer"
    require "json"
    opts = JSON.parse(ARGV[0], symbolize_names: true)
    signer = opts.delete(:default) ? GitlabGcsSigner.default_signer : GitlabGcsSigner::Signer.new(**opts)
    t0 = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out = { identity: signer.identity }
    begin
      out[:url] = signer.signed_url(bucket: "endpoints", object: "probe.txt", expires_in: 300)
    rescue GitlabGcsSigner::Error => e
      out[:error] = [e.class.name, e.message]
    end
    out[:seconds] = Process.clock_gettime(Process::CLOCK_MONOTONIC) - t0
    puts JSON.generate(out)
  RUBY

  # Only loopback routes: then 169.254.169.254 and Google are unreachable
  # by construction, and the cases that would try them may run.
  def self.loopback_only?
    v4 = File.readlines("/proc/net/route").drop(1).reject { |l| l.strip.empty? }
    v6 = File.exist?("/proc/net/ipv6_route") ? File.readlines("/proc/net/ipv6_route") : []
    v4.empty? && v6.all? { |l| l.split.last == "lo" }
  rescue SystemCallError
    false
  end

  define_method(:run_probe) do |env: {}, **opts|
    clean = { "PATH" => ENV.fetch("PATH"), "HOME" => "/nonexistent" }.merge(env)
    out, status = Open3.capture2e(clean, RbConfig.ruby, "-I", lib, "-e", probe, JSON.generate(opts), unsetenv_others: true)
    expect(status).to be_success, out
    JSON.parse(out.lines.last)
  end

  let(:dead) { "127.0.0.1:1" }

  def counts
    emulator.stats.values_at("token_requests", "email_requests", "sign_blob_calls")
  end

  it "uses explicit metadata_host: and iam_endpoint: with nothing in the environment" do
    result = run_probe(metadata_host: emulator.host, iam_endpoint: emulator.url)
    expect(result["identity"]).to eq("iam:metadata:#{emulator.host}")
    expect(result["error"]).to be_nil
    expect(gcs(result["url"]).code).to eq("404") # verified; no such object
    expect(counts).to eq([1, 1, 1])
  end

  it "uses GCE_METADATA_HOST and GCS_SIGNER_IAM_ENDPOINT when no option is given" do
    result = run_probe(env: { "GCE_METADATA_HOST" => emulator.host, "GCS_SIGNER_IAM_ENDPOINT" => emulator.url })
    expect(result["identity"]).to eq("iam:metadata:#{emulator.host}")
    expect(result["error"]).to be_nil
    expect(counts).to eq([1, 1, 1])
  end

  it "prefers the options to the environment" do
    result = run_probe(env: { "GCE_METADATA_HOST" => dead, "GCS_SIGNER_IAM_ENDPOINT" => "http://#{dead}" },
                       metadata_host: emulator.host, iam_endpoint: emulator.url)
    expect(result["identity"]).to eq("iam:metadata:#{emulator.host}")
    expect(result["error"]).to be_nil
    expect(counts).to eq([1, 1, 1])
  end

  it "builds the default signer from the environment, with GITLAB_GCS_SIGNER_SERVICE_ACCOUNT as the account" do
    result = run_probe(default: true, env: { "GCE_METADATA_HOST" => emulator.host, "GCS_SIGNER_IAM_ENDPOINT" => emulator.url,
                                             "GITLAB_GCS_SIGNER_SERVICE_ACCOUNT" => emulator_email })
    expect(result["identity"]).to eq("iam:#{emulator_email}")
    expect(result["error"]).to be_nil
    expect(counts).to eq([1, 0, 1]) # the account is known: no email lookup
  end

  it "names the configured metadata host when it does not answer" do
    result = run_probe(env: { "GCE_METADATA_HOST" => dead }, iam_endpoint: emulator.url, timeout: 1)
    expect(result["identity"]).to eq("iam:metadata:#{dead}")
    expect(result["error"][1]).to include(dead)
    expect(result["seconds"]).to be < 3
    expect(counts).to eq([0, 0, 0])
  end

  context "with nothing configured (only where the network has no route but loopback)" do
    before { skip "needs a network namespace with only loopback (script/test runs rspec in one)" unless self.class.loopback_only? }

    it "targets 169.254.169.254 and fails fast with a MetadataError naming it" do
      result = run_probe
      expect(result["identity"]).to eq("iam:metadata:169.254.169.254")
      expect(result["error"][0]).to eq("GitlabGcsSigner::MetadataError")
      expect(result["error"][1]).to include("169.254.169.254").and include("credentials:")
      expect(result["seconds"]).to be < 3
    end

    it "sends signBlob to Google's endpoint when only the metadata host is configured" do
      result = run_probe(env: { "GCE_METADATA_HOST" => emulator.host }, timeout: 2)
      expect(result["error"][1]).to include("iamcredentials.googleapis.com")
      expect(emulator.stats["sign_blob_calls"]).to eq(0)
    end
  end
end
