#!/usr/bin/env ruby
# frozen_string_literal: true

# Puma- and Sidekiq-shaped load on one keyless signer, against the emulator
# (metadata server + IAM signBlob with 50 ms latency + a GCS endpoint that
# verifies every signature with the service account's public key).
#
#   ruby bench/load.rb                       # CI size: 8 s Puma phase, 4 s Sidekiq phase
#   GCS_SIGNER_LOAD_SECONDS=60 ruby bench/load.rb   # the full run (60 s + 30 s)
#   ruby bench/load.rb --help
#
# What it does, as GitLab runs it (field notes s.6, s.7):
# 1. The parent loads the gem, builds one signer (metadata_host/iam_endpoint at the
#    emulator) and signs the hot URLs once, as a preloading Puma master would at boot.
# 2. It forks 4 workers of 16 threads. Each thread serves "requests": 1-8 URLs
#    (95% hot: 200 objects everyone downloads; 5% cold: a new object each time,
#    V4 GET, V4 PUT with a content type, or V2 GET in fog-google's shape with a
#    response-content-disposition), then 2 ms of "rendering" that releases the GVL.
# 3. Then one Sidekiq-like process of 25 threads: imports (each object signed once)
#    and direct uploads (GET + PUT + DELETE, 4 h 15 min expiry).
# 4. Each process then sends every distinct URL it got to the emulator's GCS
#    endpoint (above --verify-max distinct URLs per process: all hot URLs plus a
#    random sample of the cold ones, and the report says so).
#
# Zero errors and zero hangs are required: every call is watched (a call that
# outlives the signer's timeout by 5 s is a hang), each process is joined with a
# deadline and killed past it. The report gives URLs/s for hits and misses,
# p50/p99 latency (log-bucket histogram, 2% resolution), token fetches and
# signBlob calls, from both the signer's and the emulator's counters.

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
$LOAD_PATH.unshift File.expand_path("../testing/lib", __dir__) # the emulator (test support)
require "gitlab_gcs_signer"
require "gitlab_gcs_signer/emulator"
require "etc"
require "json"
require "net/http"
require "optparse"
require "set"
require "uri"

module GitlabGcsSigner
  module Bench
    # Latencies in log-spaced buckets: constant memory however long the run.
    class Histogram
      STEP = Math.log(1.02)

      attr_reader :count

      def initialize(counts = {})
        @counts = Hash.new(0)
        counts.each { |k, v| @counts[Integer(k)] += v }
        @count = @counts.values.sum
      end

      def add(seconds)
        ns = seconds * 1e9
        @counts[ns <= 1 ? 0 : (Math.log(ns) / STEP).floor] += 1
        @count += 1
      end

      def merge!(other)
        other.to_h.each { |k, v| @counts[Integer(k)] += v }
        @count = @counts.values.sum
        self
      end

      # Seconds (bucket midpoint), nil when empty.
      def percentile(pct)
        return nil if @count.zero?

        rank = (pct / 100.0 * @count).ceil.clamp(1, @count)
        seen = 0
        @counts.keys.sort.each do |k|
          seen += @counts[k]
          return Math.exp((k + 0.5) * STEP) / 1e9 if seen >= rank
        end
      end

      def to_h
        @counts.dup
      end
    end

    # One process's share of the load (a Puma worker or the Sidekiq process).
    class Worker
      HOT_OBJECTS = 200
      BUCKET = "load-bucket"

      def initialize(signer:, role:, threads:, seconds:, hot_share:, think:, seed:, timeout:, verify:)
        @signer = signer
        @role = role
        @threads = threads
        @seconds = seconds
        @hot_share = hot_share
        @think = think
        @seed = seed
        @timeout = timeout
        @verify = verify
        @lock = Mutex.new
        @errors = []
        @urls = {} # distinct URL => [method, hot?]
      end

      def run
        base = @signer.stats
        started = now
        per_thread = run_threads
        elapsed = now - started
        stats = @signer.stats.to_h { |k, v| [k, v - base.fetch(k, 0)] }
        hot = Histogram.new
        cold = Histogram.new
        per_thread.each do |h|
          hot.merge!(h[:hot])
          cold.merge!(h[:cold])
        end
        verified = verify_urls
        { "role" => @role, "pid" => ::Process.pid, "threads" => @threads, "seconds" => elapsed,
          "hot" => hot.to_h, "cold" => cold.to_h, "errors" => @errors.first(20), "error_count" => @errors.size,
          "hangs" => per_thread.count { |h| h[:hung] }, "stats" => stats, "distinct_urls" => @urls.size }.merge(verified)
      end

      private

      def now
        ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
      end

      # Threads serve "requests" until the time is up; a watchdog notes any
      # call that runs past the signer's own deadline.
      def run_threads
        stop_at = now + @seconds
        in_call = Array.new(@threads)
        results = Array.new(@threads) { { hot: Histogram.new, cold: Histogram.new, hung: false } }
        threads = Array.new(@threads) do |t|
          Thread.new { serve(t, stop_at, in_call, results[t]) }
        end
        watchdog = Thread.new do
          until threads.none?(&:alive?)
            in_call.each_with_index do |t0, i|
              results[i][:hung] = true if t0 && now - t0 > @timeout + 5
            end
            sleep 0.25
          end
        end
        threads.each_with_index do |th, i|
          next if th.join([stop_at - now, 0].max + @timeout + 10)

          results[i][:hung] = true
          th.kill
        end
        watchdog.kill
        results
      end

      def serve(index, stop_at, in_call, result)
        rng = Random.new(@seed * 1000 + index)
        serial = 0
        while now < stop_at
          rng.rand(1..8).times do
            serial += 1
            hot = rng.rand < @hot_share
            request = hot ? hot_request(rng) : cold_request(rng, index, serial)
            t0 = in_call[index] = now
            begin
              url = @signer.signed_url(**request)
              (hot ? result[:hot] : result[:cold]).add(now - t0)
              remember(url, request.fetch(:method, "GET"), hot)
            rescue StandardError => e
              @lock.synchronize { @errors << "#{e.class}: #{e.message}" }
            ensure
              in_call[index] = nil
            end
          end
          sleep @think if @think.positive?
        end
      end

      def remember(url, method, hot)
        @lock.synchronize { @urls[url] ||= [method, hot] }
      end

      # Downloads everyone asks for: mostly V4, some in fog-google's V2 shape.
      def hot_request(rng)
        object = "hot/#{rng.rand(HOT_OBJECTS)}.png"
        if rng.rand < 0.8
          { bucket: BUCKET, object: object, expires_in: 600 }
        else
          { version: :v2, bucket: BUCKET, object: object, expires_in: 600,
            query: { "response-content-disposition" => "inline; filename=\"#{File.basename(object)}\"" } }
        end
      end

      # An object nobody asked for before: an import (one URL) or a direct
      # upload (GET, PUT and DELETE, 4 h 15 min, field notes s.6).
      def cold_request(rng, index, serial)
        object = "cold/#{@role}/#{::Process.pid}/#{index}/#{serial} #{rng.rand(1000)}+ü.bin"
        case rng.rand(10)
        when 0..5 then { bucket: BUCKET, object: object, expires_in: 600 }
        when 6, 7 then { method: "PUT", bucket: BUCKET, object: object, expires_in: 15_300,
                         headers: { "Content-Type" => "application/octet-stream" } }
        when 8 then { method: "DELETE", bucket: BUCKET, object: object, expires_in: 15_300 }
        else { version: :v2, bucket: BUCKET, object: object, expires_in: 600,
               query: { "response-content-disposition" => "attachment" } }
        end
      end

      # Every distinct URL (or all hot ones and a random sample of the cold
      # ones above the limit) goes to the emulator's GCS endpoint, which
      # verifies the signature with the public key. 2xx and 404 (a signed
      # GET of an object nobody uploaded) pass verification; 403 does not.
      def verify_urls
        all = @urls.to_a
        hot, cold = all.partition { |_, (_, is_hot)| is_hot }
        room = [@verify[:max] - hot.size, 0].max
        sample = cold.size > room ? cold.sample(room, random: Random.new(@seed)) : cold
        todo = hot + sample
        queue = Queue.new
        todo.each { |pair| queue << pair }
        queue.close
        failures = []
        lock = Mutex.new
        Array.new(@verify[:threads]) do
          Thread.new do
            http = Net::HTTP.start("127.0.0.1", @verify[:port], read_timeout: 30)
            while (pair = queue.pop)
              url, (method, _) = pair
              status = send_signed(http, url, method)
              lock.synchronize { failures << "#{status} #{method} #{url[0, 100]}" } unless [200, 204, 404].include?(status)
            end
          ensure
            http&.finish
          end
        end.each(&:join)
        { "verified" => todo.size, "verify_failures" => failures.size, "verify_failure_samples" => failures.first(5),
          "verify_sampled" => cold.size > room }
      end

      def send_signed(http, url, method)
        uri = URI.parse(url)
        host = uri.port == uri.default_port ? uri.host : "#{uri.host}:#{uri.port}"
        headers = { "Host" => host }
        body = nil
        if method == "PUT"
          body = "x"
          headers["Content-Type"] = "application/octet-stream"
        end
        req = Net::HTTPGenericRequest.new(method, !body.nil?, method != "HEAD", uri.request_uri, headers)
        req.body = body if body
        http.request(req).code.to_i
      end
    end

    # Runs the phases and builds the report.
    class Load
      DEFAULTS = {
        seconds: Float(ENV.fetch("GCS_SIGNER_LOAD_SECONDS", 8)), sidekiq_seconds: nil,
        workers: 4, threads: 16, sidekiq_threads: 25, hot_share: 0.95, think: 0.002,
        latency_ms: 50, timeout: 10.0, verify_max: 20_000, verify_threads: 8, json: false
      }.freeze

      def self.parse(argv)
        opts = DEFAULTS.dup
        OptionParser.new do |o|
          o.banner = "Usage: ruby bench/load.rb [options]  (GCS_SIGNER_LOAD_SECONDS sets --seconds)"
          o.on("--seconds N", Float, "Puma phase length (default #{opts[:seconds]})") { |v| opts[:seconds] = v }
          o.on("--sidekiq-seconds N", Float, "Sidekiq phase length (default: half of --seconds)") { |v| opts[:sidekiq_seconds] = v }
          o.on("--workers N", Integer, "Puma workers (default 4)") { |v| opts[:workers] = v }
          o.on("--threads N", Integer, "threads per Puma worker (default 16)") { |v| opts[:threads] = v }
          o.on("--sidekiq-threads N", Integer, "Sidekiq threads (default 25)") { |v| opts[:sidekiq_threads] = v }
          o.on("--hot-share F", Float, "share of hot URLs in the Puma phase (default 0.95)") { |v| opts[:hot_share] = v }
          o.on("--think S", Float, "seconds of GVL-free 'rendering' per request (default 0.002)") { |v| opts[:think] = v }
          o.on("--latency-ms N", Integer, "emulated signBlob latency (default 50)") { |v| opts[:latency_ms] = v }
          o.on("--verify-max N", Integer, "verify at most N distinct URLs per process (default 20000)") { |v| opts[:verify_max] = v }
          o.on("--json", "print the result as JSON after the report") { opts[:json] = true }
        end.parse!(argv)
        opts[:sidekiq_seconds] ||= opts[:seconds] / 2
        opts
      end

      def initialize(opts)
        @opts = opts
      end

      def run
        emulator = Emulator::Process.start(config: { "iam" => { "latency_ms" => @opts[:latency_ms] } })
        Worker::HOT_OBJECTS.times { |i| emulator.client.put_object(Worker::BUCKET, "hot/#{i}.png", "png #{i}") }
        signer = Signer.new(metadata_host: emulator.host, iam_endpoint: emulator.url, timeout: @opts[:timeout],
                            # The project's whole quota: the default (a tenth of it) would
                            # throttle this synthetic miss rate, which is the guard working.
                            max_sign_blob_per_minute: 60_000)
        boot = boot(signer)
        puma = phase(signer, emulator, "puma", @opts[:workers], @opts[:threads], @opts[:seconds], @opts[:hot_share])
        sidekiq = phase(signer, emulator, "sidekiq", 1, @opts[:sidekiq_threads], @opts[:sidekiq_seconds], 0.5)
        final = emulator.stats
        result = { "options" => @opts, "boot" => boot, "phases" => [puma, sidekiq], "emulator" => final.slice(
          "tokens_issued", "token_requests", "email_requests", "sign_blob_calls", "sign_blob_ok", "sign_blob_errors",
          "sign_blob_max_in_flight", "verifications_passed", "verifications_failed", "failure_reasons"
        ) }
        result["ok"] = ok?(result)
        result
      ensure
        emulator&.stop
      end

      private

      # The preloading master: one keyless URL per hot object, so the token,
      # the email and the hot URLs are there before the fork.
      def boot(signer)
        t0 = now
        queue = Queue.new
        Worker::HOT_OBJECTS.times { |i| queue << i }
        queue.close
        Array.new(16) do
          Thread.new do
            while (i = queue.pop)
              signer.signed_url(bucket: Worker::BUCKET, object: "hot/#{i}.png", expires_in: 600)
            end
          end
        end.each(&:join)
        { "seconds" => now - t0, "stats" => signer.stats.transform_keys(&:to_s) }
      end

      def phase(signer, emulator, role, processes, threads, seconds, hot_share)
        before = emulator.stats
        children = Array.new(processes) do |n|
          reader, writer = IO.pipe
          pid = fork do
            reader.close
            worker = Worker.new(signer: signer, role: role, threads: threads, seconds: seconds, hot_share: hot_share,
                                think: @opts[:think], seed: n + 1, timeout: @opts[:timeout],
                                verify: { max: @opts[:verify_max], threads: @opts[:verify_threads], port: emulator.port })
            writer.write(JSON.generate(worker.run))
            writer.close
            exit!(0)
          end
          writer.close
          [pid, reader]
        end
        # Each process's own watchdog ends its threads; this one ends a process
        # that is stuck anyway (verification included).
        deadline = now + seconds + @opts[:timeout] + 120
        results = children.map { |pid, reader| collect(pid, reader, deadline) }
        after = emulator.stats
        summarize(role, results, before, after)
      end

      def collect(pid, reader, deadline)
        data = +""
        while (left = deadline - now).positive?
          break unless reader.wait_readable(left)

          chunk = reader.read_nonblock(1 << 16, exception: false)
          break if chunk.nil?

          data << chunk if chunk.is_a?(String)
        end
        status = wait_or_kill(pid, deadline)
        return { "pid" => pid, "hung_process" => true, "exit" => status.inspect } if data.empty? || !status&.success?

        JSON.parse(data)
      ensure
        reader.close
      end

      def wait_or_kill(pid, deadline)
        loop do
          done = ::Process.wait2(pid, ::Process::WNOHANG)
          return done.last if done
          break if now > deadline

          sleep 0.05
        end
        ::Process.kill("KILL", pid)
        ::Process.wait2(pid).last
        nil
      end

      def summarize(role, results, before, after)
        hot = Histogram.new
        cold = Histogram.new
        stats = Hash.new(0)
        results.each do |r|
          hot.merge!(r.fetch("hot", {}))
          cold.merge!(r.fetch("cold", {}))
          r.fetch("stats", {}).each { |k, v| stats[k] += v unless k == "entries" }
        end
        seconds = results.map { |r| r.fetch("seconds", 0) }.max.to_f
        { "role" => role, "processes" => results.size, "threads" => results.map { |r| r["threads"] }.compact.sum,
          "seconds" => seconds,
          "urls" => hot.count + cold.count, "hot_urls" => hot.count, "cold_urls" => cold.count,
          "urls_per_s" => rate(hot.count + cold.count, seconds),
          "hits" => stats["hits"], "misses" => stats["misses"], "coalesced" => stats["coalesced"],
          "hits_per_s" => rate(stats["hits"], seconds), "misses_per_s" => rate(stats["misses"], seconds),
          "hot_p50_ms" => ms(hot.percentile(50)), "hot_p99_ms" => ms(hot.percentile(99)),
          "cold_p50_ms" => ms(cold.percentile(50)), "cold_p99_ms" => ms(cold.percentile(99)),
          "errors" => results.sum { |r| r.fetch("error_count", 0) },
          "error_samples" => results.flat_map { |r| r.fetch("errors", []) }.first(5),
          "hangs" => results.sum { |r| r.fetch("hangs", 0) } + results.count { |r| r["hung_process"] },
          "token_fetches" => stats["token_fetches"], "sign_blob_calls" => stats["sign_blob_calls"],
          "sign_blob_retries" => stats["sign_blob_retries"], "throttled" => stats["throttled"],
          "distinct_urls" => results.sum { |r| r.fetch("distinct_urls", 0) },
          "verified" => results.sum { |r| r.fetch("verified", 0) },
          "verify_failures" => results.sum { |r| r.fetch("verify_failures", 0) },
          "verify_failure_samples" => results.flat_map { |r| r.fetch("verify_failure_samples", []) }.first(5),
          "verify_sampled" => results.any? { |r| r["verify_sampled"] },
          "emulator_token_requests" => after["token_requests"] - before["token_requests"],
          "emulator_sign_blob_calls" => after["sign_blob_calls"] - before["sign_blob_calls"],
          "emulator_verifications_failed" => after["verifications_failed"] - before["verifications_failed"] }
      end

      def ok?(result)
        result["phases"].all? do |p|
          p["errors"].zero? && p["hangs"].zero? && p["verify_failures"].zero? && p["emulator_verifications_failed"].zero? &&
            p["urls"].positive?
        end
      end

      def rate(count, seconds)
        seconds.positive? ? (count / seconds).round(1) : 0.0
      end

      def ms(seconds)
        seconds && (seconds * 1000).round(3)
      end

      def now
        ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
      end
    end

    module_function

    def report(result)
      o = result["options"]
      lines = []
      lines << "gitlab-gcs-signer load: #{o[:workers] || o['workers']} Puma workers x #{o[:threads] || o['threads']} threads, " \
               "then 1 Sidekiq process x #{o[:sidekiq_threads] || o['sidekiq_threads']} threads; signBlob latency " \
               "#{o[:latency_ms] || o['latency_ms']} ms (emulator); #{RUBY_DESCRIPTION.split(' [').first}, #{Etc.nprocessors} CPUs"
      lines << "boot (parent, before fork): #{result['boot']['stats']['sign_blob_calls']} signBlob calls, " \
               "#{result['boot']['stats']['token_fetches']} token fetch(es), #{format('%.2f', result['boot']['seconds'])} s"
      lines << ""
      lines << "| phase | s | URLs/s | hits/s | misses/s | hit p50 / p99 ms | miss p50 / p99 ms | errors | hangs | token fetches | signBlob calls | verified |"
      lines << "|---|---|---|---|---|---|---|---|---|---|---|---|"
      result["phases"].each do |p|
        verified = "#{p['verified']}/#{p['distinct_urls']}#{p['verify_sampled'] ? ' (sample)' : ''}, #{p['verify_failures']} failed"
        lines << "| #{p['role']} (#{p['processes']}x#{p['threads'] / [p['processes'], 1].max}) | #{format('%.1f', p['seconds'])} | " \
                 "#{p['urls_per_s']} | #{p['hits_per_s']} | #{p['misses_per_s']} | #{p['hot_p50_ms']} / #{p['hot_p99_ms']} | " \
                 "#{p['cold_p50_ms']} / #{p['cold_p99_ms']} | #{p['errors']} | #{p['hangs']} | #{p['token_fetches']} | " \
                 "#{p['sign_blob_calls']} | #{verified} |"
      end
      e = result["emulator"]
      lines << ""
      lines << "emulator: #{e['tokens_issued']} token(s) issued, #{e['sign_blob_calls']} signBlob calls " \
               "(#{e['sign_blob_ok']} ok, errors #{e['sign_blob_errors']}), max #{e['sign_blob_max_in_flight']} in flight, " \
               "#{e['verifications_passed']} signatures verified, #{e['verifications_failed']} rejected"
      result["phases"].each do |p|
        lines << "#{p['role']} errors: #{p['error_samples'].inspect}" unless p["error_samples"].empty?
        lines << "#{p['role']} verification failures: #{p['verify_failure_samples'].inspect}" unless p["verify_failure_samples"].empty?
      end
      lines << (result["ok"] ? "OK: zero errors, zero hangs, every checked URL verified" : "FAILED")
      lines.join("\n")
    end
  end
end

if $PROGRAM_NAME == __FILE__
  opts = GitlabGcsSigner::Bench::Load.parse(ARGV)
  result = GitlabGcsSigner::Bench::Load.new(opts).run
  puts GitlabGcsSigner::Bench.report(result)
  puts JSON.generate(result) if opts[:json]
  exit(result["ok"] ? 0 : 1)
end
