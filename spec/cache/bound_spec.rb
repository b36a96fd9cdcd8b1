# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/cache_helper"

# Memory stays bounded: never more than max_entries URLs, evictions counted,
# and URLs nobody can use any more (expired) dropped.
RSpec.describe "signed-URL cache bound", :cache do
  let(:clock) { manual_clock }

  def signer(max_entries)
    GitlabGcsSigner::Testing.signer(credentials: CONFORMANCE_KEY, clock: clock, cache: { max_entries: max_entries })
  end

  it "keeps at most max_entries URLs and counts the evictions" do
    bounded = signer(100)
    1_000.times do |i|
      bounded.signed_url(bucket: "b", object: "one-off/#{i}", expires_in: 600)
      expect(bounded.stats[:entries]).to be <= 100 if (i % 50).zero?
    end
    stats = bounded.stats
    expect(stats[:entries]).to be <= 100
    expect(stats[:evictions]).to be >= 1_000 - 100
    expect(stats[:evictions] + stats[:entries]).to eq(1_000)
  end

  it "keeps a hot URL while a scan of one-off objects passes through" do
    bounded = signer(100)
    hot = bounded.signed_url(bucket: "b", object: "hot", expires_in: 600)
    1_000.times do |i|
      bounded.signed_url(bucket: "b", object: "scan/#{i}", expires_in: 600)
      expect(bounded.signed_url(bucket: "b", object: "hot", expires_in: 600)).to eq(hot) if (i % 50).zero?
    end
  end

  it "does not count a newer URL replacing an older one for the same key as an eviction" do
    bounded = signer(100)
    bounded.signed_url(bucket: "b", object: "o", expires_in: 600)
    clock.advance(61) # the first URL (x = +660) no longer covers X = +661
    bounded.signed_url(bucket: "b", object: "o", expires_in: 600)
    expect(bounded.stats).to include(misses: 2, entries: 1, evictions: 0)
  end

  it "drops expired URLs as time passes" do
    bounded = signer(100_000)
    2_100.times { |i| bounded.signed_url(bucket: "b", object: "old/#{i}", expires_in: 60) }
    expect(bounded.stats[:entries]).to eq(2_100)
    clock.advance(3600)
    # Expired entries go in a sweep every 4096 inserts (src/cache.rs), so
    # the 4096th miss drops all 2100 old ones.
    2_000.times { |i| bounded.signed_url(bucket: "b", object: "new/#{i}", expires_in: 60) }
    expect(bounded.stats).to include(entries: 2_000, evictions: 2_100)
  end
end
