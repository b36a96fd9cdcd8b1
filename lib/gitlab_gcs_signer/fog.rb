# frozen_string_literal: true

require "gitlab_gcs_signer"

module GitlabGcsSigner
  # The fog-google shim: prepends fog-google's URL generation so that every
  # signed URL in the process (CarrierWave, GitLab's direct uploads) comes
  # from one GitlabGcsSigner::Signer: one token, one cache, no per-upload
  # IAM client.
  #
  #   require "gitlab_gcs_signer/fog"
  #   GitlabGcsSigner::Fog.install!(signer: GitlabGcsSigner.default_signer, version: :v2)
  #
  # URLs keep the installed fog-google's exact shape (host, path encoding,
  # query order), so nothing downstream notices, except that keyless signing
  # works (fog-google 1.15 on Ruby 3 raises ArgumentError there) and that
  # repeated URLs cost no signBlob call.
  module Fog
    # fog-google's storage class, by version: <= 1.24 and >= 1.25.
    REAL_CLASSES = %w[Fog::Storage::GoogleJSON::Real Fog::Google::StorageJSON::Real].freeze
    # The first fog-google with Fog::Google::StorageJSON (and without Fog::Storage::GoogleJSON).
    STORAGE_JSON_SINCE = Gem::Version.new("1.25.0")
    # Google's public cloud; fog-google before 1.29 knows no other.
    DEFAULT_UNIVERSE = "googleapis.com"

    @lock = Mutex.new
    @installed = []
    @key_signers = {}
    @warned = {}

    class << self
      attr_reader :version, :sign_keyed

      # Globally off (`GitlabGcsSigner::Fog.enabled = false`, or
      # GITLAB_GCS_SIGNER_DISABLE=1 when install! runs) sends every call back
      # to fog's own code. Connections re-check it only when
      # GitlabGcsSigner.generation changes: nothing of this is read on a
      # cache hit.
      def enabled=(value)
        @enabled = value
        GitlabGcsSigner.settings_changed
      end

      def enabled
        @enabled != false && !@env_disabled
      end

      # signer:     the signer for connections without a private key.
      # version:    :v2 (fog-google's own URL shape) or :v4.
      # sign_keyed: also route connections that carry a private key through
      #             the gem (local signing, cached); false leaves them to fog.
      # Idempotent. Loads fog-google if it is not loaded yet and patches its
      # storage class at once (resolving the autoloaded constant loads it):
      # no TracePoint or other process-wide hook.
      def install!(signer: nil, version: :v2, sign_keyed: true)
        raise ArgumentError, "version must be :v2 or :v4, got #{version.inspect}" unless %i[v2 v4].include?(version)
        unless signer.nil? || signer.is_a?(GitlabGcsSigner::Signer)
          raise ArgumentError, "signer must be a GitlabGcsSigner::Signer, got #{signer.class}"
        end

        @lock.synchronize do
          @signer = signer
          @version = version
          @sign_keyed = sign_keyed
          @enabled = true if @enabled.nil?
          @env_disabled = !ENV["GITLAB_GCS_SIGNER_DISABLE"].to_s.empty?
          GitlabGcsSigner.settings_changed
          patch_real_class
        end
        self
      end

      def installed?
        !@installed.empty?
      end

      # The signer for keyless connections (the default signer unless one was given).
      def signer
        @signer || GitlabGcsSigner.default_signer
      end

      # One cached signer per private key (and universe), so a new
      # Fog::Storage per upload still shares one cache.
      def key_signer(authorization, universe = DEFAULT_UNIVERSE)
        pem = authorization.signing_key.to_pem
        email = authorization.issuer
        id = [email, OpenSSL::Digest::SHA256.hexdigest(pem), universe].join(":")
        @lock.synchronize do
          @key_signers[id] ||= GitlabGcsSigner::Signer.new(
            credentials: { "type" => "service_account", "client_email" => email, "private_key" => pem },
            universe_domain: universe
          )
        end
      end

      # The signer for a connection with this authorization in this
      # universe, or nil to leave the connection to fog. Keyless connections
      # sign as the account fog itself would use (Real#google_access_id: the
      # authorization's issuer, else the metadata server's account).
      def signer_for(authorization, universe)
        if authorization.respond_to?(:signing_key) && authorization.signing_key
          return sign_keyed ? key_signer(authorization, universe) : nil
        end

        default = signer
        account = fog_account(authorization)
        chosen =
          case account
          when :default then default
          when String then default.for_account(account)
          end
        if chosen.nil?
          warn_once(authorization.class, account, default)
          return nil
        end
        check_universe(chosen, universe)
        chosen
      end

      # What the shim passes as signed_url's v2_path for fog-google's path
      # encoding in V2 URLs: nil (its own escaping up to 1.20, the core's
      # default) or :addressable (Addressable's path encoding from 1.21,
      # fog-google v1.21.0 lib/fog/storage/google_json/utils.rb; done natively).
      def v2_path_encoding
        addressable_paths? ? :addressable : nil
      end

      private

      # The account fog-google signs as: :default (the metadata server's
      # account, which the default signer signs as), an email, or nil when
      # fog would not sign as any account the gem can name.
      def fog_account(authorization)
        return :default if authorization.nil?

        issuer = authorization.respond_to?(:issuer) ? authorization.issuer : nil
        return issuer.to_s if issuer && !issuer.to_s.empty?
        return :default if defined?(::Google::Auth::GCECredentials) && authorization.is_a?(::Google::Auth::GCECredentials)

        nil
      end

      def check_universe(chosen, universe)
        return if chosen.universe_domain == universe

        raise GitlabGcsSigner::UniverseMismatchError,
              "this fog-google connection is in the universe domain #{universe.inspect} but its signer " \
              "(#{chosen.identity}) signs in #{chosen.universe_domain.inspect}: its URLs would be signed " \
              "against the wrong endpoint. Build the signer with universe_domain: #{universe.inspect} " \
              "(or GOOGLE_CLOUD_UNIVERSE_DOMAIN), or give the connection the signer's universe"
      end

      def warn_once(auth_class, account, default)
        key = [auth_class, account]
        return if @lock.synchronize { @warned.key?(key) || !(@warned[key] = true) }

        what = account ? "as #{account}" : "with #{auth_class} credentials"
        GitlabGcsSigner.logger.warn do
          "gitlab-gcs-signer: a fog-google connection signs #{what}, which the gem's signer " \
            "(#{default.identity}) cannot sign as; leaving such connections to fog-google"
        end
      end

      def addressable_paths?
        return @addressable_paths unless @addressable_paths.nil?

        @addressable_paths = fog_google_version >= Gem::Version.new("1.21.0")
      end

      def fog_google_version
        Gem::Version.new(::Fog::Google::VERSION)
      end

      # fog-google's storage classes are autoloaded: naming the class loads it.
      def patch_real_class
        require "fog/google" unless defined?(::Fog::Google::VERSION)
        klass = fog_google_version >= STORAGE_JSON_SINCE ? ::Fog::Google::StorageJSON::Real : ::Fog::Storage::GoogleJSON::Real
        klass.prepend(Patch) unless klass.ancestors.include?(Patch)
        @installed |= [klass.name]
      end
    end

    # Prepended to fog-google's Real storage class. Each method turns fog's
    # arguments into one signed_url call and nothing more: on a cache hit
    # that is one memo check, one small Array and one native call.
    module Patch
      # Per-connection switch: `connection.gitlab_gcs_signer = false`.
      def gitlab_gcs_signer=(value)
        @gitlab_gcs_signer = value
        @gcs_signer_generation = nil # picked again on the next URL
      end

      def get_object_https_url(bucket_name, object_name, expires, options = {})
        gcs_signer_url("GET", "https", bucket_name, object_name, expires, options[:query], nil) || super
      end

      def get_object_http_url(bucket_name, object_name, expires, options = {})
        gcs_signer_url("GET", "http", bucket_name, object_name, expires, options[:query], nil) || super
      end

      def put_object_url(bucket_name, object_name, expires, headers = {})
        gcs_signer_url("PUT", "https", bucket_name, object_name, expires, nil, headers) || super
      end

      def delete_object_url(bucket_name, object_name, expires)
        gcs_signer_url("DELETE", "https", bucket_name, object_name, expires, nil, nil) || super
      end

      private

      # Any other URL fog builds itself (Real#signature) signs here when the
      # connection has no key: fog's own IAM client asked for the wrong scope
      # before 1.24.1 and cannot be called on Ruby 3 in 1.15 (docs/facts.md#fog-url-path).
      def iam_signer(string_to_sign)
        signer = gcs_signer
        signer ? signer.sign_blob(string_to_sign) : super
      end

      # fog's GoogleAccessId for those URLs: the signer's account.
      def google_access_id
        signer = gcs_signer
        signer ? signer.email : super
      end

      # The signer for this connection, or nil to leave it to fog: picked
      # once per connection, again only when its authorization is replaced
      # or GitlabGcsSigner.generation changes (a new default signer,
      # install!, Fog.enabled=, gitlab_gcs_signer=).
      def gcs_signer
        auth = @storage_json&.authorization
        return @gcs_signer_chosen if @gcs_signer_generation == GitlabGcsSigner.generation && auth.equal?(@gcs_signer_auth)

        gcs_signer_pick(auth)
      end

      def gcs_signer_pick(auth)
        generation = GitlabGcsSigner.generation # read first: a change meanwhile re-picks
        fog = GitlabGcsSigner::Fog
        chosen = @gitlab_gcs_signer != false && fog.enabled ? fog.signer_for(auth, gcs_signer_universe) : nil
        version = fog.version || :v2
        @gcs_signer_generation = nil # set last: a concurrent reader never sees a half-written memo
        @gcs_signer_auth = auth
        @gcs_signer_chosen = chosen
        # What every URL of this connection passes along, worked out once.
        @gcs_signer_version = version
        @gcs_signer_v2_path = version == :v2 ? fog.v2_path_encoding : nil
        @gcs_signer_generation = generation
        chosen
      end

      # The connection's universe domain: fog-google 1.29's universe_domain
      # option or GOOGLE_CLOUD_UNIVERSE_DOMAIN; googleapis.com before 1.29.
      def gcs_signer_universe
        universe = respond_to?(:universe_domain, true) ? universe_domain.to_s.strip.downcase : ""
        universe.empty? ? GitlabGcsSigner::Fog::DEFAULT_UNIVERSE : universe
      end

      # fog's arguments as signed_url's positional request
      # (Signer#fog_signed_url), or nil to leave the call to fog. Headers and
      # query go as fog got them: the native side takes Symbol names and
      # Numeric values, and leaves out query entries with a nil name or
      # value, as fog-google does.
      def gcs_signer_url(method, scheme, bucket_name, object_name, expires, query, headers)
        signer = gcs_signer
        return nil unless signer
        raise ArgumentError, "bucket_name is required" unless bucket_name
        raise ArgumentError, "object_name is required" unless object_name

        signer.fog_signed_url(
          @gcs_signer_version, method, scheme, @host, bucket_name.to_s, object_name.to_s,
          headers, query, expires, @gcs_signer_v2_path
        )
      end
    end
  end
end
