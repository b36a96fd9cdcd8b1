# frozen_string_literal: true

# A fleet of N processes (forked, each with its own signer and local cache)
# replays one GitLab-like trace at once against the emulator, first without
# and then with the shared Redis level, and prints signBlob calls per 1,000
# requests next to the fleet-wide lower bound computed from the merged trace.
#
#   ruby -Ilib -Itesting/lib bench/fleet.rb [--processes 8] [--duration 3600] [--seed 1] [--iam-latency-ms 0]
#
# Time: every process sets its ManualClock to the trace timestamp before each
# request, and the parent releases the trace one simulated second at a time
# to all processes together (a barrier), so simulated time agrees across the
# fleet and the counts are deterministic up to races inside one second.
#
# The trace (compact, same shape as bench/trace.rb): Zipf downloads with
# 600 s links, direct-upload trios (GET, PUT, DELETE) with 4 h 15 min links,
# and CI bursts (a pipeline's jobs fetching the same artifacts within
# seconds). Requests go to processes at random, as behind a load balancer.

require "json"
require "optparse"
require "gitlab_gcs_signer"
require "gitlab_gcs_signer/emulator"
require_relative "../spec/support/redis"
require_relative "../spec/support/manual_clock"

opts = { processes: 8, duration: 3600, seed: 1, iam_latency_ms: 0 }
OptionParser.new do |o|
  o.on("--processes N", Integer) { |v| opts[:processes] = v }
  o.on("--duration SECONDS", Integer, "simulated seconds of traffic") { |v| opts[:duration] = v }
  o.on("--seed N", Integer) { |v| opts[:seed] = v }
  o.on("--iam-latency-ms MS", Integer) { |v| opts[:iam_latency_ms] = v }
end.parse!

DOWNLOAD = 600
UPLOAD = (4 * 3600) + 900
# The signer's default cache: E = min(10% of the lifetime, 300 s).
def extension(lifetime)
  [(lifetime * 0.1).floor, 300].min
end

# [t, object, method, lifetime], t in whole simulated seconds.
def trace(duration, seed)
  rng = Random.new(seed)
  objects = 20_000
  # Zipf(s = 1.1) by inverse transform over the cumulative weights.
  weights = (1..objects).map { |k| 1.0 / (k**1.1) }
  total = weights.sum
  acc = 0.0
  cdf = weights.map { |w| acc += w / total }
  zipf = -> { cdf.bsearch_index { |c| c >= rng.rand } || (objects - 1) }
  events = []
  duration.times do |t|
    # about 5 downloads a second
    poisson(rng, 5.0).times { events << [t, "uploads/#{zipf.call}.png", "GET", DOWNLOAD] }
    # a direct upload every 5 s: three URLs for a new object
    if rng.rand < 0.2
      name = "tmp/uploads/#{t}-#{rng.rand(1 << 30)}"
      %w[GET PUT DELETE].each { |m| events << [t, name, m, UPLOAD] }
    end
    # a pipeline a minute: 20 jobs each fetch the 3 artifacts of an earlier stage within 10 s
    next unless (t % 60).zero?

    pipeline = t / 60
    20.times do
      at = [t + rng.rand(10), duration - 1].min
      3.times { |i| events << [at, "artifacts/#{pipeline}/#{i}.zip", "GET", DOWNLOAD] }
    end
  end
  events.sort_by { |e| e[0] }
end

def poisson(rng, mean)
  l = Math.exp(-mean)
  k = 0
  p = 1.0
  loop do
    p *= rng.rand
    return k if p <= l

    k += 1
  end
end

# Fewest URLs that can serve the requests: per key, the requests' windows
# [X, X + E] stabbed greedily by their right ends (the cache's own rule,
# independent of the signer's code).
def lower_bound(events)
  events.group_by { |_, o, m, _| [o, m] }.sum do |_, reqs|
    windows = reqs.map { |t, _, _, life| [t + life, t + life + extension(life)] }.sort_by(&:last)
    point = nil
    windows.sum do |lo, hi|
      next 0 if point && lo <= point # sorted by hi, so point <= hi too

      point = hi
      1
    end
  end
end

# One worker process: replays its requests one simulated second at a time.
def worker(events, emulator, redis_url, shared, base, cmd, done)
  clock = GitlabGcsSigner::Testing::ManualClock.new(base)
  shared_cache = nil
  if shared
    require "active_support"
    require "active_support/cache"
    require "active_support/cache/redis_cache_store"
    require "redis"
    # A client of its own and no store-built pool (ActiveSupport 7.2 with
    # connection_pool 3 cannot build one from url:, rails/rails#56461).
    redis = Redis.new(url: redis_url, connect_timeout: 0.2, read_timeout: 0.2, write_timeout: 0.2,
                      reconnect_attempts: 0)
    store = ActiveSupport::Cache::RedisCacheStore.new(redis: redis, pool: false)
    shared_cache = GitlabGcsSigner::SharedCache.new(store)
  end
  signer = GitlabGcsSigner::Testing.signer(metadata_host: emulator.host, iam_endpoint: emulator.url, clock: clock,
                                       shared_cache: shared_cache)
  by_second = events.group_by(&:first)
  busy = 0.0
  while (line = cmd.gets)
    if line.start_with?("stats")
      done.puts(JSON.generate(signer.stats.merge(call_seconds: busy)))
      break
    end
    t = Integer(line)
    by_second.fetch(t, []).each do |_, object, method, lifetime|
      clock.set(base + t)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      signer.signed_url(bucket: "gitlab", object: object, method: method, expires_in: lifetime,
                        query: method == "GET" ? { "response-content-disposition" => "inline" } : {})
      busy += Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    end
    done.puts("ok")
  end
end

def run_fleet(assigned, emulator, redis_url, shared, base)
  children = assigned.map do |events|
    cmd_r, cmd_w = IO.pipe
    done_r, done_w = IO.pipe
    pid = fork do
      cmd_w.close
      done_r.close
      done_w.sync = true
      worker(events, emulator, redis_url, shared, base, cmd_r, done_w)
      exit!(0)
    rescue Exception => e # rubocop:disable Lint/RescueException
      warn "worker #{Process.pid}: #{e.class}: #{e.message}"
      exit!(1)
    end
    cmd_r.close
    done_w.close
    cmd_w.sync = true
    { pid: pid, cmd: cmd_w, done: done_r, seconds: events.map(&:first).uniq.to_h { |t| [t, true] } }
  end
  seconds = assigned.flat_map { |evs| evs.map(&:first) }.uniq.sort
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  seconds.each do |t|
    busy = children.select { |c| c[:seconds][t] }
    busy.each { |c| c[:cmd].puts(t) }
    busy.each { |c| c[:done].gets or raise "worker #{c[:pid]} died" }
  end
  elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
  stats = children.map do |c|
    c[:cmd].puts("stats")
    JSON.parse(c[:done].gets, symbolize_names: true)
  end
  children.each { |c| Process.wait(c[:pid]) }
  [stats, elapsed]
end

events = trace(opts[:duration], opts[:seed])
rng = Random.new(opts[:seed] + 1)
assigned = Array.new(opts[:processes]) { [] }
events.each { |e| assigned[rng.rand(opts[:processes])] << e }

emulator = GitlabGcsSigner::Emulator::Process.start
redis = RedisServer.new.start
base = Time.now.to_i

fleet_bound = lower_bound(events)
process_bound = assigned.sum { |evs| lower_bound(evs) }
n = events.size.to_f
puts format("trace: %<n>d requests over %<d>d simulated s, %<k>d keys, %<p>d processes (seed %<s>d)",
            n: events.size, d: opts[:duration], k: events.map { |_, o, m, _| [o, m] }.uniq.size,
            p: opts[:processes], s: opts[:seed])
puts format("lower bound, fleet-wide (one cache for all):   %<c>6d signatures, %<r>7.1f per 1,000 requests",
            c: fleet_bound, r: fleet_bound / n * 1000)
puts format("lower bound, per process (no shared level):     %<c>6d signatures, %<r>7.1f per 1,000 requests",
            c: process_bound, r: process_bound / n * 1000)

[false, true].each do |shared|
  emulator.reset! # clears faults too: set the latency after it
  emulator.configure("iam" => { "latency_ms" => opts[:iam_latency_ms] })
  redis.client.flushdb if shared
  stats, elapsed = run_fleet(assigned, emulator, redis.url, shared, base)
  calls = emulator.stats["sign_blob_calls"]
  sum = ->(k) { stats.sum { |s| s[k] || 0 } }
  label = shared ? "with the shared level   " : "without the shared level"
  puts format("%<l>s: %<c>6d signBlob calls, %<r>7.1f per 1,000 requests (%<x>.2fx the fleet bound); " \
              "mean call %<m>.2f ms, run %<e>.1f s",
              l: label, c: calls, r: calls / n * 1000, x: calls.to_f / fleet_bound,
              m: sum.call(:call_seconds) / n * 1000, e: elapsed)
  if shared
    puts format("  shared level: %<h>d hits, %<w>d coalesced waits, %<m>d misses, %<st>d stale, %<j>d rejected, " \
                "%<wr>d writes, %<er>d errors; local hits %<lh>d",
                h: sum.call(:shared_hits), w: sum.call(:shared_waits), m: sum.call(:shared_misses),
                st: sum.call(:shared_stale), j: sum.call(:shared_rejected), wr: sum.call(:shared_writes),
                er: sum.call(:shared_errors), lh: sum.call(:hits))
  else
    puts format("  local hits %<h>d, misses %<m>d", h: sum.call(:hits), m: sum.call(:misses))
  end
end
emulator.stop
redis.stop
