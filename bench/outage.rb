# frozen_string_literal: true

# Downloads through an IAM outage (stale-if-error) and hot objects off the
# request path (refresh-ahead), on the GitLab-like trace of bench/trace.rb.
#
#   rake compile && ruby -w bench/outage.rb      (about 8 minutes on 2 busy cores;
#                                                  BENCH_SMOKE=1 for a few seconds)
#
# Part 1, outage. The hour of simulated traffic (ManualClock) is replayed against its own emulator
# per run; for 5 simulated minutes in the middle the emulator's signBlob answers every call with
# 503 (and, in separate runs, 429). During the outage the requests of each simulated second are
# made concurrently (one thread each, as Puma threads would), with `timeout: 0.5` so failing calls
# do not make the run last hours. Each URL served during the outage is then checked by the
# emulator's GCS verifier at the simulated time it was served, and its remaining life is measured.
# "Hot set": objects asked for at least once a minute on average over the trace; "top 10%": the
# 1,000 most popular of the 10,000 download objects (Zipf ranks 1-1000).
# fog-google signs every URL with signBlob, so it answers 0% of the requests during the outage.
#
# Part 2, refresh-ahead. 20 simulated minutes warm the cache (signBlob latency 0), then 5
# simulated minutes are replayed with the emulator's signBlob latency at 60 ms, paced at 10x real
# time, by two signers at once (refresh-ahead on and off, each with its own emulator). For each:
# the share of requests that waited for a signBlob call (a miss), p50/p99 call latency, and the
# signBlob calls made. The quota guard is scaled by the pace (60,000 a minute at 10x is the
# default 6,000 a minute of simulated time), so refresh-ahead's share of it is too.

require_relative "support"
require_relative "trace"
require "gitlab_gcs_signer/http_route"
require "set"

module OutageBench
  DURATION = Trace::DURATION
  OUTAGE = Bench.size(300, 20)
  OUTAGE_START = (DURATION - OUTAGE) / 2
  TIMEOUT = 0.5
  BUCKET = "gitlab-uploads"
  WARM = Bench.size(1200, 20)
  MEASURE = Bench.size(300, 10)
  PACE = 10.0
  LATENCY_MS = 60

  module_function

  def sim_sec(event)
    event.ms / 1000
  end

  # Objects asked for at least once a minute on average.
  def hot_set(events)
    downloads = events.select { |e| e.kind == :download }
    downloads.group_by(&:object).select { |_, list| list.size >= DURATION / 60.0 }.keys.to_set
  end

  def signer_on(emu, clock, **options)
    signer = GitlabGcsSigner::Testing.signer(metadata_host: emu.host, iam_endpoint: emu.url, clock: clock, **options)
    signer.email
    signer
  end

  # One outage run; returns a Hash of figures.
  def outage_run(events, fault, stale)
    emu = GitlabGcsSigner::Emulator::Process.start
    clock = GitlabGcsSigner::Testing::ManualClock.new(Trace::EPOCH)
    signer = signer_on(emu, clock, timeout: TIMEOUT, max_sign_blob_per_minute: 1_000_000,
                                   max_sign_blob_in_flight: 10_000, stale_if_error: stale)
    before = events.take_while { |e| sim_sec(e) < OUTAGE_START }
    during = events.drop(before.size).take_while { |e| sim_sec(e) < OUTAGE_START + OUTAGE }
    after = events.drop(before.size + during.size)
    before.each do |event|
      clock.set(Trace::EPOCH + (event.ms / 1000.0))
      signer.signed_url(**event.arguments)
    end
    emu.configure("iam" => fault)
    calls_before = signer.stats[:sign_blob_calls]
    started = Bench.monotonic
    served = []
    during.group_by { |e| sim_sec(e) }.each do |sec, batch|
      clock.set(Trace::EPOCH + sec)
      batch.map do |event|
        Thread.new do
          url = begin
            signer.signed_url(**event.arguments)
          rescue GitlabGcsSigner::Error
            nil
          end
          [event, url, sec]
        end
      end.each { |t| served << t.value }
    end
    seconds = Bench.monotonic - started
    calls = signer.stats[:sign_blob_calls] - calls_before
    stats = signer.stats
    emu.configure("iam" => fault.transform_values { nil })
    failed_after = after.count do |event|
      clock.set(Trace::EPOCH + (event.ms / 1000.0))
      signer.signed_url(**event.arguments)
      false
    rescue GitlabGcsSigner::Error
      true
    end
    verified, min_life = verify(emu, served)
    emu.stop
    { served: served, verified: verified, min_life: min_life, calls: calls, seconds: seconds,
      stale_served: stats[:stale_served], failed_after: failed_after }
  end

  # [set of [event, sec] the GCS verifier accepted, least remaining life of a served download URL]
  def verify(emu, served)
    answered = served.select { |event, url, _| url && event.kind == :download }
    answered.map { |event, _, _| event.object }.uniq.each { |o| emu.client.put_object(BUCKET, o, "x") }
    ok = Set.new
    lives = []
    answered.group_by(&:last).each do |sec, list|
      emu.configure("now_override" => Trace::EPOCH + sec)
      list.each do |event, url, _|
        lives << (Integer(url[/[?&]Expires=(\d+)/, 1]) - (Trace::EPOCH + sec))
        code = GitlabGcsSigner::HttpRoute.request(url, emu.port, method: "GET").code
        ok << event if code == "200"
      end
    end
    emu.configure("now_override" => nil)
    [ok, lives.min]
  end

  def pct(part, whole)
    whole.zero? ? "  n/a" : format("%5.1f%%", 100.0 * part / whole)
  end

  # One refresh-ahead run over [0, WARM + MEASURE); returns figures for the measured part.
  def refresh_run(events, refresh, hot)
    emu = GitlabGcsSigner::Emulator::Process.start
    clock = GitlabGcsSigner::Testing::ManualClock.new(Trace::EPOCH)
    signer = signer_on(emu, clock, max_sign_blob_per_minute: (6000 * PACE).to_i, refresh_ahead: refresh)
    warm = events.take_while { |e| sim_sec(e) < WARM }
    measured = events.drop(warm.size).take_while { |e| sim_sec(e) < WARM + MEASURE }
    warm.each do |event|
      clock.set(Trace::EPOCH + (event.ms / 1000.0))
      signer.signed_url(**event.arguments)
    end
    sleep 0.2 # background refreshes of the warm-up land
    emu.configure("iam" => { "latency_ms" => LATENCY_MS })
    calls_before = signer.stats[:sign_blob_calls]
    start_ms = measured.first.ms
    started = Bench.monotonic
    rows = measured.map do |event|
      wait = started + ((event.ms - start_ms) / 1000.0 / PACE) - Bench.monotonic
      sleep(wait) if wait.positive?
      clock.set(Trace::EPOCH + (event.ms / 1000.0))
      misses = signer.stats[:misses]
      t = Bench.monotonic_ns
      signer.signed_url(**event.arguments)
      [event, Bench.monotonic_ns - t, signer.stats[:misses] > misses]
    end
    sleep 0.2
    stats = signer.stats
    emu.stop
    { rows: rows, calls: stats[:sign_blob_calls] - calls_before, refreshes: stats[:refreshes],
      skipped: stats[:refresh_skipped], hot: hot }
  end

  def latency_line(label, rows)
    waited = rows.count(&:last)
    ns = rows.map { |r| r[1] }.sort
    format("  %-40s %7d %8s %10.2f ms %10.2f ms", label, rows.size, pct(waited, rows.size),
           Bench.percentile(ns, 50) / 1e6, Bench.percentile(ns, 99) / 1e6)
  end
end

events = Trace.generate
hot = OutageBench.hot_set(events)
Bench.title("Outage: #{events.size} URL requests over #{Trace::DURATION / 60} simulated minutes, signBlob failing " \
            "from minute #{OutageBench::OUTAGE_START / 60.0} for #{OutageBench::OUTAGE} s")
Bench.row("hot set (objects asked >= once a minute)", "#{hot.size} objects")

runs = [
  ["503", { "rate_503" => 1.0 }, true], ["503", { "rate_503" => 1.0 }, false],
  ["429", { "rate_429" => 1.0 }, true], ["429", { "rate_429" => 1.0 }, false]
]
results = runs.map do |name, fault, stale|
  Thread.new { [name, stale, OutageBench.outage_run(events, fault, stale)] }
end.map(&:value)

puts
puts format("  %-26s %9s %9s %9s %9s %9s %9s %11s %8s %7s", "fault, stale_if_error", "downloads", "answered",
            "verified", "hot set", "top 10%", "CI", "min life", "signBlob", "wall")
puts format("  %-26s %9s %9s %9s %9s %9s %9s %11s %8s %7s", "fog-google (any fault)", "", "0.0%", "0.0%", "0.0%",
            "0.0%", "0.0%", "-", "", "")
failed = false
results.each do |name, stale, r|
  downloads = r[:served].select { |e, _, _| e.kind == :download }
  answered = downloads.count { |_, url, _| url }
  hot_rows = downloads.select { |e, _, _| hot.include?(e.object) }
  top_rows = downloads.select { |e, _, _| Integer(e.object[%r{\Auploads/(\d+)/}, 1]) < 1000 }
  ci = r[:served].select { |e, _, _| e.kind == :ci }
  puts format("  %-26s %9d %9s %9s %9s %9s %9s %11s %8d %6.0fs", "#{name}, #{stale ? 'on' : 'off'}", downloads.size,
              OutageBench.pct(answered, downloads.size), OutageBench.pct(r[:verified].size, downloads.size),
              OutageBench.pct(hot_rows.count { |e, _, _| r[:verified].include?(e) }, hot_rows.size),
              OutageBench.pct(top_rows.count { |e, _, _| r[:verified].include?(e) }, top_rows.size),
              OutageBench.pct(ci.count { |_, url, _| url }, ci.size), r[:min_life] ? "#{r[:min_life]} s" : "-",
              r[:calls], r[:seconds])
  failed ||= r[:verified].size != answered
  failed ||= stale && r[:min_life] && r[:min_life] < 60
  failed ||= r[:failed_after].positive?
end
puts
puts "  answered: a URL returned; verified: accepted by the emulator's GCS verifier at the simulated time;"
puts "  min life: least remaining life of a served download URL (the minimum is 60 s for 600 s links);"
puts "  signBlob: HTTP calls during the outage (retries included). After the outage every request was signed."

Bench.title("Refresh-ahead: #{OutageBench::MEASURE} simulated s after #{OutageBench::WARM} s of warm-up, " \
            "signBlob latency #{OutageBench::LATENCY_MS} ms, paced at #{OutageBench::PACE}x")
settings = { "off" => false, "on (lead 0.25)" => true, "on (lead 0.5)" => { lead: 0.5 } }
runs = settings.transform_values { |r| Thread.new { OutageBench.refresh_run(events, r, hot) } }.transform_values(&:value)
puts format("  %-40s %7s %8s %13s %13s", "refresh_ahead", "requests", "waited", "p50", "p99")
runs.each do |label, r|
  downloads = r[:rows].select { |e, _, _| e.kind == :download }
  puts OutageBench.latency_line("#{label}: all requests", r[:rows])
  puts OutageBench.latency_line("#{label}: hot-set downloads", downloads.select { |e, _, _| hot.include?(e.object) })
  puts OutageBench.latency_line("#{label}: top-10 downloads",
                                downloads.select { |e, _, _| Integer(e.object[%r{\Auploads/(\d+)/}, 1]) < 10 })
end
off = runs.fetch("off")
n = off[:rows].size
puts
runs.each do |label, r|
  next if r.equal?(off)

  puts format("  signBlob calls, %-15s %5d vs %d off (%+d, %+.1f per 1,000 requests); %d background refreshes, " \
              "%d skipped for the quota share", "#{label}:", r[:calls], off[:calls], r[:calls] - off[:calls],
              (r[:calls] - off[:calls]) * 1000.0 / n, r[:refreshes], r[:skipped])
end
puts "  top-10: the 10 most popular objects (each asked 7 to 67 times a minute)."
puts "  waited: the call made or joined a signBlob call (a miss). p50 of all requests sits where hits end and"
puts "  misses begin, so it jumps between microseconds and the signBlob latency."
if failed
  warn "FAIL: a served URL was rejected, had less than the minimum life, or a request failed after the outage"
  exit 1
end
