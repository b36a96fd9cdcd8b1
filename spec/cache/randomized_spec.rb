# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/cache_helper"

# Random request streams, answered twice: by a cached signer and by an
# uncached one on the same ManualClock. For every request, what the two URLs
# grant must be the same - version, scheme, host, path, the caller's query,
# signing account, the set of methods that verify (with the request's
# headers) - and their expiries may differ only by the allowed extension:
# uncached x == X, cached X <= x <= X + E. Any difference is collected and
# the list must be empty. A signBlob URL must also never be served 12 h or
# more after it was signed.
#
# Sizes: CACHE_RANDOM_STREAMS (default 30 streams of 80 requests local, a sixth of that keyless) and
# CACHE_RANDOM_SEED; e.g. a soak:
#   CACHE_RANDOM_STREAMS=2000 ruby -w -S rspec spec/cache/randomized_spec.rb
module RandomStreams
  METHODS = %w[GET PUT DELETE HEAD].freeze
  LIFETIMES = [1, 59, 300, 600, 600.5, 3600, 15_300, 43_200, 86_400, 604_800].freeze
  SMALL_STEPS = [0, 0, 0.25, 1, 7, 30, 59.5].freeze
  LARGE_STEPS = [61, 300, 700, 3600, 43_199, 43_200].freeze
end

RSpec.describe "signed-URL cache against uncached signing (randomized)", :cache do

  let(:seed) { Integer(ENV.fetch("CACHE_RANDOM_SEED", "20240501"), 10) }

  # One stream: a small universe of requests (so keys repeat and the cache
  # is exercised) at random times with random lifetimes.
  def stream(rng, size)
    objects = Array.new(rng.rand(1..4)) { |i| ["o#{i}", "dir/ü #{i}+x.bin", "a/b/c#{i}"].sample(random: rng) }
    shapes = Array.new(rng.rand(1..5)) do
      {
        bucket: %w[b1 b2].sample(random: rng), object: objects.sample(random: rng),
        method: RandomStreams::METHODS.sample(random: rng), version: %i[v2 v4].sample(random: rng),
        headers: [{}, {}, { "x-goog-meta-k" => rng.rand(2).to_s }, { "Content-Type" => "text/plain" }].sample(random: rng),
        query: [{}, {}, { "response-content-disposition" => "attachment; filename=\"f#{rng.rand(2)}\"" }].sample(random: rng)
      }
    end
    lifetimes = RandomStreams::LIFETIMES.sample(rng.rand(1..3), random: rng)
    Array.new(size) do
      lifetime = rng.rand < 0.1 ? rng.rand(1.0..5000.0).round(3) : lifetimes.sample(random: rng)
      step = (rng.rand < 0.85 ? RandomStreams::SMALL_STEPS : RandomStreams::LARGE_STEPS).sample(random: rng)
      [step, shapes.sample(random: rng), lifetime, rng.rand < 0.2]
    end
  end

  # The methods a URL verifies for depend on its signature, not on the time
  # (while it is valid), so they are worked out once per URL and headers.
  def grants(url, request, now)
    facts = url_facts(url)
    @methods ||= {}
    methods = @methods[[url, request[:headers]]] ||=
      RandomStreams::METHODS.select { |m| verifies?(url, method: m, headers: request[:headers], now: now) }
    account = facts[:access_id] || facts[:credential].split("/").first
    facts.slice(:version, :scheme, :host, :path, :query, :signed_headers).merge(account: account, methods: methods)
  end

  # Compares both answers for every request; returns [differences, hits].
  def compare(cached, uncached, clock, requests, cache_options, sign_blob:)
    differences = []
    signed_at = {}
    requests.each_with_index do |(step, shape, lifetime, absolute), index|
      clock.advance(step)
      now = clock.now
      lifetime = [lifetime, 604_800].min
      timing = absolute ? { expires_at: now + lifetime } : { expires_in: lifetime }
      misses = cached.stats[:misses]
      mine = cached.signed_url(**shape, **timing)
      reference = uncached.signed_url(**shape, **timing)
      signed_at[mine] = now.floor if cached.stats[:misses] > misses
      low, high = window(now, lifetime, ratio: cache_options[:extension_ratio], max_extension: cache_options[:max_extension])
      # V4 cannot sign past 604800 s, whatever was asked (src/signer.rs plan).
      low, high = [low, high].map { |t| [t, now.floor + 604_800].min } if shape[:version] == :v4
      where = "request #{index} #{shape.inspect} #{timing.inspect} at #{now}"
      differences << "#{where}: reference expiry #{url_expiry(reference)} != #{low}" unless url_expiry(reference) == low
      differences << "#{where}: expiry #{url_expiry(mine)} outside [#{low}, #{high}]" unless url_expiry(mine).between?(low, high)
      if sign_blob && now.floor - signed_at.fetch(mine) >= 12 * 3600
        differences << "#{where}: signBlob URL served #{now.floor - signed_at[mine]} s after signing"
      end
      a = grants(mine, shape, now)
      b = grants(reference, shape, now)
      differences << "#{where}: grants #{a} vs #{b}" unless a == b
      differences << "#{where}: grants nothing to its own method" unless verifies?(mine, method: shape[:method], headers: shape[:headers], now: low)
      differences << "#{where}: still valid after X + E" if verifies?(mine, method: shape[:method], headers: shape[:headers], now: high + 1)
    end
    [differences, cached.stats[:hits]]
  end

  def run(streams, size, sign_blob:)
    total_hits = 0
    total = 0
    all_differences = []
    streams.times do |i|
      rng = Random.new(seed + i)
      clock = manual_clock((sign_blob ? Time.now.to_i : CACHE_EPOCH) + rng.rand(86_400))
      cache_options = { extension_ratio: [0.0, 0.05, 0.1, 0.2, 0.5, 1.0].sample(random: rng),
                        max_extension: [0, 30, 300, 900, 86_400].sample(random: rng), max_entries: [2, 1000].sample(random: rng) }
      cached = yield(clock, cache_options)
      uncached = yield(clock, false)
      requests = stream(rng, size)
      differences, hits = compare(cached, uncached, clock, requests, cache_options, sign_blob: sign_blob)
      all_differences.concat(differences.first(5).map { |d| "seed #{seed + i}: #{d}" })
      total_hits += hits
      total += size
    end
    [all_differences, total_hits, total]
  end

  it "finds zero differences with local key signers" do
    streams = Integer(ENV.fetch("CACHE_RANDOM_STREAMS", "30"), 10)
    differences, hits, total = run(streams, 80, sign_blob: false) do |clock, cache|
      GitlabGcsSigner::Testing.signer(credentials: CONFORMANCE_KEY, clock: clock, cache: cache)
    end
    expect(differences).to eq([])
    # The streams must exercise the cache, not just miss.
    expect(hits).to be > total / 10
  end

  it "finds zero differences with signBlob (keyless, 12 h rule)", :emulator do
    streams = [Integer(ENV.fetch("CACHE_RANDOM_STREAMS", "30"), 10) / 6, 1].max
    differences, hits, total = run(streams, 60, sign_blob: true) do |clock, cache|
      keyless_signer(clock: clock, cache: cache)
    end
    expect(differences).to eq([])
    expect(hits).to be > total / 10
  end
end
