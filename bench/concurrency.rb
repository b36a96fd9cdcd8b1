# frozen_string_literal: true

# Misses under concurrency: 64 Ruby threads signing distinct URLs (every call
# a miss) through signBlob at the emulator with 50 ms latency, against the
# ideal wall time calls / concurrency x latency, where concurrency is
# min(threads, max_sign_blob_in_flight).
#
#   rake compile && ruby -w bench/concurrency.rb     (about 20 s; BENCH_SMOKE=1 for a quick run)
#
# The GVL is released while a call waits, so the threads' calls overlap; the
# quota guard's in-flight limit (max_sign_blob_in_flight, default 64) caps
# how many are outstanding, and max_sign_blob_per_minute (default 6000,
# bursts of 600) would throttle a larger run: here each run stays under the
# burst, and the last row shows the default guard on a run above it.

require_relative "support"

THREADS = 64
LATENCY_MS = 50
PER_THREAD = Bench.size(8, 2)

def run(label, calls_per_thread: PER_THREAD, **options)
  signer = Bench.keyless_signer(**options)
  signer.email
  signer.signed_url(bucket: "b", object: "warm-up", expires_in: 600) # token fetched, connection open
  Bench.emulator.reset!
  Bench.emulator.configure("iam" => { "latency_ms" => LATENCY_MS })
  gate = Queue.new
  threads = Array.new(THREADS) do |t|
    Thread.new do
      gate.pop
      calls_per_thread.times { |i| signer.signed_url(bucket: "b", object: "t#{t}/#{label}/#{i}", expires_in: 600) }
    end
  end
  started = Bench.monotonic
  THREADS.times { gate << :go }
  threads.each(&:join)
  wall = Bench.monotonic - started
  calls = THREADS * calls_per_thread
  concurrency = [THREADS, options.fetch(:max_sign_blob_in_flight, 64)].min
  ideal = calls.to_f / concurrency * LATENCY_MS / 1000
  em = Bench.emulator.stats
  puts format("  %-34s %6d %8.2f s %8.2f s %6.2fx %7d %8d", label, calls, wall, ideal, wall / ideal,
              em["sign_blob_max_in_flight"], signer.stats[:throttled])
end

Bench.title("#{THREADS} threads, distinct URLs, signBlob latency #{LATENCY_MS} ms")
puts format("  %-34s %6s %10s %10s %7s %7s %8s", "setting", "calls", "wall", "ideal", "ratio", "in-flt", "throttled")
run("defaults (64 in flight)")
run("max_sign_blob_in_flight: 16", max_sign_blob_in_flight: 16)
run("max_sign_blob_in_flight: 8", max_sign_blob_in_flight: 8)
run("max_sign_blob_in_flight: 128", max_sign_blob_in_flight: 128)
run("defaults, #{THREADS * Bench.size(16, 3)} calls (> 600 burst)", calls_per_thread: Bench.size(16, 3))
puts
puts "  ideal = calls / min(threads, max_sign_blob_in_flight) x latency; in-flt = most signBlob calls the"
puts "  emulator saw at once; throttled = calls the per-minute guard delayed (default 6000/min, burst 600)."
