# frozen_string_literal: true

require "logger"

module GitlabGcsSigner
  # The ActiveSupport::Notifications event instrumented for every
  # Signer#signed_url call while someone subscribes to it. Payload:
  #   cache:   :hit (local cache), :shared_hit (the shared_cache store, or
  #            another process's signature waited for), :miss (signed
  #            here) or :stale (signing failed with an availability error
  #            and the URL cached for the same request was served, see
  #            STALE_URL_EVENT); nil if the arguments were rejected
  #   method:  "GET", "PUT", ...
  #   bucket:  the bucket name
  #   version: :v4 or :v2
  # plus, as with every instrument call, :exception / :exception_object when
  # it raised. Never the object name, the URL, its query, a signature or a
  # token. The event's duration is the signing time.
  SIGN_URL_EVENT = "sign_url.gitlab_gcs_signer"

  # Instrumented (when ActiveSupport::Notifications is loaded) for every
  # stale-if-error answer, listened to or not by SIGN_URL_EVENT. Payload:
  #   method, bucket, version: as for SIGN_URL_EVENT
  #   remaining: seconds the served URL still works (at least the minimum)
  #   error:     the availability error signing failed with (:unavailable,
  #              :quota, :timeout or :metadata)
  STALE_URL_EVENT = "stale_url.gitlab_gcs_signer"

  # Instrumentation, logging and process-wide stats, beside the signing
  # pipeline: it subscribes to the events Signing emits (signing.rb) and
  # never signs anything itself. The Rust core cannot call Ruby from its
  # worker threads, so it queues log events (src/events.rs) and this module
  # drains them after every cache miss or error, never on a hit.
  module Observability
    NULL_LOGGER = Logger.new(nil)
    PREFIX = "gitlab-gcs-signer: "

    # Process-wide figures, for Prometheus (GitlabGcsSigner.stats). Counters
    # only ever go up (they include signers that were garbage-collected);
    # gauges are values now.
    COUNTERS = {
      hits: "signed URLs served from the cache",
      misses: "signed URLs that needed a new signature",
      coalesced: "misses that waited for another caller's in-flight signature",
      local_signatures: "signatures made with a local key (no API call)",
      sign_blob_calls: "IAM signBlob HTTP requests sent, retries included",
      sign_blob_retries: "signBlob requests retried after a transient error (429, 5xx, timeout)",
      sign_blob_errors_permission: "signBlob calls failed on permission, scope, API or identity errors",
      sign_blob_errors_quota: "signBlob calls failed on quota (429 or the client-side guard)",
      sign_blob_errors_unavailable: "signBlob calls failed because IAM stayed unavailable or too slow",
      sign_blob_errors_other: "signBlob calls failed for any other reason",
      throttled: "signBlob calls delayed by the client-side quota guard",
      evictions: "signed URLs dropped from the cache (expired or over max_entries)",
      stale_served: "misses answered with a cached URL for the same request because IAM was unavailable",
      stale_unavailable: "availability errors raised because no cached URL had the minimum life left",
      refreshes: "background refresh-ahead signings started",
      refresh_failures: "background refresh-ahead signings that failed",
      refresh_skipped: "refresh-ahead signings skipped because their quota share was spent",
      token_refreshes: "access tokens fetched (metadata server or OAuth)",
      token_refresh_errors: "access token fetches that failed",
      log_events_dropped: "log events dropped because the event queue was full"
    }.freeze

    GAUGES = {
      entries: "signed URLs in the caches of live signers",
      signers: "live GitlabGcsSigner::Signer instances",
      log_events_queued: "log events waiting to be written"
    }.freeze

    @logger = nil

    class << self
      attr_accessor :logger

      # Before the first Signer exists the native layer knows only its
      # process-wide names; the per-signer ones are then 0.
      def stats
        raw = Native.process_stats
        {
          counters: COUNTERS.keys.to_h { |name| [name, raw.fetch(name, 0)] },
          gauges: GAUGES.keys.to_h { |name| [name, raw.fetch(name, 0)] },
          # Kept natively (ext/.../observe.rs), not in an ObjectSpace::WeakMap:
          # Ruby 3.1's WeakMap crashed the GC here ("try to mark T_NONE object")
          # when keyed by signers whose native part is freed immediately.
          signers: Native.signer_stats
        }
      end

      def listening?
        defined?(::ActiveSupport::Notifications) &&
          ::ActiveSupport::Notifications.notifier.listening?(SIGN_URL_EVENT)
      end

      # Signing's event: a call starts. For a signed URL while someone
      # listens, starts SIGN_URL_EVENT (its duration is the signing time) and
      # returns what call_finished needs to finish it; else nil. On the
      # cache-hit path this is the only call (listening? inlined: it is the
      # one check a hit pays for).
      def call_started(what, request)
        return nil unless what == :sign_url && defined?(::ActiveSupport::Notifications) &&
                          ::ActiveSupport::Notifications.notifier.listening?(SIGN_URL_EVENT)

        method, bucket, version = described(request)
        payload = { cache: nil, method: method, bucket: bucket, version: version }
        instrumenter = ::ActiveSupport::Notifications.instrumenter
        [instrumenter, payload, instrumenter.start(SIGN_URL_EVENT, payload)]
      end

      # Signing's event: a call ended (a hit without listeners is not
      # reported). Finishes the ActiveSupport event, and after a miss or an
      # error logs what the core queued meanwhile.
      #
      # +stale+ is [seconds_left, error_kind] for a stale-if-error answer
      # (status :stale): STALE_URL_EVENT is instrumented for each.
      def call_finished(started, what, request, status, error, stale = nil)
        finish_event(started, status, error) if started
        return if status == :hit

        stale(request, *stale) if stale

        if error.is_a?(Error)
          failed(error, what == :sign_url ? description(request) : what)
        elsif error.nil?
          flush_events
        end
      end

      # Logs the core's queued events; returns how many there were.
      def flush_events
        events, dropped = Native.drain_events
        return 0 if events.empty? && dropped.zero?

        log = GitlabGcsSigner.logger
        events.each { |event| log_event(log, event) }
        log.warn { "#{PREFIX}#{dropped} log event(s) dropped: the event queue was full" } if dropped.positive?
        events.size
      end

      private

      # As ActiveSupport's own #instrument does: the status, and on failure
      # :exception and :exception_object, in the payload.
      def finish_event(started, status, error)
        instrumenter, payload, state = started
        payload[:cache] = status
        if error
          payload[:exception] = [error.class.name, error.message]
          payload[:exception_object] = error
        end
        instrumenter.finish_with_state(state, SIGN_URL_EVENT, payload)
      end

      def stale(request, remaining, error)
        return unless defined?(::ActiveSupport::Notifications)

        method, bucket, version = described(request)
        ::ActiveSupport::Notifications.instrument(
          STALE_URL_EVENT, method: method, bucket: bucket, version: version, remaining: remaining, error: error
        )
      end

      def description(request)
        method, bucket, version = described(request)
        "signing a #{version} #{method} URL in bucket #{bucket}"
      end

      # The request's verb, bucket and version as the payload and logs show
      # them (signed_url's defaults: GET, :v4); the native side checks them.
      def described(request)
        request = Signing.keywords(request)
        [request.fetch(:method, "GET").to_s.upcase, request[:bucket], request.fetch(:version, :v4).to_s.to_sym]
      end

      def failed(error, what)
        flush_events
        GitlabGcsSigner.logger.error { "#{PREFIX}#{what} failed: #{error.class.name}: #{error.message}" }
      end

      # Levels: a retry or throttling is a warning (it worked around a
      # problem that may grow); a failed refresh is a warning (the caller
      # gets the error and the next call retries); a successful refresh is
      # routine (debug); a signBlob failure is logged at debug because the
      # caller's error is logged at error level with the same message.
      def log_event(log, event)
        case event[:type]
        when :retry
          log.warn do
            format("%s%s: retrying in %.2f s after %s: %s",
                   PREFIX, event[:service] == :sign_blob ? "signBlob" : "metadata server",
                   event[:delay], event[:kind], event[:message])
          end
        when :token_refreshed
          log.debug { "#{PREFIX}access token refreshed (expires in #{event[:expires_in]} s)" }
        when :token_refresh_failed
          log.warn { "#{PREFIX}access token refresh failed (#{event[:kind]}): #{event[:message]}" }
        when :sign_blob_failed
          log.debug { "#{PREFIX}signBlob failed (#{event[:kind]}): #{event[:message]}" }
        when :stale_served
          log.warn do
            "#{PREFIX}serving cached URLs with less life than asked (this one #{event[:remaining]} s, " \
              "at least #{event[:min_life]} s) because signing failed (#{event[:kind]}): #{event[:message]}; " \
              "logged at most once a minute, see the stale_served counter"
          end
        when :throttled
          log.warn do
            "#{PREFIX}signBlob call delayed by the client-side quota guard " \
              "(#{event[:reason] == :rate ? 'max_sign_blob_per_minute' : 'max_sign_blob_in_flight'} reached)"
          end
        end
      end
    end
  end

  Signing.subscriber = Observability

  class << self
    # Where retries, token refreshes and errors are logged. Defaults to
    # Rails.logger when Rails is loaded, else nothing is logged.
    def logger
      Observability.logger || rails_logger || Observability::NULL_LOGGER
    end

    # Any object with Logger's debug/info/warn/error (block form); nil
    # restores the default.
    def logger=(logger)
      Observability.logger = logger
    end

    # Process-wide figures:
    #   { counters: { hits: Integer, ... },   # monotonic: Prometheus counters
    #     gauges:   { entries: Integer, ... }, # current values: Prometheus gauges
    #     signers:  [{ identity: String, hits: Integer, ... }, ...] } # live signers
    # Observability::COUNTERS and ::GAUGES hold a help text for each name.
    def stats
      Observability.stats
    end

    # Logs events the core queued since the last cache miss (a periodic
    # metrics sampler may call this so that background token refreshes are
    # logged even while every request hits the cache).
    def flush_log_events
      Observability.flush_events
    end

    private

    def rails_logger
      ::Rails.logger if defined?(::Rails) && ::Rails.respond_to?(:logger)
    end
  end
end
