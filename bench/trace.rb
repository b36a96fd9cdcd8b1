# frozen_string_literal: true

# signBlob calls per 1,000 URL requests on a GitLab-like trace.
#
#   rake compile && ruby -w bench/trace.rb        (about a minute on 2 idle cores;
#                                                   BENCH_SMOKE=1 for a 5-second run)
#
# The trace (fixed seed 20240501, 1 h of simulated traffic, about 48,000 URL requests):
# - downloads (send_upload redirects): Poisson arrivals at 11 per second over 10,000 objects
#   whose popularity follows Zipf (s = 1.0); a GET with a response-content-disposition naming the
#   file, asked for 600 s (CarrierWave's fog_authenticated_url_expiration default);
# - direct uploads: 0.25 per second, each a new object and three URLs at once (GET, PUT, DELETE),
#   asked for 4 h 15 min (ObjectStorage::DirectUpload);
# - CI bursts: a pipeline every 60 s on average whose 20-200 jobs fetch the same new artifact
#   (GET with content-disposition, 600 s) spread over 10 s, 1 min or 5 min.
# TRACE_SCALE multiplies every rate (TRACE_SCALE=2: about 96,000 requests).
# Time is simulated with GitlabGcsSigner::Testing::ManualClock at millisecond resolution, so two
# hours run in seconds. docs/facts.md#gitlab-urls describes how GitLab asks for URLs.
#
# For each cache setting it prints, per 1,000 URL requests: one signBlob call per URL (what
# fog-google does), the gem's calls, and the fewest signatures any cache could make for the same
# maximum extension E (computed here, offline, from the trace: per cache key, the smallest set of
# expiry times hitting every request's window [X, X + E], by the classic sort-by-right-end
# greedy). The gem must equal that bound; the script exits 1 if it does not.
#
# The default setting runs keyless against the emulator (signBlob latency 0) and counts the real
# calls the emulator received; the other settings use a local key (the cache decides hits and
# misses the same way for both), counting the gem's own signatures.

require_relative "support"

module Trace
  SEED = 20_240_501
  EPOCH = 1_700_000_000
  DURATION = Bench.size(3600, 60) # seconds of simulated traffic
  # TRACE_SCALE=2 doubles every rate (about 96,000 requests, 4 minutes or so).
  SCALE = Float(ENV.fetch("TRACE_SCALE", "1"))
  OBJECTS = 10_000
  DOWNLOADS_PER_SEC = 11.0 * SCALE
  UPLOADS_PER_SEC = 0.25 * SCALE
  PIPELINES_PER_SEC = SCALE / 60.0
  DOWNLOAD_LIFETIME = 600
  UPLOAD_LIFETIME = (4 * 3600) + (15 * 60)

  # One URL request: time in ms since EPOCH, and the signed_url arguments.
  Event = Struct.new(:ms, :kind, :method, :object, :query, :lifetime) do
    def key
      [method, object, query]
    end

    def arguments
      { bucket: "gitlab-uploads", object: object, method: method, query: query, expires_in: lifetime, version: :v2 }
    end
  end

  module_function

  def generate
    rng = Random.new(SEED)
    events = []
    poisson(rng, DOWNLOADS_PER_SEC) do |ms|
      id = zipf(rng)
      events << Event.new(ms, :download, "GET", "uploads/#{id}/file-#{id}.png",
                          { "response-content-disposition" => "inline; filename=\"file-#{id}.png\"" }, DOWNLOAD_LIFETIME)
    end
    poisson(rng, UPLOADS_PER_SEC).each_with_index do |ms, n|
      object = "tmp/uploads/#{n}-#{rng.bytes(8).unpack1('H*')}"
      %w[GET PUT DELETE].each { |verb| events << Event.new(ms, :upload, verb, object, {}, UPLOAD_LIFETIME) }
    end
    poisson(rng, PIPELINES_PER_SEC).each_with_index do |start, pipeline|
      spread = [10_000, 60_000, 300_000].sample(random: rng)
      object = "artifacts/#{pipeline}/artifacts.zip"
      query = { "response-content-disposition" => "attachment; filename=\"artifacts.zip\"" }
      rng.rand(20..200).times do
        events << Event.new(start + rng.rand(spread), :ci, "GET", object, query, DOWNLOAD_LIFETIME)
      end
    end
    events.select { |e| e.ms < DURATION * 1000 }.each_with_index.sort_by { |e, i| [e.ms, i] }.map(&:first)
  end

  # Arrival times (ms) of a Poisson process over DURATION.
  def poisson(rng, per_sec)
    times = []
    t = 0.0
    loop do
      t += -Math.log(1 - rng.rand) / per_sec
      break if t >= DURATION

      times << (t * 1000).floor
      yield times.last if block_given?
    end
    times
  end

  def zipf(rng)
    @cdf ||= begin
      weights = (1..OBJECTS).map { |k| 1.0 / k }
      total = weights.sum
      acc = 0.0
      weights.map { |w| acc += w / total }
    end
    u = rng.rand
    @cdf.bsearch_index { |c| c >= u } || (OBJECTS - 1)
  end

  # The request's window [X, X + E] in whole seconds, from the contract
  # (README "The cache"): X rounds the asked expiry up, E = min(floor(ratio * (X - now)), max).
  def window(event, ratio, max_extension)
    now = EPOCH + event.ms.div(1000)
    at_least = EPOCH + (event.ms + (event.lifetime * 1000) + 999).div(1000)
    [at_least, at_least + [(ratio * (at_least - now)).floor, max_extension].min]
  end

  # The fewest URLs any cache could sign: per key, stab every window with as
  # few expiry times as possible (sort by right end; a point at the right end
  # of each window not yet hit). Offline, unbounded memory.
  def lower_bound(events, ratio, max_extension)
    events.group_by(&:key).sum do |_, mine|
      windows = mine.map { |e| window(e, ratio, max_extension) }.sort_by(&:last)
      point = nil
      windows.count do |low, high|
        next false if point && point >= low && point <= high

        point = high
        true
      end
    end
  end

  # Replays the trace through a signer on a ManualClock; returns the signer.
  def replay(events, signer, clock)
    events.each do |event|
      clock.set(EPOCH + (event.ms / 1000.0))
      signer.signed_url(**event.arguments)
    end
    signer
  end
end

# bench/outage.rb loads the trace from here.
return unless $PROGRAM_NAME == __FILE__

events = Trace.generate
counts = events.group_by(&:kind).transform_values(&:size)
Bench.title("Trace: #{events.size} URL requests over #{Trace::DURATION / 60} simulated minutes " \
            "(seed #{Trace::SEED}, scale #{Trace::SCALE})")
Bench.row("downloads (600 s, Zipf over #{Trace::OBJECTS} objects)", counts[:download])
Bench.row("direct-upload URLs (GET/PUT/DELETE, 4 h 15 min)", counts[:upload])
Bench.row("CI artifact fetches in bursts (600 s)", counts[:ci])
Bench.row("distinct cache keys", events.map(&:key).uniq.size)

# [ratio, max_extension]; the first (the default) runs keyless against the emulator. In this
# trace max_extension only matters for upload URLs, which are never asked for twice.
settings = [[0.1, 300], [0.0, 0], [0.05, 300], [0.2, 300], [0.5, 900]]
settings = settings.first(2) if Bench::SMOKE
per_k = ->(n) { format("%7.1f", n * 1000.0 / events.size) }

# Replays the trace under one setting; returns [signatures, hits, seconds, stats].
run = lambda do |ratio, max_extension, keyless|
  clock = GitlabGcsSigner::Testing::ManualClock.new(Trace::EPOCH)
  cache = { extension_ratio: ratio, max_extension: max_extension, max_entries: 20_000 }
  started = Bench.monotonic
  if keyless
    # The quota guard limits calls per real minute; an hour of simulated traffic replays in
    # seconds, so it is lifted here (bench/concurrency.rb measures the guard itself).
    signer = Bench.keyless_signer(cache: cache, clock: clock, max_sign_blob_per_minute: 1_000_000)
    signer.email
    before = Bench.emulator.stats["sign_blob_calls"]
    Trace.replay(events, signer, clock)
    calls = Bench.emulator.stats["sign_blob_calls"] - before
    if calls != signer.stats[:sign_blob_calls]
      abort "FAIL: the emulator counted #{calls} signBlob calls, the gem #{signer.stats[:sign_blob_calls]}"
    end
  else
    signer = Trace.replay(events, Bench.key_signer(cache: cache, clock: clock), clock)
    calls = signer.stats[:local_signatures]
  end
  [calls, signer.stats[:hits], Bench.monotonic - started, signer.stats]
end

default = run.call(*settings.first, true)
# The other settings sign locally, two at a time (a miss releases the GVL; 2 cores).
others = settings.drop(1).each_slice(2).flat_map do |pair|
  pair.map { |ratio, max_extension| Thread.new { run.call(ratio, max_extension, false) } }.map(&:value)
end

Bench.title("signBlob calls per 1,000 URL requests (fog-google: 1000.0, one call per URL)")
puts format("  %-24s %9s %9s %11s %8s %14s %15s", "E = min(ratio*life, max)", "gem", "bound", "", "hit rate",
            "600 s URL life", "4h15m URL life")
failed = false
settings.zip([default] + others).each_with_index do |((ratio, max_extension), (calls, hits, _, _)), i|
  bound = Trace.lower_bound(events, ratio, max_extension)
  failed ||= calls != bound
  life = ->(l) { l + [(ratio * l).floor, max_extension].min }
  label = format("ratio %.2f, max %3d s%s", ratio, max_extension, i.zero? ? " *" : "")
  puts format("  %-24s %9s %9s %11s %7.1f%% %12d s %13.2f h", label, per_k.call(calls), per_k.call(bound),
              calls == bound ? "gem==bound" : "DIFFERENT", 100.0 * hits / events.size,
              life.call(Trace::DOWNLOAD_LIFETIME), life.call(Trace::UPLOAD_LIFETIME) / 3600.0)
end
calls, _, seconds, stats = default
puts
puts format("  * default, keyless: %d real signBlob calls at the emulator in %.1f s; %d entries, %d evictions,",
            calls, seconds, stats[:entries], stats[:evictions])
puts format("    %d coalesced, %d throttled. Other rows: local key, same cache.", stats[:coalesced], stats[:throttled])
puts
puts "  The default is ratio 0.10, max 300 s: a 10-minute download link lives at most 11 minutes, a"
puts "  4 h 15 min upload link at most 4 h 20 min."
if failed
  warn "FAIL: the gem's signBlob calls differ from the lower bound"
  exit 1
end
puts "  gem == bound for every setting"
