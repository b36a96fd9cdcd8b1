# frozen_string_literal: true

module GitlabGcsSigner
  module Emulator
    # Counters served at GET /_emulator/stats; benchmarks and specs read them to count real calls.
    class Stats
      COUNTERS = %w[
        metadata_requests token_requests email_requests tokens_issued
        sign_blob_calls sign_blob_ok
        gcs_requests verifications_passed verifications_failed
      ].freeze
      MAX_REASONS = 20

      def initialize
        @mutex = Mutex.new
        @in_flight = Hash.new(0)
        reset!
      end

      def reset!
        @mutex.synchronize do
          @counters = COUNTERS.to_h { |name| [name, 0] }
          @sign_blob_errors = Hash.new(0)
          @faults_injected = Hash.new(0)
          @failure_reasons = []
          # A reset in the middle of a burst must not make the maximum smaller than what is running.
          @max_in_flight = @in_flight.dup
        end
      end

      def incr(name)
        @mutex.synchronize { @counters[name] += 1 }
      end

      def sign_blob_error(status)
        @mutex.synchronize { @sign_blob_errors[status.to_s] += 1 }
      end

      def fault_injected(kind)
        @mutex.synchronize { @faults_injected[kind.to_s] += 1 }
      end

      # Keeps the last MAX_REASONS reasons; callers pass no secrets (no tokens, no signatures).
      def failure(reason)
        @mutex.synchronize do
          @failure_reasons << reason
          @failure_reasons.shift while @failure_reasons.size > MAX_REASONS
        end
      end

      # Counts concurrent executions of the block under +name+ and remembers the maximum.
      def in_flight(name)
        @mutex.synchronize do
          @in_flight[name] += 1
          @max_in_flight[name] = [@max_in_flight.fetch(name, 0), @in_flight[name]].max
        end
        yield
      ensure
        @mutex.synchronize { @in_flight[name] -= 1 }
      end

      def to_h
        @mutex.synchronize do
          @counters.merge(
            "sign_blob_errors" => @sign_blob_errors.dup,
            "sign_blob_in_flight" => @in_flight["sign_blob"],
            "sign_blob_max_in_flight" => @max_in_flight.fetch("sign_blob", 0),
            "faults_injected" => @faults_injected.dup,
            "failure_reasons" => @failure_reasons.dup
          )
        end
      end
    end
  end
end
