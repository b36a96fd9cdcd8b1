# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"
require "socket"

# Where keyless signing sends its requests comes only from explicit options
# or from GCE_METADATA_HOST / GCS_SIGNER_IAM_ENDPOINT (field notes s.3, s.8).
# Each case runs in a fresh Ruby with a cleared environment (no token or
# email left over, nothing inherited), and the emulator's counters show
# where the requests went.
RSpec.describe "endpoints: explicit options, then the environment, then Google's", :emulator do
  lib = File.expand_path("../../lib", __dir__)
  probe = <<~RUBY
    require "gitlab_gcs_signer"
    require "json"
    opts = JSON.parse(ARGV[0], symbolize_names: true)
    begin
      signer = opts.delete(:default) ? GitlabGcsSigner.default_signer : GitlabGcsSigner::Signer.new(**opts)
    rescue ArgumentError => e
      puts JSON.generate(error: [e.class.name, e.message])
      exit
    end
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

  # Issue 15 M2: the access token goes in the Authorization header, so a
  # cleartext IAM endpoint is allowed only on this machine (an emulator).
  it "refuses an http:// IAM endpoint that is not a loopback address, from the option or the environment" do
    %w[http://iam.internal.example:8080 http://10.0.0.7 http://127.0.0.1@iam.internal.example].each do |url|
      expect { GitlabGcsSigner::Signer.new(metadata_host: emulator.host, iam_endpoint: url) }
        .to raise_error(ArgumentError, /in clear.*loopback/)
      result = run_probe(env: { "GCE_METADATA_HOST" => emulator.host, "GCS_SIGNER_IAM_ENDPOINT" => url }, timeout: 1)
      expect(result["error"]).to eq(["ArgumentError", result["error"][1]])
      expect(result["error"][1]).to include("GCS_SIGNER_IAM_ENDPOINT", "loopback")
    end
    %W[http://127.0.0.1:#{emulator.port} http://localhost:#{emulator.port}].each do |url|
      signer = GitlabGcsSigner::Signer.new(metadata_host: emulator.host, iam_endpoint: url)
      expect(signer.signed_url(bucket: "endpoints", object: "loopback.txt", expires_in: 300)).to include("X-Goog-Signature=")
    end
    expect(emulator.stats["sign_blob_calls"]).to eq(2)
  end

  # Issue 15 m1: a proxy must never see (or answer) the metadata request
  # for the access token, whatever NO_PROXY says; IAM still honours the proxy
  # settings (here NO_PROXY exempts its host).
  it "never sends metadata requests through http_proxy" do
    proxy = TCPServer.new("127.0.0.1", 0)
    seen = Queue.new
    acceptor = Thread.new do
      loop do
        client = proxy.accept
        seen << client.gets.to_s.strip
        client.write("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        client.close
      end
    end
    proxy_url = "http://127.0.0.1:#{proxy.addr[1]}"
    [{ "http_proxy" => proxy_url, "NO_PROXY" => "localhost" },
     { "http_proxy" => proxy_url, "HTTP_PROXY" => proxy_url, "ALL_PROXY" => proxy_url, "no_proxy" => "localhost" }].each do |env|
      result = run_probe(env: env, metadata_host: emulator.host, iam_endpoint: "http://localhost:#{emulator.port}")
      expect(result["error"]).to be_nil
      expect(gcs(result["url"]).code).to eq("404") # verified; no such object
    end
    expect(seen.size).to eq(0), "the proxy saw: #{Array.new(seen.size) { seen.pop }.inspect}"
  ensure
    acceptor&.kill
    proxy&.close
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
