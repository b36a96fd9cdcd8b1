# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/emulator_helper"
require "open3"

RSpec.describe "emulator control API and process" do
  let(:token_path) { "/computeMetadata/v1/instance/service-accounts/default/token" }

  it "resets counters, faults, objects and settings" do
    emulator.client.put_object("b", "o", "data")
    emulator.configure("email" => "x@y.iam.gserviceaccount.com", "metadata" => { "latency_ms" => 5, "fail_next" => [503] })
    expect(http("GET", token_path, headers: flavor).code).to eq("503")
    expect(emulator.stats["metadata_requests"]).to eq(1)

    emulator.reset!
    stats = emulator.stats
    expect(stats.values_at("metadata_requests", "faults_injected", "failure_reasons")).to eq([0, {}, []])
    expect(emulator.client.objects).to eq([])
    config = emulator.client.config
    expect(config["email"]).to eq(EmulatorHelper::EMAIL)
    expect(config["faults"]["metadata"]).to eq("fail_next" => [])
    expect(http("GET", token_path, headers: flavor).code).to eq("200")
  end

  it "exposes stored objects and lets specs seed them without a signed URL" do
    emulator.client.put_object("bucket", "dir/a b.txt", "hello", content_type: "text/plain")
    expect(emulator.client.objects).to eq([{ "bucket" => "bucket", "name" => "dir/a b.txt", "size" => 5,
                                             "content_type" => "text/plain", "md5" => Digest::MD5.hexdigest("hello") }])
    expect(http("GET", "/_emulator/objects/bucket/dir/a%20b.txt").body).to eq("hello")
    expect(http("GET", "/_emulator/nothing").code).to eq("404")
  end

  it "serves 64 concurrent keep-alive connections with 50 ms latency in parallel" do
    emulator.configure("latency_ms" => 50)
    connections = Array.new(64) { Net::HTTP.new("127.0.0.1", emulator.port).tap(&:start) }
    started = GitlabGcsSigner::Emulator.monotonic
    codes = connections.map do |connection|
      Thread.new { Array.new(3) { connection.get(token_path, flavor).code } }
    end.flat_map(&:value)
    elapsed = GitlabGcsSigner::Emulator.monotonic - started
    connections.each(&:finish)
    expect(codes.tally).to eq("200" => 192)
    # 192 answers of 50 ms each: 9.6 s one at a time, 0.15 s fully parallel.
    expect(elapsed).to be < 192 * 0.05 / 2
  end

  describe GitlabGcsSigner::Emulator::Process do
    it "starts the executable on a free port and stops it cleanly on SIGTERM, even with a request hanging" do
      other = described_class.start(token_lifetime: 42)
      begin
        expect(other.url).to eq("http://127.0.0.1:#{other.port}")
        expect(other.host).to eq("127.0.0.1:#{other.port}")
        expect(other.port).not_to eq(emulator.port)
        expect(JSON.parse(http("GET", token_path, headers: flavor, port: other.port).body)["expires_in"]).to eq(42)

        other.configure("metadata" => { "fail_next" => ["timeout"] }) # holds the request for 30 s
        hanging = Thread.new do
          http("GET", token_path, headers: flavor, port: other.port, read_timeout: 20)
        rescue EOFError, SystemCallError => e
          e
        end
        wait_until("the hanging request at the emulator") { other.stats["token_requests"] == 2 }
        started = GitlabGcsSigner::Emulator.monotonic
        status = other.stop
        expect(GitlabGcsSigner::Emulator.monotonic - started).to be < 3
        expect(status).to be_success
        expect(hanging.value).to be_a(EOFError).or be_a(Errno::ECONNRESET)
      ensure
        other.stop
      end
    end

    it "prints exactly one line, 'listening http://127.0.0.1:PORT'" do
      Open3.popen3(RbConfig.ruby, described_class::EXE, "--port", "0") do |stdin, stdout, _stderr, wait|
        stdin.close
        line = stdout.gets
        expect(line).to match(%r{\Alistening http://127\.0\.0\.1:\d+\n\z})
        ::Process.kill("INT", wait.pid)
        expect(stdout.read).to eq("")
        expect(wait.value).to be_success
      end
    end

    it "passes --cold-start-ms: the metadata server is silent for that long after start" do
      # The silence starts while the emulator boots, before start returns:
      # 2 s leave a loaded machine's boot far behind.
      cold = described_class.start(cold_start_ms: 2000)
      started = GitlabGcsSigner::Emulator.monotonic
      expect(http("GET", token_path, headers: flavor, port: cold.port).code).to eq("200")
      expect(GitlabGcsSigner::Emulator.monotonic - started).to be > 0.5
    ensure
      cold&.stop
    end

    it "reports a start failure instead of hanging" do
      expect { described_class.start(key: "/nonexistent/key.json", err: File::NULL) }.to raise_error(/exited before listening/)
    end
  end
end
