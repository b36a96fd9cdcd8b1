# frozen_string_literal: true

require "json"

# Stale-if-error and refresh-ahead with the shared (Redis) level: a URL
# another process stored counts as a stale answer for exactly the same
# request, and a background refresh is published to the store.
RSpec.describe "outages with the shared cache level", :emulator, :redis do
  include OutageHelper

  let(:redis) { RedisServer.shared }
  let(:bucket) { "gitlab-uploads" }
  let(:object) { "uploads/7/shared.pdf" }
  let(:clock) { GitlabGcsSigner::Testing::ManualClock.new(Time.now.to_i) }
  let(:t0) { clock.now }

  before do
    redis.client.flushdb
    emulator.client.put_object(bucket, object, "pdf")
  end

  # One Puma process: its own local cache, its own store connection. The
  # store gets 2 s before a call counts as failed (the README's 0.2 s client
  # timeouts and 0.25 s `slow` could open the breaker on a loaded machine;
  # these examples are about IAM failing, not Redis).
  def process_signer(**options)
    shared = GitlabGcsSigner::SharedCache.new(redis.cache_store(timeout: 2.0), slow: 2.0)
    keyless_signer(shared_cache: shared, clock: clock, timeout: 1.5, **options)
  end

  def stored
    client = redis.client
    client.keys("gitlab_gcs_signer:v1:*").reject { |k| k.end_with?(":lock") }.to_h do |k|
      [k, JSON.parse(client.get(k))]
    end
  end

  it "serves another process's stored URL for the same request when signing fails" do
    url = download(process_signer)
    before = stored
    clock.advance(120) # the stored URL has 540 s left: stale for a 600 s request
    emulator.configure("iam" => { "rate_503" => 1.0 })
    other = process_signer
    expect(download(other)).to eq(url)
    expect(other.stats).to include(stale_served: 1, shared_stale: 1, shared_rejected: 0, shared_writes: 0)
    expect(stored).to eq(before) # a stale answer is not written back
    expect(accepted?(url)).to be(true)
  end

  it "does not serve another process's URL with less than the minimum life left" do
    download(process_signer)
    clock.advance(601) # 59 s left
    emulator.configure("iam" => { "rate_503" => 1.0 })
    other = process_signer
    expect { download(other) }.to raise_unavailable
    expect(other.stats).to include(stale_served: 0)
  end

  it "never serves a stored URL of another request, even under this request's key" do
    first = process_signer
    download(first)
    download(first, name: "uploads/8/other.pdf")
    entries = stored
    mine = entries.keys.find { |k| entries[k]["url"].include?("shared.pdf") }
    theirs = entries.keys.find { |k| entries[k]["url"].include?("other.pdf") }
    redis.client.set(mine, JSON.generate(entries[theirs]))
    clock.advance(120)
    emulator.configure("iam" => { "rate_503" => 1.0 })
    other = process_signer
    expect { download(other) }.to raise_unavailable
    expect(other.stats).to include(stale_served: 0, shared_rejected: 1)
  end

  it "publishes a background refresh to the store, so other processes hit it" do
    hot = process_signer(refresh_ahead: true)
    first = download(hot) # expires t0 + 660: serves 600 s requests until t0 + 60
    clock.set(t0 + 50) # 10 s of slack < 25% of E = 15 s: refresh in the background
    expect(download(hot)).to eq(first)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
    sleep 0.01 until hot.stats[:entries] == 1 && emulator.stats["sign_blob_calls"] == 2 &&
                     (download(hot) && stored.values.first["expires_at"] == t0 + 710) ||
                     Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    expect(stored.values.map { |v| v["expires_at"] }).to eq([t0 + 710])
    expect(hot.stats).to include(refreshes: 1, misses: 1)

    clock.set(t0 + 61) # the first URL no longer serves; the refreshed one does
    other = process_signer
    refreshed = download(other)
    expect(refreshed).not_to eq(first)
    expect(other.stats).to include(shared_hits: 1, misses: 0, sign_blob_calls: 0)
    expect(download(hot)).to eq(refreshed)
    expect(hot.stats[:misses]).to eq(1)
    expect(emulator.stats["sign_blob_calls"]).to eq(2)
    expect(accepted?(refreshed)).to be(true)
  end
end
