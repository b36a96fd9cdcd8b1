# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"

# bench/load.rb at CI size, in its own process (its own emulator, and no
# token left over from other specs, so the token count is exact): 4 forked
# Puma-like workers x 16 threads, then a Sidekiq-like process x 25 threads,
# every distinct URL verified by the emulator. The figures are printed, not
# asserted (a loaded CI machine is no benchmark); correctness is asserted.
RSpec.describe "load: Puma workers and a Sidekiq process on one preloaded signer" do
  seconds = Float(ENV.fetch("GCS_SIGNER_LOAD_SPEC_SECONDS", 6))
  hard_limit = 180

  before(:all) do
    script = File.expand_path("../../bench/load.rb", __dir__)
    cmd = [RbConfig.ruby, "-w", script, "--seconds", seconds.to_s, "--sidekiq-seconds", (seconds / 2).to_s, "--json"]
    out = +""
    Open3.popen2e(*cmd) do |_stdin, output, wait|
      reader = Thread.new { output.each_line { |line| out << line } }
      unless wait.join(hard_limit)
        Process.kill("KILL", wait.pid)
        raise "bench/load.rb did not finish within #{hard_limit} s (a hang):\n#{out}"
      end
      reader.join
      @status = wait.value
    end
    @report = out.lines.reject { |l| l.start_with?("{") }.join
    @result = JSON.parse(out.lines.reverse.find { |l| l.start_with?("{") } || raise("no JSON from bench/load.rb:\n#{out}"))
    puts "\n#{@report}"
  end

  let(:phases) { @result["phases"] }

  it "exits successfully, warning-free" do
    expect(@status).to be_success, @report
    expect(@report).not_to match(/warning:/)
  end

  it "ran both phases with the shape asked for" do
    expect(phases.map { |p| [p["role"], p["processes"], p["threads"]] }).to eq([["puma", 4, 64], ["sidekiq", 1, 25]])
    phases.each { |p| expect(p["urls"]).to be > 1000, p.inspect }
  end

  it "had zero errors and zero hangs" do
    phases.each do |p|
      expect([p["role"], p["errors"], p["error_samples"]]).to eq([p["role"], 0, []])
      expect([p["role"], p["hangs"]]).to eq([p["role"], 0])
    end
  end

  it "verified every distinct URL at the emulator's GCS endpoint" do
    phases.each do |p|
      expect(p["verify_sampled"]).to be(false)
      expect(p["verified"]).to eq(p["distinct_urls"])
      expect([p["verify_failures"], p["verify_failure_samples"]]).to eq([0, []])
      expect(p["emulator_verifications_failed"]).to eq(0)
    end
    expect(@result["emulator"]["verifications_failed"]).to eq(0)
  end

  it "fetched one token in the parent and none in the forked processes" do
    expect(@result["boot"]["stats"]["token_fetches"]).to eq(1)
    phases.each { |p| expect([p["role"], p["token_fetches"], p["emulator_token_requests"]]).to eq([p["role"], 0, 0]) }
    expect(@result["emulator"]["tokens_issued"]).to eq(1)
  end

  it "called signBlob only for misses (hot URLs came from the cache the parent filled)" do
    # Per process, each of the 200 hot objects misses at most once in V2
    # form (the parent signed only V4) and once in V4 form (if its window moved on).
    phases.each do |p|
      expect(p["hits"]).to be >= p["hot_urls"] - (2 * 200 * p["processes"])
      expect(p["sign_blob_calls"]).to eq(p["emulator_sign_blob_calls"])
      expect(p["sign_blob_calls"]).to be <= p["misses"]
    end
    expect(@result["emulator"]["sign_blob_max_in_flight"]).to be <= 64 * 4
  end
end
