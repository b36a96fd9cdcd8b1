# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/cache_helper"

# Rules that need real signBlob calls (counted by the emulator): the 12-hour
# limit on signBlob signatures, one call for concurrent misses of a key, and
# failures that are never cached.
RSpec.describe "signed-URL cache with signBlob", :cache, :emulator do
  let(:clock) { manual_clock(Time.now.to_i) }
  let(:request) { { bucket: "bucket", object: "artifacts/job.zip", expires_in: 600 } }

  def sign_blob_calls
    emulator.stats["sign_blob_calls"]
  end

  # The cached URL must still work at the emulator: its clock follows the
  # ManualClock for the check only (tokens are judged by the same clock).
  def works_at_emulator?(url, at:)
    gcs_at(url, at: at).code != "403"
  end

  describe "the 12-hour rule" do
    # E = 100% of the lifetime: only the 12 h rule can refuse a URL. The first
    # URL is asked for 30,000 s and so signed to live 60,000 s.
    let(:wide) { { extension_ratio: 1.0, max_extension: 86_400 } }
    let(:start) { clock.now.floor }
    let(:twelve) { 12 * 3600 }

    it "serves a signBlob URL only to requests that need it at most 12 h after it was signed" do
      signer = keyless_signer(clock: clock, cache: wide)
      first = signer.signed_url(**request.except(:expires_in), expires_at: start + 30_000)
      expect(url_expiry(first)).to eq(start + 60_000)
      clock.set(start + 20_000)
      expect(signer.signed_url(**request.except(:expires_in), expires_at: start + twelve)).to eq(first)
      expect(works_at_emulator?(first, at: clock.now)).to be(true)
      fresh = signer.signed_url(**request.except(:expires_in), expires_at: start + twelve + 1)
      expect(fresh).not_to eq(first)
      expect(sign_blob_calls).to eq(2)
    end

    it "never serves a signBlob URL 12 h after it was signed" do
      signer = keyless_signer(clock: clock, cache: wide)
      first = signer.signed_url(**request.except(:expires_in), expires_at: start + 30_000)
      clock.set(start + twelve)
      expect(signer.signed_url(**request.except(:expires_in), expires_at: start + twelve + 5_000)).not_to eq(first)
    end

    it "keeps serving a key-signed URL after 12 h" do
      signer = GitlabGcsSigner::Testing.signer(credentials: CONFORMANCE_KEY, clock: clock, cache: wide)
      first = signer.signed_url(**request.except(:expires_in), expires_at: start + 30_000)
      clock.set(start + (13 * 3600))
      expect(signer.signed_url(**request.except(:expires_in), expires_at: start + 56_000)).to eq(first)
      expect(signer.stats).to include(local_signatures: 1, hits: 1)
    end
  end

  describe "coalescing" do
    it "makes one signBlob call for threads missing the same key, with the GVL released" do
      emulator.configure("iam" => { "latency_ms" => 400 })
      signer = keyless_signer(clock: clock)
      signer.email # the metadata lookup is not what is measured
      ticks = 0
      ticker = Thread.new { loop { ticks += 1; sleep 0.005 } }
      urls = Array.new(12) { Thread.new { signer.signed_url(**request) } }.map(&:value)
      ticker.kill
      expect(urls.uniq.size).to eq(1)
      expect(sign_blob_calls).to eq(1)
      expect(signer.stats).to include(sign_blob_calls: 1, coalesced: be >= 1)
      expect(signer.stats[:misses]).to eq(12 - signer.stats[:hits])
      # A Ruby thread kept running while every caller waited on signBlob.
      expect(ticks).to be > 5
    end

    it "signs distinct keys in parallel (several calls in flight at once)" do
      emulator.configure("iam" => { "latency_ms" => 300 })
      signer = keyless_signer(clock: clock)
      signer.email
      urls = Array.new(8) { |i| Thread.new { signer.signed_url(**request, object: "o#{i}") } }.map(&:value)
      expect(urls.uniq.size).to eq(8)
      expect(emulator.stats["sign_blob_max_in_flight"]).to be > 1
    end
  end

  describe "failures" do
    it "fails every waiter with one call, caches nothing, and recovers" do
      # The denial comes after 1.5 s: the six threads join the one call
      # even when a loaded machine starts them slowly (a thread arriving
      # after the failure would make a second call).
      emulator.configure("deny_sign_blob" => true, "iam" => { "latency_ms" => 1500 })
      signer = keyless_signer(clock: clock)
      signer.email
      results = Array.new(6) do
        Thread.new do
          signer.signed_url(**request)
        rescue GitlabGcsSigner::Error => e
          e
        end
      end.map(&:value)
      expect(results).to all(be_a(GitlabGcsSigner::PermissionDeniedError))
      expect(sign_blob_calls).to eq(1)
      expect(signer.stats).to include(entries: 0, sign_blob_errors_permission: 1)
      emulator.configure("deny_sign_blob" => false)
      url = signer.signed_url(**request)
      expect(works_at_emulator?(url, at: clock.now)).to be(true)
      expect(sign_blob_calls).to eq(2)
      expect(signer.signed_url(**request)).to eq(url)
    end

    it "does not cache a call that failed after its retries" do
      signer = keyless_signer(clock: clock, timeout: 1.5)
      signer.email
      emulator.configure("iam" => { "rate_503" => 1.0 })
      expect { signer.signed_url(**request) }
        .to raise_error(GitlabGcsSigner::Error) { |e| expect(e).to be_a(GitlabGcsSigner::ServiceUnavailableError).or be_a(GitlabGcsSigner::TimeoutError) }
      failed_calls = sign_blob_calls
      expect(failed_calls).to be > 1 # it did retry
      expect(signer.stats[:entries]).to eq(0)
      emulator.configure("iam" => { "rate_503" => 0.0 })
      url = signer.signed_url(**request)
      expect(sign_blob_calls).to eq(failed_calls + 1)
      expect(works_at_emulator?(url, at: clock.now)).to be(true)
    end
  end
end
