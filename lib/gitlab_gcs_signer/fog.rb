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

    @lock = Mutex.new
    @installed = []
    @key_signers = {}

    class << self
      # Globally off (`GitlabGcsSigner::Fog.enabled = false`, or
      # GITLAB_GCS_SIGNER_DISABLE=1) sends every call back to fog's own code.
      attr_writer :enabled
      attr_reader :version, :sign_keyed

      def enabled
        @enabled != false && ENV["GITLAB_GCS_SIGNER_DISABLE"].to_s.empty?
      end

      # signer:     the signer for connections without a private key.
      # version:    :v2 (fog-google's own URL shape) or :v4.
      # sign_keyed: also route connections that carry a private key through
      #             the gem (local signing, cached); false leaves them to fog.
      # Idempotent; may run before fog-google is loaded (it then patches at
      # the first `Fog::Storage.new`).
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
          patch_loaded_classes
          watch_for_fog unless @installed.size == REAL_CLASSES.size
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

      # One cached signer per private key, so a new Fog::Storage per upload
      # still shares one cache.
      def key_signer(authorization)
        pem = authorization.signing_key.to_pem
        email = authorization.issuer
        id = [email, OpenSSL::Digest::SHA256.hexdigest(pem)].join(":")
        @lock.synchronize do
          @key_signers[id] ||= GitlabGcsSigner::Signer.new(
            credentials: { "type" => "service_account", "client_email" => email, "private_key" => pem }
          )
        end
      end

      # fog-google's path encoding for V2 URLs: its own escaping up to 1.20,
      # Addressable's path encoding from 1.21 (docs/facts.md#fog-path-encoding). nil means
      # "fog-google 1.15's", which the core implements.
      def v2_path(bucket, object)
        return nil unless addressable_paths?

        ::Addressable::URI.encode_component("#{bucket}/#{object}", ::Addressable::URI::CharacterClasses::PATH)
      end

      private

      def addressable_paths?
        return @addressable_paths unless @addressable_paths.nil?

        @addressable_paths = Gem::Version.new(::Fog::Google::VERSION) >= Gem::Version.new("1.21.0")
        require "addressable/uri" if @addressable_paths
        @addressable_paths
      end

      def patch_loaded_classes
        REAL_CLASSES.each do |name|
          next if @installed.include?(name)

          klass = resolve(name)
          next unless klass

          klass.prepend(Patch)
          @installed << name
        end
      end

      def resolve(name)
        name.split("::").reduce(Object) do |scope, part|
          return nil unless scope.const_defined?(part, false)

          scope.const_get(part, false)
        end
      end

      # fog-google loads its storage classes lazily; patch them as soon as
      # the first storage connection is built.
      def watch_for_fog
        return if @watching

        @watching = TracePoint.new(:end) do |tp|
          next unless tp.self.is_a?(Module) && tp.self.name&.end_with?("StorageJSON::Real", "GoogleJSON::Real")

          @lock.synchronize { patch_loaded_classes }
          tp.disable
        end
        @watching.enable
      end
    end

    # Prepended to fog-google's Real storage class. Each method turns fog's
    # arguments into a signed_url call and nothing more.
    module Patch
      # Per-connection switch: `connection.gitlab_gcs_signer = false`.
      attr_writer :gitlab_gcs_signer

      def get_object_https_url(bucket_name, object_name, expires, options = {})
        gcs_signer_url("GET", "https", bucket_name, object_name, expires, options[:query]) { super }
      end

      def get_object_http_url(bucket_name, object_name, expires, options = {})
        gcs_signer_url("GET", "http", bucket_name, object_name, expires, options[:query]) { super }
      end

      def put_object_url(bucket_name, object_name, expires, headers = {})
        gcs_signer_url("PUT", "https", bucket_name, object_name, expires, nil, headers) { super }
      end

      def delete_object_url(bucket_name, object_name, expires)
        gcs_signer_url("DELETE", "https", bucket_name, object_name, expires) { super }
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

      # The signer for this connection, or nil to leave it to fog.
      def gcs_signer
        return nil if @gitlab_gcs_signer == false || !GitlabGcsSigner::Fog.enabled

        auth = @storage_json&.authorization
        if auth.respond_to?(:signing_key) && auth.signing_key
          GitlabGcsSigner::Fog.sign_keyed ? GitlabGcsSigner::Fog.key_signer(auth) : nil
        else
          GitlabGcsSigner::Fog.signer
        end
      end

      def gcs_signer_url(method, scheme, bucket_name, object_name, expires, query = nil, headers = nil)
        signer = gcs_signer
        return yield unless signer
        raise ArgumentError, "bucket_name is required" unless bucket_name
        raise ArgumentError, "object_name is required" unless object_name

        version = GitlabGcsSigner::Fog.version || :v2
        object = object_name.to_s
        signer.signed_url(
          version: version, method: method, scheme: scheme, host: @host,
          bucket: bucket_name.to_s, object: object,
          headers: (headers || {}).transform_keys(&:to_s),
          query: (query || {}).reject { |k, v| k.nil? || v.nil? }.to_h { |k, v| [k.to_s, v.to_s] },
          expires_at: expires,
          v2_path: version == :v2 ? GitlabGcsSigner::Fog.v2_path(bucket_name, object) : nil
        )
      end
    end
  end
end
