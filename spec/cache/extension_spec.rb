# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/cache_helper"

# The cache contract (README "The cache", src/cache.rs): a request needing a
# URL valid until X = now + lifetime may get a cached URL expiring at x only
# if X <= x <= X + E, E = min(extension_ratio * lifetime, max_extension);
# a miss signs with x = X + E. Local key signers: no network needed.
RSpec.describe "signed-URL cache: extension bounds", :cache do
  let(:clock) { manual_clock }
  let(:signer) { key_signer(clock: clock) }
  let(:request) { { bucket: "bucket", object: "dir/file.bin", expires_in: 600 } }

  def key_signer(**options)
    GitlabGcsSigner::Testing.signer(credentials: CONFORMANCE_KEY, **options)
  end

  it "signs a miss with x = X + E and serves it while X <= x" do
    first = signer.signed_url(**request)
    expect(url_expiry(first)).to eq(CACHE_EPOCH + 660) # E = 10% of 600 s
    clock.advance(59)
    expect(signer.signed_url(**request)).to eq(first)
    clock.advance(1) # X = CACHE_EPOCH + 660 = x: still exactly long enough
    expect(signer.signed_url(**request)).to eq(first)
    clock.advance(0.5) # X rounds up to CACHE_EPOCH + 661 > x
    second = signer.signed_url(**request)
    expect(second).not_to eq(first)
    expect(url_expiry(second)).to eq(CACHE_EPOCH + 60 + 661)
    expect(signer.stats).to include(hits: 2, misses: 2)
  end

  it "re-signs when a shorter lifetime follows a longer one (x > X + E)" do
    long = signer.signed_url(**request)
    short = signer.signed_url(**request, expires_in: 300)
    expect(short).not_to eq(long)
    expect(url_expiry(short)).to eq(CACHE_EPOCH + 330)
    # A slightly longer lifetime may take the shorter URL: 320 <= 330 <= 352.
    expect(signer.signed_url(**request, expires_in: 320)).to eq(short)
  end

  it "caps E at max_extension (a 4 h 15 min upload URL lives at most 5 min longer)" do
    url = signer.signed_url(**request, method: "PUT", expires_in: 15_300)
    expect(url_expiry(url)).to eq(CACHE_EPOCH + 15_300 + 300)
  end

  it "treats expires_at like expires_in (a Time or epoch seconds)" do
    by_time = signer.signed_url(**request.except(:expires_in), expires_at: Time.at(CACHE_EPOCH + 600))
    expect(url_expiry(by_time)).to eq(CACHE_EPOCH + 660)
    expect(signer.signed_url(**request.except(:expires_in), expires_at: CACHE_EPOCH + 600.2)).to eq(by_time)
  end

  it "rounds a Time's fraction of a second up, never down (cache: false: no extension)" do
    uncached = key_signer(clock: clock, cache: false)
    expiry = ->(at) { url_expiry(uncached.signed_url(**request.except(:expires_in), expires_at: at)) }
    expect(expiry.(Time.at(CACHE_EPOCH + 600))).to eq(CACHE_EPOCH + 600)
    expect(expiry.(Time.at(CACHE_EPOCH + 600, 1, :nsec))).to eq(CACHE_EPOCH + 601)
    expect(expiry.(Time.at(CACHE_EPOCH + 600, 999_999_999, :nsec).localtime("-07:00"))).to eq(CACHE_EPOCH + 601)
  end

  [:v2, :v4].each do |version|
    it "keeps every #{version} URL's own expiry within [asked, asked + E]" do
      rng = Random.new(42)
      cached = key_signer(clock: clock, cache: { extension_ratio: 0.2, max_extension: 900 })
      300.times do
        clock.advance(rng.rand < 0.8 ? rng.rand(10.0) : rng.rand(900))
        lifetime = [rng.rand(1..20_000), rng.rand(1.0..2000.0), 600, 600, 15_300, 15_300].sample(random: rng)
        url = cached.signed_url(bucket: "b", object: "o#{rng.rand(3)}", version: version, expires_in: lifetime)
        low, high = window(clock.now, lifetime, ratio: 0.2, max_extension: 900)
        expect(url_expiry(url)).to be_between(low, high)
        expect(verifies?(url, method: "GET", now: low)).to be(true)
        expect(verifies?(url, method: "GET", now: high + 1)).to be(false)
      end
      expect(cached.stats[:hits]).to be > 50
    end
  end

  it "never signs a V4 URL for more than 604800 s, however large E is" do
    wide = key_signer(clock: clock, cache: { extension_ratio: 1.0, max_extension: 86_400 })
    week = wide.signed_url(**request, expires_in: 604_800)
    expect(url_facts(week)).to include(expires_at: CACHE_EPOCH + 604_800, signed_at: CACHE_EPOCH)
    # Six days asked, E = one day: the seven-day URL fits the window.
    expect(wide.signed_url(**request, expires_in: 6 * 86_400)).to eq(week)
    five = wide.signed_url(**request, expires_in: 5 * 86_400)
    expect(url_expiry(five)).to eq(CACHE_EPOCH + (6 * 86_400))
    expect { wide.signed_url(**request, expires_in: 604_802) }.to raise_error(ArgumentError, /604800/)
  end

  it "with E = 0 serves only a URL expiring exactly when asked" do
    exact = key_signer(clock: clock, cache: { extension_ratio: 0.0, max_extension: 0 })
    url = exact.signed_url(**request)
    expect(url_expiry(url)).to eq(CACHE_EPOCH + 600)
    expect(exact.signed_url(**request)).to eq(url)
    clock.advance(1)
    expect(exact.signed_url(**request)).not_to eq(url)
  end

  it "bypasses the cache for an explicit timestamp" do
    cached = signer.signed_url(**request)
    pinned = signer.signed_url(**request, timestamp: CACHE_EPOCH)
    expect(pinned).not_to eq(cached)
    expect(url_expiry(pinned)).to eq(CACHE_EPOCH + 600) # no extension: exactly what was asked
    expect(signer.signed_url(**request, timestamp: CACHE_EPOCH)).to eq(pinned) # same inputs, same RSA signature
    expect(signer.stats).to include(local_signatures: 3, hits: 0, entries: 1)
    expect(signer.signed_url(**request)).to eq(cached) # the pinned URLs were not stored
  end

  it "signs every call with cache: false" do
    uncached = key_signer(clock: clock, cache: false)
    urls = Array.new(3) { uncached.signed_url(**request) }
    expect(urls.map { |u| url_expiry(u) }).to all(eq(CACHE_EPOCH + 600))
    expect(uncached.stats).to include(hits: 0, local_signatures: 3, entries: 0)
    expect(uncached.cache_config).to be_nil
  end

  it "reports every counter the issue names" do
    signer.signed_url(**request)
    signer.signed_url(**request)
    expect(signer.stats.keys).to include(
      :hits, :misses, :coalesced, :sign_blob_calls, :sign_blob_errors_permission, :sign_blob_errors_quota,
      :sign_blob_errors_unavailable, :sign_blob_errors_other, :token_fetches, :evictions, :entries, :throttled
    )
    expect(signer.stats).to include(hits: 1, misses: 1, entries: 1, sign_blob_calls: 0)
    expect(signer.stats.values).to all(be_a(Integer))
  end
end
