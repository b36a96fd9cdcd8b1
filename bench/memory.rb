# frozen_string_literal: true

# Memory: RSS growth per cached URL, and RSS while 1,000,000 distinct
# requests pass through a signer with the default bound (max_entries 20,000).
#
#   rake compile && ruby -w bench/memory.rb          (several minutes: one RSA signature per
#                                                     request; MEMORY_REQUESTS=200000 for less,
#                                                     BENCH_SMOKE=1 for a quick run)
#
# A local key signer (no network); two Ruby threads sign at once, since a
# miss releases the GVL. RSS is VmRSS from /proc/self/status. Each request
# is a distinct GitLab download URL (V4, response-content-disposition).

require_relative "support"

PER_ENTRY = Bench.size(100_000, 2_000)
REQUESTS = Integer(ENV.fetch("MEMORY_REQUESTS", Bench.size(1_000_000, 5_000).to_s), 10)
THREADS = 2

def request(i)
  { bucket: "gitlab-uploads", object: "uploads/#{i}/file-#{i}.png", expires_in: 600,
    query: { "response-content-disposition" => "inline; filename=\"file-#{i}.png\"" } }
end

# Signs requests from..to-1 on THREADS threads.
def sign_range(signer, from, to)
  Array.new(THREADS) do |t|
    Thread.new { (from + t).step(to - 1, THREADS) { |i| signer.signed_url(**request(i)) } }
  end.each(&:join)
end

def settle
  GC.start
  Bench.rss_kib
end

# Each measurement runs in a fresh child process, so neither inherits the
# other's heap (a freed cache's memory stays in the allocator's pools).
def measure
  pid = fork do
    # Warm up what allocates once (the key, Ruby's and the allocator's pools).
    sign_range(Bench.key_signer, 0, 2_000)
    yield
  end
  Process.wait(pid)
  abort "measurement failed" unless $?.success?
end

measure do
  Bench.title("RSS per cached URL (#{PER_ENTRY} entries kept, max_entries #{PER_ENTRY})")
  big = Bench.key_signer(cache: { max_entries: PER_ENTRY })
  before = settle
  sign_range(big, 0, PER_ENTRY)
  after = settle
  entries = big.stats[:entries]
  Bench.row("RSS before / after", format("%d / %d KiB", before, after))
  Bench.row("entries", entries)
  Bench.row("growth per entry", format("%.0f bytes", (after - before) * 1024.0 / entries))
end

measure do
  Bench.title("#{REQUESTS} distinct requests, default bound " \
              "(max_entries #{GitlabGcsSigner::Signer::CACHE_DEFAULTS[:max_entries]})")
  signer = Bench.key_signer
  start_rss = settle
  Bench.row("RSS at start", format("%d KiB", start_rss))
  started = Bench.monotonic
  done = 0
  [REQUESTS / 10, REQUESTS / 4, REQUESTS / 2, REQUESTS].uniq.each do |upto|
    sign_range(signer, done, upto)
    done = upto
    stats = signer.stats
    rss = settle
    Bench.row("after #{upto} requests", format("RSS %7d KiB (+%6d)  entries %6d  evictions %8d", rss, rss - start_rss,
                                              stats[:entries], stats[:evictions]))
  end
  seconds = Bench.monotonic - started
  Bench.row("time", format("%.1f s (%.0f signatures/s on %d threads)", seconds, REQUESTS / seconds, THREADS))
end
