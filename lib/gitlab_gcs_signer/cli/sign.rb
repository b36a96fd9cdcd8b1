# frozen_string_literal: true

require_relative "fixes"
require_relative "../errors"
require_relative "../../gitlab_gcs_signer" # GitlabGcsSigner::DEFAULTS

module GitlabGcsSigner
  module CLI
    # `gitlab-gcs-signer sign gs://BUCKET/OBJECT`: prints one signed URL,
    # signed exactly as the application would sign it (same Signer, same
    # credentials discovery).
    class Sign < Command
      NAME = "sign"
      DEFAULT_EXPIRES = 900

      def parser
        @options.merge!(method: "GET", expires: DEFAULT_EXPIRES, version: :v4, headers: {}, query: {})
        new_parser("gs://BUCKET[/OBJECT] [options]", <<~TEXT).tap do |p|
          Prints a signed URL (V4 by default). A bucket alone gives a V4 bucket-level URL.
          Credentials: --credentials FILE, else Application Default Credentials (a key
          file, or the metadata server and IAM signBlob).
        TEXT
          p.on("-X", "--method METHOD", "HTTP method (default GET)") { |v| @options[:method] = v.upcase }
          p.on("-e", "--expires SECONDS", Integer, "lifetime in seconds (default #{DEFAULT_EXPIRES}; V4: at most #{GitlabGcsSigner::DEFAULTS[:limits][:v4_max_expires_in]})") { |v| @options[:expires] = v }
          p.on("--v4", "V4 signature (GOOG4-RSA-SHA256; the default)") { @options[:version] = :v4 }
          p.on("--v2", "V2 signature (GoogleAccessId/Expires/Signature, as fog-google)") { @options[:version] = :v2 }
          p.on("-H", "--header NAME:VALUE", "a header the request will send (signed; repeatable)") { |v| pair(:headers, v, ":", "--header") }
          p.on("-q", "--query NAME=VALUE", "a query parameter (repeatable)") { |v| pair(:query, v, "=", "--query") }
          p.on("--credentials FILE", "a service_account or impersonated_service_account JSON file") { |v| @options[:credentials] = v }
          p.on("--service-account EMAIL", "sign as this account via signBlob (default: the credentials')") { |v| @options[:service_account] = v }
          p.on("--metadata-host HOST", "metadata server host[:port] (default: GCE_METADATA_HOST, else 169.254.169.254)") { |v| @options[:metadata_host] = v }
          p.on("--iam-endpoint URL", "IAM Credentials base URL (default: GCS_SIGNER_IAM_ENDPOINT, else Google's)") { |v| @options[:iam_endpoint] = v }
        end
      end

      def run(operands)
        raise UsageError, "give exactly one gs://BUCKET/OBJECT" unless operands.size == 1
        raise UsageError, "--expires must be a positive number of seconds" unless @options[:expires].positive?

        bucket, object = parse_gs(operands.first)
        raise UsageError, "a bucket-level URL (no object) is V4 only" if object.nil? && @options[:version] == :v2

        require_relative "../../gitlab_gcs_signer"
        out.puts signer.signed_url(bucket: bucket, object: object, method: @options[:method],
                                   expires_in: @options[:expires], version: @options[:version],
                                   headers: @options[:headers], query: @options[:query])
        EX_OK
      rescue GitlabGcsSigner::Error => e
        err.puts "#{PROGRAM} #{NAME}: #{e.class.name}: #{e.message}"
        err.puts "fix: #{Fixes.for(e, email: known_email)}"
        EX_FAILURE
      rescue ArgumentError => e
        raise UsageError, e.message
      end

      private

      # The signing account, if known without another failing call.
      def known_email
        @options[:service_account] || @signer&.email
      rescue GitlabGcsSigner::Error
        nil
      end

      def signer
        @signer = GitlabGcsSigner::Signer.new(credentials: @options[:credentials], service_account_email: @options[:service_account],
                                    metadata_host: @options[:metadata_host], iam_endpoint: @options[:iam_endpoint],
                                    # One URL, exactly as long-lived as asked (the cache would extend it).
                                    cache: false)
      end

      def pair(kind, text, separator, flag)
        name, value = text.split(separator, 2)
        raise OptionParser::InvalidArgument, "#{flag} #{text} (expected NAME#{separator}VALUE)" if value.nil? || name.strip.empty?

        @options[kind][name.strip] = kind == :headers ? value.strip : value
      end

      # gs://bucket/some/object -> ["bucket", "some/object"]; gs://bucket -> ["bucket", nil].
      def parse_gs(text)
        match = text.match(%r{\Ags://(?<bucket>[^/]+)(?:/(?<object>.*))?\z})
        raise UsageError, "expected gs://BUCKET/OBJECT, got #{text.inspect}" unless match

        object = match[:object]
        [match[:bucket], object.nil? || object.empty? ? nil : object]
      end
    end
  end
end
