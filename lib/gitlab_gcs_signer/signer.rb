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
    # never by more than 5 minutes (README, "The cache"). The numbers live in
    # the core (src/config.rs), exported as GitlabGcsSigner::DEFAULTS.
    CACHE_DEFAULTS = DEFAULTS[:cache]

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
    #                         probe_interval: (README "Outages").
    # refresh_ahead:          false (default), true, or a Hash with lead:, max_quota_share:.
    # shared_cache:           nil, an ActiveSupport::Cache::Store (e.g. Rails.cache) or a
    #                         GitlabGcsSigner::SharedCache: signBlob URLs shared by every process.
    # universe_domain:        default ENV["GOOGLE_CLOUD_UNIVERSE_DOMAIN"], else the credentials file's
    #                         `universe_domain`, else googleapis.com: the default storage host
    #                         (storage.UNIVERSE) and IAM endpoint (https://iamcredentials.UNIVERSE).
    # universe_domain_from_metadata: true asks the metadata server for the universe (a 404 means
    #                         googleapis.com) when neither of the first two names one and the
    #                         credentials are the metadata server's. Off by default: it is the one
    #                         network call Signer.new then makes.
    #
    # Defaults and limits: GitlabGcsSigner::DEFAULTS. Every option but
    # shared_cache: is converted and checked once, by the native extension
    # (ext/gitlab_gcs_signer/src/convert.rs), with the core's messages.
    def initialize(shared_cache: nil, **options)
      # Simulated time is test support, not an option (spec/support/manual_clock.rb).
      raise ArgumentError, "unknown keyword: :clock" if options.key?(:clock)

      credentials = options[:credentials]
      options = options.merge(credentials: JSON.generate(credentials)) if credentials.is_a?(Hash)
      unless credentials.nil? || credentials.is_a?(String) || credentials.is_a?(Hash)
        raise ArgumentError, "credentials: give a file path, JSON text or a Hash, not #{credentials.class}"
      end

      # @clock: set by Signer.on_clock only (test support), else nil.
      @native = Native::Signer.new(@clock ? options.merge(clock: @clock) : options)
      # What for_account needs to build the same signer for another account
      # (never with credentials: only a signer without them can sign as another account).
      @config = credentials.nil? ? options.merge(shared_cache: shared_cache).freeze : nil
      @accounts = {}
      @accounts_lock = Mutex.new
      @identity = @native.identity
      @shared_cache = shared_cache_arg(shared_cache, options[:cache],
                                       options.fetch(:timeout, DEFAULTS[:signer][:timeout]))
      # Background refreshes go to the shared level too.
      @share_refreshes = !@shared_cache.nil? && !@native.refresh_config.nil?
      @native.keep_refreshed if @share_refreshes
    end

    # Returns a signed URL valid for at least expires_in seconds (or until
    # expires_at) for exactly the request described.
    # Instrumented as GitlabGcsSigner::SIGN_URL_EVENT (see observability.rb).
    #
    # The keywords (bucket:, object:, method:, expires_in: or expires_at:,
    # version:, headers:, query:, scheme:, host:, url_style:,
    # bucket_bound_hostname:, v2_path:, timestamp:; README "API") are
    # converted and checked once, natively, into the core's UrlRequest.
    def signed_url(**request)
      url = Signing.signed_url(@native, request, @shared_cache)
      @shared_cache.publish_refreshed(@native) if @share_refreshes
      url
    end

    # signed_url for the fog shim, its arguments in Native::REQUEST_KEYS
    # order (nil: the default): they go to the native side as one Array, so
    # the cache-hit path builds no Hash and splats no keywords. @api private
    def fog_signed_url(version, method, scheme, host, bucket, object, headers, query, expires_at, v2_path)
      url = Signing.signed_url(
        @native, [version, method, scheme, host, bucket, object, headers, query, expires_at, v2_path], @shared_cache
      )
      @shared_cache.publish_refreshed(@native) if @share_refreshes
      url
    end

    # The string the URL for the same arguments signs: compare it with what
    # Google's SignatureDoesNotMatch error shows to find which part differs.
    def string_to_sign(**request)
      Signing.call("string_to_sign") { @native.string_to_sign(request) }
    end

    # Raw RSA-SHA256 signature of bytes (a binary String). Never cached.
    def sign_blob(bytes)
      raise ArgumentError, "sign_blob needs a String, got #{bytes.class}" unless bytes.is_a?(String)

      Signing.call("signBlob") { @native.sign_blob(bytes) }
    end

    # The signing service account's email (may ask the metadata server once).
    def email
      Signing.call("looking up the service account email") { @native.email }
    end

    # The universe domain this signer signs in ("googleapis.com" unless set).
    def universe_domain
      @native.universe_domain
    end

    # This signer if it signs as `email`, else a signer for that account
    # built the same way (same token, endpoints and options; signBlob with
    # service_account_email: email), one per account. nil when this signer
    # cannot sign as another account: built with credentials: (a key or an
    # impersonation file: their account is fixed), or whatever Application
    # Default Credentials found does not sign through signBlob as asked.
    def for_account(email)
      raise ArgumentError, "email must be a String, got #{email.class}" unless email.is_a?(String)
      return self if email == self.email

      @accounts_lock.synchronize do
        return @accounts[email] if @accounts.key?(email)

        other = @config && identity.start_with?("iam:") ? same_kind(@config.merge(service_account_email: email)) : nil
        # An impersonation file ignores service_account_email: refuse rather than sign as its target.
        @accounts[email] = other && other.email == email ? other : nil
      end
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

    # Test support, not public API (spec/support/manual_clock.rb): a signer
    # whose cache and signing dates read a Native::Testing::ManualClock.
    def self.on_clock(clock, **options)
      unless clock.is_a?(Native::Testing::ManualClock)
        raise ArgumentError, "clock: give a GitlabGcsSigner::Native::Testing::ManualClock"
      end

      signer = allocate
      signer.instance_variable_set(:@clock, clock)
      signer.send(:initialize, **options)
      signer
    end
    private_class_method :on_clock

    def inspect
      shared = @shared_cache ? " shared=#{@shared_cache.inspect}" : ""
      "#<#{self.class.name} #{@identity} cache=#{cache_config.inspect}#{shared}>"
    end
    alias to_s inspect

    private

    # A signer built like this one (on the same simulated clock, if any).
    def same_kind(options)
      @clock ? Signer.send(:on_clock, @clock, **options) : Signer.new(**options)
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
  end
end
