# frozen_string_literal: true

module GitlabGcsSigner
  module Emulator
    # Per-service fault injection ("metadata", "iam", "gcs"), configured through POST /_emulator/config.
    #
    # The faults mirror what the field notes report from production: a GKE metadata server that is
    # silent for seconds after pod start and answers 429, signBlob at 50-60 ms with 429 on quota and
    # transient 5xx, and broken or cut bodies from proxies.
    #
    # Hostile answers (issue 15), applied to every answer of the service while set:
    #   body_bytes:         pad the body with trailing spaces (still valid JSON) to this many bytes
    #   token_crlf:         the metadata token's access_token carries "\r\nX-Injected: 1"
    #   expires_in:         the metadata token answer reports this expires_in (the token's real life is unchanged)
    #   echo_authorization: error envelopes quote the request's Authorization header, as a confused proxy might
    class Faults
      SERVICES = %w[metadata iam gcs].freeze
      SHAPES = %w[body_bytes token_crlf expires_in echo_authorization].freeze
      KEYS = (%w[latency_ms cold_start_ms rate_429 rate_503 timeout_rate timeout_ms fail_next garbage truncated no_flavor] + SHAPES).freeze
      MAX_BODY_BYTES = 256 * 1024 * 1024
      WORDS = %w[garbage truncated timeout no_flavor].freeze
      DEFAULT_TIMEOUT_MS = 30_000

      # Sleeps that end early when the server stops, so WEBrick's shutdown (which joins every
      # connection thread) is not held up by a 30 s "timeout" fault.
      class Sleeper
        def initialize
          @mutex = Mutex.new
          @cv = ConditionVariable.new
          @stopping = false
        end

        # Returns false if interrupted by #wake_all!.
        def sleep(seconds)
          deadline = Emulator.monotonic + seconds
          @mutex.synchronize do
            until @stopping
              left = deadline - Emulator.monotonic
              break if left <= 0

              @cv.wait(@mutex, left)
            end
            !@stopping
          end
        end

        def wake_all!
          @mutex.synchronize do
            @stopping = true
            @cv.broadcast
          end
        end
      end

      attr_reader :sleeper

      def initialize(seed:, cold_start_ms: 0)
        @mutex = Mutex.new
        @sleeper = Sleeper.new
        @seed = seed
        reset!
        configure("metadata", "cold_start_ms" => cold_start_ms) if cold_start_ms.positive?
      end

      def reset!
        @mutex.synchronize do
          @settings = SERVICES.to_h { |service| [service, {}] }
          @fail_next = SERVICES.to_h { |service| [service, []] }
          @cold_until = {}
          @rng = Random.new(@seed)
        end
      end

      def reseed(seed)
        @mutex.synchronize do
          @seed = seed
          @rng = Random.new(seed)
        end
      end

      # Merges +hash+ into the service's faults. A nil/false/0 value clears a fault; fail_next replaces
      # the queue; cold_start_ms starts counting now.
      def configure(service, hash)
        raise Config::Invalid, "unknown service #{service.inspect}" unless SERVICES.include?(service)

        checked = hash.to_h { |key, value| [key, validate(key, value)] }
        @mutex.synchronize do
          checked.each do |key, value|
            case key
            when "fail_next" then @fail_next[service] = value.dup
            when "cold_start_ms" then @cold_until[service] = Emulator.monotonic + (value / 1000.0)
            end
            @settings[service] = @settings[service].merge(key => value)
          end
        end
      end

      def to_h
        @mutex.synchronize do
          SERVICES.to_h do |service|
            [service, @settings[service].merge("fail_next" => @fail_next[service].dup)]
          end
        end
      end

      # Waits out cold start and latency, then returns the fault for this answer: nil (answer
      # normally), an HTTP status (Integer), or one of :garbage :truncated :timeout :no_flavor.
      def before_answer(service)
        cold_until, settings = @mutex.synchronize { [@cold_until[service], @settings[service]] }
        wait_until(cold_until) if cold_until
        latency = settings["latency_ms"].to_f
        @sleeper.sleep(latency / 1000.0) if latency.positive?
        pick(service, settings)
      end

      # The hostile-answer settings in force for +service+ (SHAPES), without the cleared ones.
      def shapes(service)
        @mutex.synchronize { @settings[service].slice(*SHAPES) }.reject { |_, value| value.nil? || value == false }
      end

      # "timeout": hold the connection as a hung upstream would, then give up without answering.
      def hold_for_timeout(service)
        ms = @mutex.synchronize { @settings[service]["timeout_ms"] } || DEFAULT_TIMEOUT_MS
        @sleeper.sleep(ms / 1000.0)
      end

      private

      def wait_until(deadline)
        left = deadline - Emulator.monotonic
        @sleeper.sleep(left) if left.positive?
      end

      def pick(service, settings)
        queued = @mutex.synchronize { @fail_next[service].shift }
        return to_fault(queued) if queued
        return :timeout if roll(settings["timeout_rate"])
        return 429 if roll(settings["rate_429"])
        return 503 if roll(settings["rate_503"])

        %w[garbage truncated no_flavor].each { |word| return word.to_sym if settings[word] }
        nil
      end

      def to_fault(entry)
        entry.is_a?(Integer) ? entry : entry.to_sym
      end

      def roll(rate)
        return false unless rate&.positive?

        @mutex.synchronize { @rng.rand < rate }
      end

      def validate(key, value)
        valid =
          case key
          when "latency_ms", "cold_start_ms", "timeout_ms" then value.nil? || (value.is_a?(Numeric) && value >= 0)
          when "rate_429", "rate_503", "timeout_rate" then value.nil? || (value.is_a?(Numeric) && value.between?(0, 1))
          when "garbage", "truncated", "no_flavor", "token_crlf", "echo_authorization" then [true, false, nil].include?(value)
          when "body_bytes" then value.nil? || (value.is_a?(Integer) && value.between?(0, MAX_BODY_BYTES))
          when "expires_in" then value.nil? || (value.is_a?(Integer) && !value.negative?)
          when "fail_next" then value.is_a?(Array) && value.all? { |entry| valid_entry?(entry) }
          else raise Config::Invalid, "unknown fault #{key.inspect} (known: #{KEYS.join(', ')})"
          end
        raise Config::Invalid, "invalid value for fault #{key}: #{value.inspect}" unless valid

        key == "cold_start_ms" ? value.to_f : value
      end

      def valid_entry?(entry)
        (entry.is_a?(Integer) && entry.between?(400, 599)) || WORDS.include?(entry)
      end
    end

    def self.monotonic
      ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
    end
  end
end
