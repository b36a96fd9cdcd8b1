# frozen_string_literal: true

require "json"

module GitlabGcsSigner
  # Signs Google Cloud Storage URLs (V4 or V2) with Application Default
  # Credentials: locally with a service-account key, or through the IAM
  # Credentials signBlob API on GKE Workload Identity / GCE, with one shared
  # token per process and a cache that makes repeated URLs free.
  #
  # Thread-safe and fork-safe: share one instance per process.
  class Signer
    # A URL may outlive what was asked by at most 10% of its lifetime and
    # never by more than 5 minutes (README, "The cache").
    CACHE_DEFAULTS = { extension_ratio: 0.1, max_extension: 300, max_entries: 20_000 }.freeze

    # Stale-if-error (README "Outages"): when IAM is unavailable or the quota
    # is exhausted, answer a miss with the URL cached for the same request if
    # it still works for max(min_life, min_ratio x lifetime) seconds; during
    # an outage one miss per probe_interval seconds tries IAM again.
    STALE_DEFAULTS = { min_life: 60, min_ratio: 0.1, probe_interval: 5 }.freeze

    # Refresh-ahead (opt-in): a hit in the last `lead` share of the span in
    # which its URL serves the lifetime asked re-signs it in the background,
    # spending at most max_quota_share of max_sign_blob_per_minute.
    REFRESH_DEFAULTS = { lead: 0.25, max_quota_share: 0.1 }.freeze

    VERSIONS = %i[v2 v4].freeze
    URL_STYLES = %i[path virtual_hosted bucket_bound_hostname].freeze

    # Frozen native names for the common spellings, so a cache hit allocates
    # nothing to convert them (bench/hit_cost.rb); anything else takes the
    # checked path.
    VERSION_NAMES = VERSIONS.flat_map { |n| [[n, n.to_s.freeze], [n.to_s.freeze, n.to_s.freeze]] }.to_h.freeze
    STYLE_NAMES = URL_STYLES.flat_map { |n| [[n, n.to_s.freeze], [n.to_s.freeze, n.to_s.freeze]] }.to_h.freeze
    VERBS = %w[GET HEAD PUT POST DELETE PATCH OPTIONS RESUMABLE]
            .flat_map { |v| [[v, v], [v.downcase, v], [v.to_sym, v], [v.downcase.to_sym, v]] }.to_h.freeze
    NONE = {}.freeze

    # shared_cache: the GitlabGcsSigner::SharedCache in use, or nil.
    attr_reader :identity, :shared_cache

    # credentials:            path to a JSON credentials file, its JSON text, or a Hash;
    #                         nil discovers Application Default Credentials.
    # service_account_email:  sign as this account (signBlob) instead of the discovered one.
    # metadata_host:          default ENV["GCE_METADATA_HOST"], else 169.254.169.254.
    # iam_endpoint:           default ENV["GCS_SIGNER_IAM_ENDPOINT"], else https://iamcredentials.googleapis.com.
    # delegates:              service-account delegation chain for signBlob.
    # cache:                  false, or a Hash with extension_ratio:, max_extension:, max_entries:.
    # timeout:                seconds one call may take, retries included.
    # max_sign_blob_per_minute, max_sign_blob_in_flight: the client-side quota guard.
    # stale_if_error:         true (default), false, or a Hash with min_life:, min_ratio:,
    #                         probe_interval: (STALE_DEFAULTS).
    # refresh_ahead:          false (default), true, or a Hash with lead:, max_quota_share:
    #                         (REFRESH_DEFAULTS).
    # shared_cache:           nil, an ActiveSupport::Cache::Store (e.g. Rails.cache) or a
    #                         GitlabGcsSigner::SharedCache: signBlob URLs shared by every process.
    def initialize(credentials: nil, service_account_email: nil, metadata_host: nil, iam_endpoint: nil,
                   delegates: [], cache: {}, timeout: 10, max_sign_blob_per_minute: 6000,
                   max_sign_blob_in_flight: 64, clock: nil, shared_cache: nil, stale_if_error: true,
                   refresh_ahead: false)
      @native = Native::Signer.new(
        credentials_arg(credentials),
        optional_string(service_account_email, :service_account_email),
        optional_string(metadata_host, :metadata_host),
        optional_string(iam_endpoint, :iam_endpoint),
        Array(delegates).map { |d| string(d, :delegates) },
        cache_arg(cache),
        number(timeout, :timeout).to_f,
        integer(max_sign_blob_per_minute, :max_sign_blob_per_minute, 1..1_000_000),
        integer(max_sign_blob_in_flight, :max_sign_blob_in_flight, 1..10_000),
        clock_arg(clock),
        cache == false ? nil : stale_arg(stale_if_error),
        cache == false ? nil : refresh_arg(refresh_ahead)
      )
      @identity = @native.identity
      @shared_cache = shared_cache_arg(shared_cache, cache, timeout)
      # Background refreshes go to the shared level too.
      @share_refreshes = !@shared_cache.nil? && !@native.refresh_config.nil?
      @native.keep_refreshed if @share_refreshes
    end

    # Returns a signed URL valid for at least expires_in seconds (or until
    # expires_at) for exactly the request described.
    # Instrumented as GitlabGcsSigner::SIGN_URL_EVENT (see observability.rb).
    def signed_url(**request)
      url = Observability.signed_url(@native, native_request(**request), @shared_cache)
      @shared_cache.publish_refreshed(@native) if @share_refreshes
      url
    end

    # The string the URL for the same arguments signs: compare it with what
    # Google's SignatureDoesNotMatch error shows to find which part differs.
    def string_to_sign(**request)
      args = native_request(**request)
      Observability.observe("string_to_sign") { @native.string_to_sign(*args) }
    end

    # Raw RSA-SHA256 signature of bytes (a binary String). Never cached.
    def sign_blob(bytes)
      raise ArgumentError, "sign_blob needs a String, got #{bytes.class}" unless bytes.is_a?(String)

      Observability.observe("signBlob") { @native.sign_blob(bytes) }
    end

    # The signing service account's email (may ask the metadata server once).
    def email
      Observability.observe("looking up the service account email") { @native.email }
    end

    # Counters: hits, misses, coalesced waits, signBlob calls and errors by
    # kind, token fetches, evictions, entries, throttled calls (and shared_*
    # with a shared cache, see SharedCache::COUNTERS).
    def stats
      @shared_cache ? @native.stats.merge(@shared_cache.stats) : @native.stats
    end

    # { extension_ratio:, max_extension:, max_entries: } or nil when the cache is off.
    def cache_config
      ratio, max_extension, max_entries = @native.cache_config
      ratio && { extension_ratio: ratio, max_extension: max_extension, max_entries: max_entries }
    end

    # { min_life:, min_ratio:, probe_interval: } or nil when stale-if-error is off.
    def stale_config
      min_life, min_ratio, probe_interval = @native.stale_config
      min_life && { min_life: min_life, min_ratio: min_ratio, probe_interval: probe_interval }
    end

    # { lead:, max_quota_share: } or nil when refresh-ahead is off.
    def refresh_config
      lead, share = @native.refresh_config
      lead && { lead: lead, max_quota_share: share }
    end

    def inspect
      shared = @shared_cache ? " shared=#{@shared_cache.inspect}" : ""
      "#<#{self.class.name} #{@identity} cache=#{cache_config.inspect}#{shared}>"
    end
    alias to_s inspect

    private

    # signed_url's keywords as the native method's positional arguments.
    def native_request(bucket:, object:, method: "GET", expires_in: nil, expires_at: nil, version: :v4,
                       headers: NONE, query: NONE, scheme: "https", host: nil, url_style: :path,
                       bucket_bound_hostname: nil, timestamp: nil, v2_path: nil)
      if expires_in.nil? == expires_at.nil?
        raise ArgumentError, "give exactly one of expires_in: (seconds) or expires_at: (a Time)"
      end

      # Strings and the header/query Hashes are checked (type, UTF-8, NUL)
      # by the native side, where it is cheaper on the cache-hit path.
      [
        VERSION_NAMES[version] || symbol(version, :version, VERSIONS),
        VERBS[method] || verb(method),
        bucket,
        object_arg(object),
        hash_arg(headers, :headers),
        hash_arg(query, :query),
        scheme,
        host,
        STYLE_NAMES[url_style] || symbol(url_style, :url_style, URL_STYLES),
        bucket_bound_hostname,
        v2_path,
        expires_in && number(expires_in, :expires_in).to_f,
        expires_at && epoch(expires_at, :expires_at),
        timestamp && (timestamp.is_a?(Time) ? timestamp.to_i : epoch(timestamp, :timestamp).floor)
      ]
    end

    def credentials_arg(credentials)
      case credentials
      when nil then nil
      when Hash then JSON.generate(credentials)
      when String
        raise ArgumentError, "credentials must not be empty" if credentials.strip.empty?

        credentials
      else
        raise ArgumentError, "credentials: give a file path, JSON text or a Hash, not #{credentials.class}"
      end
    end

    def cache_arg(cache)
      return nil if cache == false
      raise ArgumentError, "cache: give false or a Hash, not #{cache.class}" unless cache.is_a?(Hash)

      unknown = cache.keys - CACHE_DEFAULTS.keys
      raise ArgumentError, "unknown cache option(s): #{unknown.join(', ')}" unless unknown.empty?

      opts = CACHE_DEFAULTS.merge(cache)
      [number(opts[:extension_ratio], :extension_ratio).to_f,
       integer(opts[:max_extension], :max_extension, 0..86_400),
       integer(opts[:max_entries], :max_entries, 1..100_000_000)]
    end

    def stale_arg(option)
      opts = options_hash(option, :stale_if_error, STALE_DEFAULTS) or return nil
      [integer(opts[:min_life], :min_life, 1..604_800),
       number(opts[:min_ratio], :min_ratio).to_f,
       integer(opts[:probe_interval], :probe_interval, 0..3600)]
    end

    def refresh_arg(option)
      opts = options_hash(option, :refresh_ahead, REFRESH_DEFAULTS) or return nil
      [number(opts[:lead], :lead).to_f, number(opts[:max_quota_share], :max_quota_share).to_f]
    end

    # false/nil -> nil, true -> the defaults, a Hash -> merged with them.
    def options_hash(option, name, defaults)
      return nil if option.nil? || option == false
      return defaults if option == true
      raise ArgumentError, "#{name}: give true, false or a Hash, not #{option.class}" unless option.is_a?(Hash)

      unknown = option.keys - defaults.keys
      raise ArgumentError, "unknown #{name} option(s): #{unknown.join(', ')}" unless unknown.empty?

      defaults.merge(option)
    end

    def shared_cache_arg(shared_cache, cache, timeout)
      return nil if shared_cache.nil?
      raise ArgumentError, "shared_cache: needs the local cache (cache: must not be false)" if cache == false

      shared = shared_cache.is_a?(SharedCache) ? shared_cache : SharedCache.new(shared_cache)
      # A process that waits for another's signature must still have time to sign itself.
      if shared.options[:wait] >= timeout
        raise ArgumentError, "shared_cache wait: (#{shared.options[:wait]} s) must be less than timeout: (#{timeout} s)"
      end

      shared
    end

    def clock_arg(clock)
      return nil if clock.nil?
      return clock if clock.is_a?(Native::ManualClock)

      raise ArgumentError, "clock: give a GitlabGcsSigner::Native::ManualClock or nil"
    end

    def verb(method)
      name = method.is_a?(Symbol) ? method.to_s : method
      raise ArgumentError, "method must be a String or Symbol, got #{method.class}" unless name.is_a?(String)

      string(name, :method).upcase
    end

    def string(value, name)
      raise ArgumentError, "#{name} must be a String, got #{value.class}" unless value.is_a?(String)
      raise ArgumentError, "#{name} is not valid #{value.encoding}" unless value.valid_encoding?

      # Converted before the NUL check: include?("\0") on UTF-16 text raises.
      text = value.encoding == Encoding::UTF_8 ? value : value.encode(Encoding::UTF_8)
      raise ArgumentError, "#{name} contains a NUL byte" if text.include?("\0")

      text
    rescue EncodingError => e
      raise ArgumentError, "#{name} cannot be converted to UTF-8 (#{e.class})"
    end

    def optional_string(value, name)
      value.nil? ? nil : string(value, name)
    end

    def symbol(value, name, allowed)
      sym = value.is_a?(String) ? value.to_sym : value
      return sym.to_s if allowed.include?(sym)

      raise ArgumentError, "unknown #{name} #{value.inspect}: use #{allowed.map(&:inspect).join(', ')}"
    end

    # nil names the bucket itself (a V4 bucket-level URL, e.g. for listing).
    def object_arg(object)
      return "" if object.nil?
      raise ArgumentError, "object must not be empty (pass object: nil for a bucket-level URL)" if object == ""

      object
    end

    def hash_arg(hash, name)
      return hash if hash.is_a?(Hash)

      raise ArgumentError, "#{name} must be a Hash, got #{hash.class}"
    end

    def number(value, name)
      return value if value.is_a?(Numeric) && value.real? && value.to_f.finite?

      raise ArgumentError, "#{name} must be a finite number, got #{value.inspect}"
    end

    def integer(value, name, range)
      return value if value.is_a?(Integer) && range.cover?(value)

      raise ArgumentError, "#{name} must be an Integer in #{range}, got #{value.inspect}"
    end

    # Unix seconds as a Float. A Time is rounded up to the next whole second
    # first (Float cannot hold its nanoseconds exactly, and rounding up keeps
    # a URL valid at least until the time asked for).
    def epoch(value, name)
      value = value.to_time if !value.is_a?(Time) && value.respond_to?(:to_time)
      return (value.nsec.zero? ? value.to_i : value.to_i + 1).to_f if value.is_a?(Time)
      return number(value, name).to_f if value.is_a?(Numeric)

      raise ArgumentError, "#{name} must be a Time or a Unix timestamp, got #{value.class}"
    end
  end
end
