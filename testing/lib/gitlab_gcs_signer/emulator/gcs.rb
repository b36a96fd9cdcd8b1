# frozen_string_literal: true

require "digest"

module GitlabGcsSigner
  module Emulator
    # The GCS XML-API object endpoint, in memory: PUT/GET/HEAD/DELETE /{bucket}/{object}, path style
    # or virtual-hosted ("{bucket}.127.0.0.1:PORT"). Every request must carry a valid V2 or V4
    # signed URL; a failure answers 403 with GCS's XML error (code, message, and the string to sign
    # the emulator computed, which is what GCS returns to help debug a signer).
    class Gcs
      RESPONSE_OVERRIDES = { "response-content-type" => "Content-Type", "response-content-disposition" => "Content-Disposition" }.freeze

      # Verifies with the public key of the account the URL names (the key
      # file's account, or one of others); any other account fails as before.
      def initialize(config:, stats:, objects:, account:, others: [])
        @config = config
        @stats = stats
        @objects = objects
        @v2 = VerifierV2.new(public_key: account.public_key, email: account.email)
        @v4 = VerifierV4.new(public_key: account.public_key, email: account.email)
        @others = others.to_h do |a|
          [a.email, [VerifierV2.new(public_key: a.public_key, email: a.email),
                     VerifierV4.new(public_key: a.public_key, email: a.email)]]
        end
      end

      def count(_request)
        @stats.incr("gcs_requests")
      end

      def call(request)
        result = verify(request)
        return refuse(request, result) unless result.ok?

        @stats.incr("verifications_passed")
        bucket, name = locate(request)
        return error(400, "InvalidURI", "Could not parse the object path.") unless bucket

        perform(request, bucket, name)
      end

      # Picks V4 or V2 from the query and checks the request against the emulator's clock.
      def verify(request)
        keys = SignedRequest.query_pairs(request.raw_query).map(&:first)
        v4 = keys.include?("X-Goog-Algorithm")
        v2 = (keys & %w[GoogleAccessId Signature Expires]).any?
        if v4 && v2
          return SignedRequest::Result.fail(:unknown, "MalformedSecurityHeader", "The query mixes V2 (GoogleAccessId/Signature) and V4 (X-Goog-*) parameters.")
        end
        unless v4 || v2
          return SignedRequest::Result.fail(:none, "AccessDenied", "Anonymous caller does not have storage.objects access; the emulator requires a signed URL.")
        end

        v2_verifier, v4_verifier = @others.fetch(named_account(request, v4)) { [@v2, @v4] }
        verifier = v4 ? v4_verifier : v2_verifier
        verifier.verify(method: request.method, host: request.host, target: request.target, headers: request.headers, now: @config.now)
      end

      def error_reply(status)
        code = status == 429 ? "SlowDown" : "ServiceUnavailable"
        error(status, code, "Emulated fault #{status}.")
      end

      def flavor_headers
        {}
      end

      private

      # The account the URL names (GoogleAccessId, or X-Goog-Credential up to its first "/").
      def named_account(request, v4)
        pairs = SignedRequest.query_pairs(request.raw_query).to_h
        raw = v4 ? pairs["X-Goog-Credential"].to_s.split(/%2F|\//i, 2).first : pairs["GoogleAccessId"]
        SignedRequest.percent_decode(raw.to_s).force_encoding(Encoding::UTF_8)
      rescue SignedRequest::Malformed
        nil
      end

      def refuse(request, result)
        @stats.incr("verifications_failed")
        @stats.failure("gcs #{result.version} #{request.method} #{request.raw_path}: #{result.code}: #{result.message}")
        extra = { "StringToSign" => result.string_to_sign, "CanonicalRequest" => result.canonical_request }.compact
        error(403, result.code, result.message, extra)
      end

      # [bucket, object name] with the name percent-decoded; nil if undecodable.
      def locate(request)
        path = SignedRequest.percent_decode(request.raw_path).force_encoding(Encoding::UTF_8)
        bucket = SignedRequest.virtual_host_bucket(request.host)
        return [bucket, path.delete_prefix("/")] if bucket

        bucket, name = path.delete_prefix("/").split("/", 2)
        bucket.to_s.empty? ? nil : [bucket, name.to_s]
      rescue SignedRequest::Malformed
        nil
      end

      def perform(request, bucket, name)
        case [request.method, name.empty?]
        when ["GET", true] then list(bucket)
        when ["GET", false], ["HEAD", false] then read(request, bucket, name)
        when ["PUT", false] then write(request, bucket, name)
        when ["DELETE", false]
          @objects.delete(bucket, name) ? Reply.new(204, {}, "") : no_such_key
        else error(501, "NotImplemented", "#{request.method} #{name.empty? ? 'on a bucket' : 'on an object'} is not emulated.")
        end
      end

      def read(request, bucket, name)
        object = @objects.get(bucket, name)
        return no_such_key unless object

        headers = { "Content-Type" => object.content_type, "ETag" => object.etag,
                    "x-goog-hash" => "md5=#{[[object.md5].pack('H*')].pack('m0')}" }
        # V2 does not sign these parameters; GCS honours them on GET (GitLab's download redirects).
        if request.method == "GET"
          request.params.each { |key, value| headers[RESPONSE_OVERRIDES[key]] = value if RESPONSE_OVERRIDES.key?(key) }
        end
        Reply.new(200, headers, object.body)
      end

      def write(request, bucket, name)
        body = request.body
        md5 = request.header("content-md5")
        if md5 && md5 != [Digest::MD5.digest(body)].pack("m0")
          return error(400, "BadDigest", "The Content-MD5 you specified did not match what was received.")
        end

        object = @objects.put(bucket, name, body, request.header("content-type"))
        Reply.new(200, { "ETag" => object.etag }, "")
      end

      def list(bucket)
        contents = @objects.list(bucket).map do |object|
          "<Contents><Key>#{xml(object.name)}</Key><Size>#{object.body.bytesize}</Size><ETag>#{xml(object.etag)}</ETag></Contents>"
        end
        Reply.xml(200, "<?xml version='1.0' encoding='UTF-8'?><ListBucketResult><Name>#{xml(bucket)}</Name>#{contents.join}</ListBucketResult>")
      end

      def no_such_key
        error(404, "NoSuchKey", "The specified key does not exist.")
      end

      def error(status, code, message, extra = {})
        fields = { "Code" => code, "Message" => message }.merge(extra)
        Reply.xml(status, "<?xml version='1.0' encoding='UTF-8'?><Error>#{fields.map { |k, v| "<#{k}>#{xml(v)}</#{k}>" }.join}</Error>")
      end

      def xml(text)
        text.to_s.gsub(/[&<>"']/, "&" => "&amp;", "<" => "&lt;", ">" => "&gt;", '"' => "&quot;", "'" => "&apos;")
      end
    end
  end
end
