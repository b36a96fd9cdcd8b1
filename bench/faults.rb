#!/usr/bin/env ruby
# frozen_string_literal: true

# The fault matrix: every metadata-server and IAM signBlob failure the
# emulator can inject, against a keyless signer, with what the caller gets.
#
#   ruby bench/faults.rb            # prints the matrix (markdown) and exits 1 if a row fails
#   ruby bench/faults.rb --json     # also prints the rows as one JSON line (spec/hardening/faults_spec.rb)
#   ruby bench/faults.rb --only iam # rows whose service or fault matches
#
# Each row runs in a process forked from this one, which never signs, so
# every row starts as a freshly booted Puma worker does: no token, no email,
# nothing cached (the token cache is process-wide, field notes s.3). A row:
#   1. builds a signer (timeout: 1.5 s unless the row says otherwise),
#   2. injects the fault and asks for one URL, timing the call,
#   3. checks the outcome: a URL (verified by the emulator's GCS endpoint) or
#      the documented exception class, within timeout + SLACK,
#   4. clears the fault and asks the same signer for the same URL again until
#      it succeeds: "recovery" says after how long and how many failed calls
#      (a failure cached anywhere would never recover),
#   5. reads the signer's and the emulator's counters.
# SLACK (1 s) covers a loaded 2-core CI machine; the deadline itself is the
# signer's, enforced in Rust.

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
$LOAD_PATH.unshift File.expand_path("../testing/lib", __dir__) # the emulator (test support)
require "gitlab_gcs_signer"
require "gitlab_gcs_signer/emulator"
require "gitlab_gcs_signer/http_route"
require "json"
require "optparse"

module GitlabGcsSigner
  module Bench
    # One fault scenario.
    Fault = Struct.new(:service, :fault, :config, :expect, :timeout, :signer, :prepare, :clear, :note,
                       :expect_text, keyword_init: true) do
      def expect_list
        Array(expect)
      end
    end

    # Runs the fault matrix.
    class Faults
      SLACK = 1.0
      TIMEOUT = 1.5
      EMAIL = "test-iam-credentials@dummy-project-id.iam.gserviceaccount.com"
      BUCKET = "fault-bucket"
      OBJECT = "faults/object.txt"
      # Clearing a fault may leave one request of the old fault in flight:
      # a hung metadata attempt is cut after 5 s (src/credentials/metadata.rs).
      RECOVERY_BUDGET = 12.0

      # The signer knows its email, so only the token request meets the fault.
      TOKEN = { service_account_email: EMAIL }.freeze

      ROWS = [
        # --- metadata server --------------------------------------------------------
        Fault.new(service: "metadata", fault: "cold start 3 s (timeout 10 s)", config: { "metadata" => { "cold_start_ms" => 3000 } },
                  expect: "URL", timeout: 10, signer: TOKEN, clear: :none),
        Fault.new(service: "metadata", fault: "cold start 4 s (timeout 1.5 s)", config: { "metadata" => { "cold_start_ms" => 4000 } },
                  expect: "TimeoutError", signer: TOKEN, clear: { "metadata" => { "cold_start_ms" => 0 } },
                  note: "the token request already sent waits out the cold start"),
        Fault.new(service: "metadata", fault: "429 x3 then OK", config: { "metadata" => { "fail_next" => [429, 429, 429] } },
                  expect: "URL", signer: TOKEN),
        Fault.new(service: "metadata", fault: "429 always", config: { "metadata" => { "rate_429" => 1.0 } },
                  expect: %w[TimeoutError MetadataError], signer: TOKEN, clear: { "metadata" => { "rate_429" => nil } }),
        Fault.new(service: "metadata", fault: "500, 503 then OK", config: { "metadata" => { "fail_next" => [500, 503] } },
                  expect: "URL", signer: TOKEN),
        Fault.new(service: "metadata", fault: "503 always", config: { "metadata" => { "rate_503" => 1.0 } },
                  expect: %w[TimeoutError MetadataError], signer: TOKEN, clear: { "metadata" => { "rate_503" => nil } }),
        Fault.new(service: "metadata", fault: "one hung request (timeout 10 s)", config: { "metadata" => { "fail_next" => ["timeout"], "timeout_ms" => 6000 } },
                  expect: "URL", timeout: 10, signer: TOKEN, note: "cut after the 5 s attempt timeout, then retried"),
        Fault.new(service: "metadata", fault: "hangs always (timeout 1.5 s)", config: { "metadata" => { "timeout_rate" => 1.0, "timeout_ms" => 3000 } },
                  expect: "TimeoutError", signer: TOKEN, clear: { "metadata" => { "timeout_rate" => nil } }),
        Fault.new(service: "metadata", fault: "garbage body (HTML)", config: { "metadata" => { "garbage" => true } },
                  expect: "ProtocolError", signer: TOKEN, clear: { "metadata" => { "garbage" => nil } }),
        Fault.new(service: "metadata", fault: "truncated body", config: { "metadata" => { "truncated" => true } },
                  expect: "ProtocolError", signer: TOKEN, clear: { "metadata" => { "truncated" => nil } }),
        Fault.new(service: "metadata", fault: "no Metadata-Flavor header", config: { "metadata" => { "no_flavor" => true } },
                  expect: "MetadataError", signer: TOKEN, clear: { "metadata" => { "no_flavor" => nil } }),
        Fault.new(service: "metadata", fault: "email lookup: garbage body", config: { "metadata" => { "garbage" => true } },
                  expect: "ProtocolError", signer: {}, clear: { "metadata" => { "garbage" => nil } }),
        Fault.new(service: "metadata", fault: "email lookup: 503 always", config: { "metadata" => { "rate_503" => 1.0 } },
                  expect: %w[TimeoutError MetadataError], signer: {}, clear: { "metadata" => { "rate_503" => nil } }),
        Fault.new(service: "metadata", fault: "token expires early (server clock +1 h)", config: :one_hour_ahead,
                  expect: "URL", signer: TOKEN, prepare: :warm, clear: { "now_override" => nil },
                  note: "IAM answers 401 ACCESS_TOKEN_EXPIRED; one new token, same call"),
        Fault.new(service: "metadata", fault: "token lifetime 3 s, 4 s of signing", config: :short_tokens,
                  expect: "URL", signer: TOKEN, clear: :none,
                  note: "a new token is used for its first 10 s, then refreshed before use; " \
                        "IAM's 401 on the expired one brings a new token in the same call"),
        # --- IAM signBlob ---------------------------------------------------------------
        Fault.new(service: "iam", fault: "429 x2 then OK", config: { "iam" => { "fail_next" => [429, 429] } },
                  expect: "URL", signer: TOKEN),
        Fault.new(service: "iam", fault: "429 storm (always)", config: { "iam" => { "rate_429" => 1.0 } },
                  expect: %w[QuotaError TimeoutError], signer: TOKEN, clear: { "iam" => { "rate_429" => nil } }),
        Fault.new(service: "iam", fault: "500, 503 then OK", config: { "iam" => { "fail_next" => [500, 503] } },
                  expect: "URL", signer: TOKEN),
        Fault.new(service: "iam", fault: "503 always", config: { "iam" => { "rate_503" => 1.0 } },
                  expect: %w[ServiceUnavailableError TimeoutError], signer: TOKEN, clear: { "iam" => { "rate_503" => nil } }),
        Fault.new(service: "iam", fault: "one hung call (timeout 10 s)", config: { "iam" => { "fail_next" => ["timeout"], "timeout_ms" => 6000 } },
                  expect: "URL", timeout: 10, signer: TOKEN, note: "cut after the 5 s attempt timeout, then retried"),
        Fault.new(service: "iam", fault: "hangs always (timeout 1.5 s)", config: { "iam" => { "timeout_rate" => 1.0, "timeout_ms" => 3000 } },
                  expect: "TimeoutError", signer: TOKEN, clear: { "iam" => { "timeout_rate" => nil } }),
        Fault.new(service: "iam", fault: "hang-up after 300 ms, then OK", config: { "iam" => { "fail_next" => ["timeout"], "timeout_ms" => 300 } },
                  expect: "URL", signer: TOKEN),
        Fault.new(service: "iam", fault: "garbage body (HTML, 200)", config: { "iam" => { "garbage" => true } },
                  expect: "ProtocolError", signer: TOKEN, clear: { "iam" => { "garbage" => nil } }),
        Fault.new(service: "iam", fault: "truncated JSON", config: { "iam" => { "truncated" => true } },
                  expect: "ProtocolError", signer: TOKEN, clear: { "iam" => { "truncated" => nil } }),
        Fault.new(service: "iam", fault: "401: token revoked", config: :revoke, expect: "URL", signer: TOKEN, prepare: :warm,
                  note: "one new token, same call"),
        Fault.new(service: "iam", fault: "401 twice (new token refused too)", config: { "iam" => { "fail_next" => [401, 401] } },
                  expect: "AuthenticationError", signer: TOKEN),
        Fault.new(service: "iam", fault: "403 permission denied", config: { "deny_sign_blob" => true },
                  expect: "PermissionDeniedError", signer: TOKEN, clear: { "deny_sign_blob" => false }),
        Fault.new(service: "iam", fault: "403 API disabled", config: { "api_disabled" => true },
                  expect: "ApiDisabledError", signer: TOKEN, clear: { "api_disabled" => false }),
        Fault.new(service: "iam", fault: "slow (500 ms), 64 threads, in-flight bound 8 (timeout 10 s)", config: :pile_up_slow,
                  expect: "URL", timeout: 10, signer: TOKEN.merge(max_sign_blob_in_flight: 8), clear: :none,
                  note: "8 rounds of 8 calls; the emulator never sees more than 8 at once"),
        Fault.new(service: "iam", fault: "slow (1 s), 64 threads, in-flight bound 8 (timeout 1.5 s)", config: :pile_up_stuck,
                  expect: ["QuotaError+URL", "QuotaError+TimeoutError+URL", "TimeoutError+URL"],
                  expect_text: "8 URLs, the rest QuotaError/TimeoutError", signer: TOKEN.merge(max_sign_blob_in_flight: 8), clear: :none,
                  note: "callers beyond the bound give up at their deadline instead of queueing")
      ].freeze

      def self.parse(argv)
        opts = { json: false, only: nil }
        OptionParser.new do |o|
          o.banner = "Usage: ruby bench/faults.rb [--json] [--only WORD]"
          o.on("--json", "also print the rows as one JSON line") { opts[:json] = true }
          o.on("--only WORD", "rows whose service or fault contains WORD") { |w| opts[:only] = w }
        end.parse!(argv)
        opts
      end

      def initialize(only: nil)
        @rows = only ? ROWS.select { |r| "#{r.service} #{r.fault}".include?(only) } : ROWS
      end

      def run
        @emulator = Emulator::Process.start
        @rows.map { |row| in_child(row) }
      ensure
        @emulator&.stop
      end

      private

      def now
        ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
      end

      # A row starts with no signBlob request of an earlier row still held
      # by the emulator (hang faults keep theirs for timeout_ms), so the
      # in-flight maximum it reads is its own.
      def settle
        deadline = now + 15
        sleep 0.1 while @emulator.stats["sign_blob_in_flight"].positive? && now < deadline
      end

      # Forks so that each row starts with no token and no email in memory.
      def in_child(row)
        settle
        @emulator.reset!
        @emulator.client.put_object(BUCKET, OBJECT, "fault matrix")
        reader, writer = IO.pipe
        pid = fork do
          reader.close
          result = begin
            Row.new(row, @emulator).run
          rescue Exception => e # rubocop:disable Lint/RescueException
            { "error" => "#{e.class}: #{e.message.lines.first&.strip} at #{e.backtrace&.first}", "pass" => false }
          end
          writer.write(JSON.generate(result))
          writer.close
          exit!(0)
        end
        writer.close
        data = reader.wait_readable(120) ? reader.read : nil
        ::Process.kill("KILL", pid) unless data
        ::Process.wait(pid)
        base = { "service" => row.service, "fault" => row.fault, "expected" => row.expect_text || row.expect_list.join(" or "),
                 "expected_outcomes" => row.expect_list, "note" => row.note }
        base.merge(data && !data.empty? ? JSON.parse(data) : { "pass" => false, "error" => "row hung (killed after 120 s)" })
      ensure
        reader&.close
      end
    end

    # One scenario, inside its forked child.
    class Row
      PILE_UPS = { pile_up_slow: 500, pile_up_stuck: 1000 }.freeze

      def initialize(row, emulator)
        @row = row
        @emulator = emulator
        @timeout = row.timeout || Faults::TIMEOUT
      end

      def run
        signer = Signer.new(metadata_host: @emulator.host, iam_endpoint: @emulator.url, timeout: @timeout, **@row.signer)
        warm(signer) if @row.prepare == :warm
        inject
        before = signer.stats.transform_keys(&:to_s)
        outcome, elapsed, detail = attempt(signer, @row.config)
        within = elapsed <= @timeout + Faults::SLACK
        max_in_flight = @emulator.stats["sign_blob_max_in_flight"]
        clear
        recovered, recovery_s, failed_calls = recover(signer)
        after = signer.stats.transform_keys(&:to_s)
        pass = @row.expect_list.include?(outcome) && within && recovered
        pass &&= max_in_flight <= 8 if PILE_UPS.key?(@row.config)
        { "observed" => outcome, "elapsed_s" => elapsed.round(2), "deadline_s" => @timeout, "within_deadline" => within,
          "detail" => detail, "recovered" => recovered, "recovery_s" => recovery_s&.round(2), "failed_calls_before_recovery" => failed_calls,
          "sign_blob_calls" => after["sign_blob_calls"] - before["sign_blob_calls"],
          "sign_blob_retries" => after["sign_blob_retries"] - before["sign_blob_retries"],
          "token_fetches" => after["token_fetches"] - before["token_fetches"],
          "emulator_max_in_flight" => max_in_flight, "pass" => pass }
      end

      private

      def now
        ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
      end

      def request(object = Faults::OBJECT)
        { bucket: Faults::BUCKET, object: object, expires_in: 600 }
      end

      # Token and email in memory, a URL for another object cached.
      def warm(signer)
        url = signer.signed_url(**request("faults/warm.txt"))
        raise "warm-up URL did not verify" if HttpRoute.request(url, @emulator.port).code == "403"
      end

      def inject
        case @row.config
        when Hash then @emulator.configure(@row.config)
        when :one_hour_ahead then @emulator.configure("now_override" => Time.now.to_f + 3600)
        when :revoke then @emulator.revoke_tokens!
        when :short_tokens then @emulator.configure("token_lifetime" => 3)
        when *PILE_UPS.keys then @emulator.configure("iam" => { "latency_ms" => PILE_UPS[@row.config] })
        end
      end

      def clear
        case @row.clear
        when Hash then @emulator.configure(@row.clear)
        when :none then nil
        end
        # A URL signed while the server clock was an hour ahead must be checked on the real clock.
        @emulator.configure("now_override" => nil) if @row.config == :one_hour_ahead
      end

      # [outcome, seconds, detail]: "URL" (verified) or the exception's class name.
      # A URL signed while the emulator's clock ran an hour ahead is checked
      # on the real clock.
      def attempt(signer, config)
        return pile_up(signer) if PILE_UPS.key?(config)
        return short_tokens(signer) if config == :short_tokens

        t0 = now
        begin
          url = signer.signed_url(**request)
          elapsed = now - t0
          verify(url) ? ["URL", elapsed, nil] : ["URL (rejected by GCS)", elapsed, nil]
        rescue GitlabGcsSigner::Error => e
          [e.class.name.split("::").last, now - t0, e.message[0, 160]]
        end
      end

      def verify(url)
        @emulator.configure("now_override" => nil) if @row.config == :one_hour_ahead
        %w[200 404].include?(HttpRoute.request(url, @emulator.port).code)
      end

      # Calls the same request until it succeeds (or the budget ends).
      def recover(signer)
        t0 = now
        failed = 0
        loop do
          begin
            url = signer.signed_url(**request)
            return [verify(url), now - t0, failed]
          rescue GitlabGcsSigner::Error
            failed += 1
          end
          return [false, nil, failed] if now - t0 > Faults::RECOVERY_BUDGET

          sleep 0.2
        end
      end

      # 64 threads ask for 64 different URLs while IAM is slow and the signer
      # admits 8 signBlob calls at a time. With a 10 s timeout all of them get a
      # URL in 8 rounds; with 1.5 s and 1 s per call only the first round can,
      # and every other caller must give up by its deadline (QuotaError from the
      # guard, or TimeoutError) instead of queueing or opening a 9th connection.
      # The outcome lists the kinds seen, in a fixed order.
      def pile_up(signer)
        threads_before = signer_threads
        results = Array.new(64) do |i|
          Thread.new do
            s = now
            begin
              url = signer.signed_url(**request("faults/pile/#{i}"))
              [verify(url) ? "URL" : "URL (rejected by GCS)", now - s]
            rescue GitlabGcsSigner::Error => e
              [e.class.name.split("::").last, now - s]
            end
          end
        end.map(&:value)
        worst = results.map(&:last).max
        kinds = results.map(&:first).tally
        detail = "#{kinds.sort.map { |k, v| "#{v} #{k}" }.join(', ')}; slowest call #{worst.round(2)} s; " \
                 "gem threads #{threads_before} -> #{signer_threads}"
        [kinds.keys.sort.join("+"), worst, detail]
      end

      # Tokens that live 3 s are always below the 120 s refresh margin, so
      # every call waits for a new one: slow, but never a failure.
      def short_tokens(signer)
        t0 = now
        count = 0
        worst = 0
        while now - t0 < 4
          s = now
          url = signer.signed_url(**request("faults/short/#{count}"))
          return ["URL (rejected by GCS)", now - s, nil] unless verify(url)

          worst = [worst, now - s].max
          count += 1
          sleep 0.5
        end
        ["URL", worst, "#{count} URLs over 4 s, slowest #{worst.round(2)} s"]
      rescue GitlabGcsSigner::Error => e
        [e.class.name.split("::").last, now - s, e.message[0, 160]]
      end

      # The gem's own OS threads (its tokio runtime names them): a pile-up
      # would show here as one thread per waiting call.
      def signer_threads
        Dir.children("/proc/self/task").count do |tid|
          File.read("/proc/self/task/#{tid}/comm").start_with?("gcs-signer")
        rescue SystemCallError
          false
        end
      end
    end

    module_function

    def fault_matrix(rows)
      lines = ["| service | fault | expected | observed | time (deadline) | recovery | signBlob calls / token fetches |",
               "|---|---|---|---|---|---|---|"]
      rows.each do |r|
        observed = r["error"] ? "ERROR #{r['error']}" : r["observed"]
        observed += ": #{r['detail']}" if r["detail"] && r["observed"].to_s.start_with?("URL")
        recovery = if r["recovered"]
                     r["failed_calls_before_recovery"].to_i.zero? ? "next call" : "after #{r['recovery_s']} s (#{r['failed_calls_before_recovery']} failed calls)"
                   else
                     "NO"
                   end
        mark = r["pass"] ? "" : " **FAIL**"
        lines << "| #{r['service']} | #{r['fault']} | #{r['expected']} | #{observed}#{mark} | #{r['elapsed_s']} s (#{r['deadline_s']} s) | " \
                 "#{recovery} | #{r['sign_blob_calls']} / #{r['token_fetches']} |"
      end
      lines.join("\n")
    end
  end
end

if $PROGRAM_NAME == __FILE__
  opts = GitlabGcsSigner::Bench::Faults.parse(ARGV)
  rows = GitlabGcsSigner::Bench::Faults.new(only: opts[:only]).run
  puts GitlabGcsSigner::Bench.fault_matrix(rows)
  puts JSON.generate(rows) if opts[:json]
  exit(rows.all? { |r| r["pass"] } ? 0 : 1)
end
