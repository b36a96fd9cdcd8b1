# frozen_string_literal: true

require "json"

module GitlabGcsSigner
  # The second cache level: signed URLs shared by every process and pod of a
  # deployment through an ActiveSupport::Cache::Store (GitLab's Rails.cache
  # is a RedisCacheStore), so a popular object is signed once per window for
  # the whole fleet instead of once per process.
  #
  # The native signer stays the judge of what may be served: a URL read from
  # the store goes into the local cache only if it serves the request under
  # the same rules as a local entry (X <= x <= X + E, 12 hours for signBlob)
  # and is, apart from its signature, byte for byte the URL this process
  # would build for that request, expiry and signing time.
  #
  # The store is an optimisation and never a dependency: the store's own
  # failures (connection errors, its client's timeouts: STORE_ERRORS) are
  # rescued, a failure or a slow answer opens a breaker that skips the level
  # for breaker_seconds, and signing goes on through the local path. Nothing
  # else is rescued: an exception raised into the thread during a store call
  # (Timeout.timeout, a request timeout's Thread#raise) or a bug propagates
  # and leaves the breaker alone.
  #
  # Trust: entries are bearer URLs. Whoever can read the store can use them
  # until they expire (at most the lifetime asked plus the cache's extension),
  # and whoever can write it can make this gem serve a URL that does not work
  # (never one for another object, expiry or account). GitLab's Redis already
  # holds sessions and CI job tokens of the same sensitivity.
  class SharedCache
    DEFAULTS = {
      namespace: "gitlab_gcs_signer:v1",
      # How long a process that lost the race waits for the winner's URL
      # (signBlob takes about 50-60 ms, bursts up to 1 s: docs/facts.md#signblob-latency).
      wait: 1.0,
      # The coalescing lock outlives a slow signBlob but not an outage.
      lock_ttl: 2.0,
      # A store call slower than this counts as a failure.
      slow: 0.25,
      breaker_seconds: 10.0
    }.freeze

    # Signatures from signBlob are served for 12 hours at most (docs/facts.md#signblob-key-lifetime).
    SIGN_BLOB_MAX_SERVE = GitlabGcsSigner::DEFAULTS[:limits][:sign_blob_max_serve]

    # shared_hits: served from the store; shared_misses: nothing usable there,
    # so this process took the lock or waited; shared_waits: served by another
    # process's signing after waiting; shared_stale: an entry whose expiry does
    # not fit the request's window (normal); shared_rejected: an entry that is
    # not this request's URL or is malformed (should stay 0); shared_errors:
    # failed or slow store calls; shared_skipped: calls that bypassed the store
    # while the breaker was open.
    COUNTERS = %i[
      shared_hits shared_misses shared_writes shared_waits shared_wait_timeouts
      shared_stale shared_rejected shared_errors shared_skipped shared_breaker_opens
    ].freeze

    # What store clients raise when the store is down, refuses or is slow
    # (redis-rb, redis-client, Dalli, connection_pool, the socket layer),
    # by name so that none of these libraries has to be loaded. Besides
    # these: SystemCallError, IOError, and subclasses of Timeout::Error
    # (Net::ReadTimeout, ConnectionPool::TimeoutError) but not Timeout::Error
    # itself, which is what Timeout.timeout raises into a thread.
    STORE_ERRORS = %w[
      Redis::BaseError RedisClient::Error Dalli::DalliError ConnectionPool::Error
      SocketError OpenSSL::SSL::SSLError
    ].freeze

    attr_reader :store, :options

    # store: any ActiveSupport::Cache::Store (read, write with unless_exist:
    # and expires_in:, read_multi, delete), e.g. Rails.cache.
    def initialize(store, **options)
      unknown = options.keys - DEFAULTS.keys
      raise ArgumentError, "unknown shared_cache option(s): #{unknown.join(', ')}" unless unknown.empty?

      %i[read write read_multi delete].each do |m|
        next if store.respond_to?(m)

        raise ArgumentError, "shared_cache must be an ActiveSupport::Cache::Store (it lacks ##{m}), got #{store.class}"
      end
      @store = store
      @options = DEFAULTS.merge(options)
      %i[wait lock_ttl slow breaker_seconds].each { |k| check_positive_seconds(k) }
      raise ArgumentError, "shared_cache namespace: must be a non-empty String" unless valid_namespace?

      @namespace = @options[:namespace]
      @mutex = Mutex.new
      @counters = COUNTERS.to_h { |name| [name, 0] }
      @open_until = nil
    end

    # Steps 2 to 4 of Signing (signing.rb) for a local miss: the URL for the
    # native +plan+ from the store, else signed here (or by the process that
    # holds the lock) and shared. [url, :shared_hit | :miss], or
    # [url, :stale, seconds_left, error_kind] for a stale-if-error answer (a
    # URL this or another process stored for the same request).
    def fetch_or_sign(native, plan)
      key = breaker_open? ? count_skipped : native.shared_key(plan)
      return answered(native.sign_plan(plan)) unless key

      # The braces are a Redis Cluster hash tag: the value and its lock share a
      # slot, so read_multi (MGET) of both works on a cluster too.
      read_or_sign(native, plan, "#{@namespace}:{#{key}}")
    end

    def stats
      @mutex.synchronize { @counters.dup }.merge(shared_breaker_open: breaker_open? ? 1 : 0)
    end

    def inspect
      "#<#{self.class.name} #{@store.class.name} #{@namespace}>"
    end

    # Publishes what background refreshes (refresh_ahead:) signed since the
    # last call, as sign_and_share does for a miss.
    def publish_refreshed(native)
      rows = native.take_refreshed or return
      rows.each do |plan, url, expires_at, signed_at, from_sign_blob|
        break if breaker_open?

        key = native.shared_key(plan) or next
        write("#{@namespace}:{#{key}}", plan, url, expires_at, signed_at, from_sign_blob)
      end
    rescue Error
      nil
    end

    private

    # The store's entry for the plan if it serves it; else the lock and a
    # new signature, or the lock holder's URL waited for.
    def read_or_sign(native, plan, value_key)
      started = now
      url = verified_url(native, plan, store_call { @store.read(value_key, raw: true) })
      return [count(:shared_hits, url), :shared_hit] if url
      return sign_and_share(native, plan, value_key) if breaker_open?

      lock_key = "#{value_key}:lock"
      count(:shared_misses)
      # Not a fencing lock: at worst (a winner slower than lock_ttl) two
      # processes sign the same key, which costs one signBlob call.
      locked = store_call { @store.write(lock_key, "1", unless_exist: true, expires_in: @options[:lock_ttl], raw: true) }
      # The read and the lock together slower than `slow` count as a failure
      # too: a hung Redis behind RedisCacheStore answers every call with nil
      # or false after the client's timeout (0.2 s in the README's setup,
      # under `slow`), so no single call looks slow, and without this every
      # miss would keep waiting on it.
      record_store_failure if !breaker_open? && now - started > @options[:slow]
      if locked
        begin
          sign_and_share(native, plan, value_key)
        ensure
          store_call { @store.delete(lock_key) }
        end
      else
        waited = wait_for_winner(native, plan, value_key, lock_key)
        waited ? [waited, :shared_hit] : sign_and_share(native, plan, value_key)
      end
    end

    # [url, :miss] or, for a stale-if-error answer, [url, :stale, seconds_left, error_kind].
    def answered(signed)
      signed.size > 4 ? [signed[0], :stale, signed[4], signed[5]] : [signed[0], :miss]
    end

    # Signs (one signBlob, or the local cache if another thread just did)
    # and shares the result for as long as any request may use it. A stale
    # answer (stale-if-error) is already in the store or was taken from it:
    # not written again.
    def sign_and_share(native, plan, value_key)
      signed = native.sign_plan(plan)
      return answered(signed) if breaker_open? || signed.size > 4

      write(value_key, plan, *signed)
      answered(signed)
    end

    def write(value_key, plan, url, expires_at, signed_at, from_sign_blob)
      usable_until = from_sign_blob ? [expires_at, signed_at + SIGN_BLOB_MAX_SERVE].min : expires_at
      ttl = usable_until - plan.now
      if ttl.positive?
        value = JSON.generate("url" => url, "expires_at" => expires_at, "signed_at" => signed_at,
                              "sign_blob" => from_sign_blob)
        written = store_call { @store.write(value_key, value, expires_in: ttl, raw: true) }
        # RedisCacheStore rescues Redis errors and answers a failed write with
        # false (ActiveSupport 6.1) or nil (7.x), the one sign of an outage
        # that does not raise. An exception was counted by store_call already, and
        # it opened the breaker.
        if written
          count(:shared_writes)
        elsif !breaker_open?
          record_store_failure
        end
      end
    end

    # Polls for the winner's URL while its lock stands, up to the wait.
    def wait_for_winner(native, plan, value_key, lock_key)
      deadline = now + @options[:wait]
      pause = 0.005
      loop do
        return nil if breaker_open?

        sleep([pause, deadline - now].min.clamp(0, nil))
        return count(:shared_wait_timeouts, nil) if now >= deadline

        found = store_call { @store.read_multi(value_key, lock_key, raw: true) } || {}
        url = verified_url(native, plan, found[value_key])
        return count(:shared_waits, url) if url
        # The winner is done (or failed) and left nothing this request can use.
        return nil unless found.key?(lock_key)

        pause = [pause * 2, 0.025].min
      end
    end

    # The URL of a store entry if the native signer takes it for this plan
    # (Native::Signer#adopt), else nil, counted as stale or rejected.
    def verified_url(native, plan, value)
      return nil if value.nil?

      url, expires_at, signed_at, from_sign_blob = parse_entry(value)
      return count(:shared_rejected, nil) unless url

      case native.adopt(plan, url, expires_at, signed_at, from_sign_blob)
      when :taken then url
      when :stale then count(:shared_stale, nil)
      else count(:shared_rejected, nil)
      end
    end

    def parse_entry(value)
      data = JSON.parse(value)
      return nil unless data.is_a?(Hash)

      url, expires_at, signed_at, from_sign_blob = data.values_at("url", "expires_at", "signed_at", "sign_blob")
      return nil unless url.is_a?(String) && url.valid_encoding? && expires_at.is_a?(Integer) && signed_at.is_a?(Integer)
      return nil unless [true, false].include?(from_sign_blob)

      [url, expires_at, signed_at, from_sign_blob]
    rescue JSON::ParserError, TypeError
      nil
    end

    # One store call: a store failure or a slow answer opens the breaker;
    # any other exception propagates.
    def store_call
      started = now
      result = yield
      record_store_failure if now - started > @options[:slow]
      result
    rescue StandardError => e
      raise unless store_failure?(e)

      record_store_failure
      nil
    end

    def store_failure?(error)
      return true if error.is_a?(SystemCallError) || error.is_a?(IOError)
      return !error.instance_of?(::Timeout::Error) if defined?(::Timeout::Error) && error.is_a?(::Timeout::Error)

      error.class.ancestors.any? { |mod| STORE_ERRORS.include?(mod.name) }
    end

    # Counts a failed or slow store call and opens (or keeps open) the breaker.
    def record_store_failure
      @mutex.synchronize do
        @counters[:shared_errors] += 1
        @counters[:shared_breaker_opens] += 1 unless @open_until && now < @open_until
        @open_until = now + @options[:breaker_seconds]
      end
      false
    end

    def breaker_open?
      return false unless @open_until

      now < @open_until
    end

    def count_skipped
      count(:shared_skipped, nil)
    end

    def count(name, result = nil)
      @mutex.synchronize { @counters[name] += 1 }
      result
    end

    def now
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    def check_positive_seconds(name)
      value = @options[name]
      return if value.is_a?(Numeric) && value.real? && value.to_f.finite? && value.positive?

      raise ArgumentError, "shared_cache #{name}: must be a positive number of seconds, got #{value.inspect}"
    end

    def valid_namespace?
      ns = @options[:namespace]
      ns.is_a?(String) && !ns.empty? && !ns.match?(/\s/)
    end
  end
end
