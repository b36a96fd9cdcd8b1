# frozen_string_literal: true

require "openssl"
require "time"

module GitlabGcsSigner
  module Emulator
    # Verifies a V2 signed URL (GoogleAccessId, Expires, Signature), following Google's
    # "V2 signing process" (cloud.google.com/storage/docs/access-control/signed-urls-v2):
    #
    #   StringToSign = HTTP_Verb \n Content_MD5 \n Content_Type \n Expires \n
    #                  Canonicalized_Extension_Headers Canonicalized_Resource
    #
    # The canonical resource is the path exactly as it appears in the request (still
    # percent-encoded, never re-encoded): every fog-google version encodes paths its own way and GCS
    # signs what it receives (field notes, section 4).
    class VerifierV2
      # Query parameters that name a sub-resource and so belong to the canonical resource ("?acl").
      SUB_RESOURCES = %w[acl billing compose cors defaultObjectAcl encryption lifecycle location logging
                         requestPayment storageClass tagging versioning versions websiteConfig].freeze

      def initialize(public_key:, email:)
        @public_key = public_key
        @email = email
      end

      # Same inputs as VerifierV4#verify.
      def verify(method:, host:, target:, headers:, now:)
        raw_path, raw_query = SignedRequest.split_target(target)
        pairs = SignedRequest.query_pairs(raw_query)
        access_id, expires, signature = credentials(pairs)
        string_to_sign = string_to_sign(method, host, raw_path, pairs, headers, expires)
        judge(access_id, signature, string_to_sign, expires.to_i, now)
      rescue SignedRequest::Malformed => e
        SignedRequest::Result.fail(:v2, "MalformedSecurityHeader", e.message)
      end

      def string_to_sign(method, host, raw_path, pairs, headers, expires)
        [
          method,
          SignedRequest.header(headers, "content-md5").to_s.strip,
          SignedRequest.header(headers, "content-type").to_s.strip,
          expires,
          extension_headers(headers) + canonical_resource(host, raw_path, pairs)
        ].join("\n")
      end

      # The V2 page's "Canonical extension headers" steps leave out the customer-supplied encryption
      # key and its hash: secrets that the request sends but the string to sign never holds.
      UNSIGNED_EXTENSION_HEADERS = %w[x-goog-encryption-key x-goog-encryption-key-sha256].freeze

      # x-goog-* headers: names lower-cased and sorted, repeated headers joined with ",", folding
      # whitespace replaced by one space, no whitespace around the colon, one "\n" after each.
      def extension_headers(headers)
        names = headers.keys.map { |name| name.to_s.downcase }.select { |name| name.start_with?("x-goog-") }.uniq.sort
        names -= UNSIGNED_EXTENSION_HEADERS
        names.map do |name|
          value = Array(headers.select { |key, _| key.to_s.downcase == name }.values).flatten.join(",")
          "#{name}:#{value.gsub(/\s*\r?\n\s*/, ' ').strip}\n"
        end.join
      end

      # "/bucket/object" as received; a virtual-hosted request names the bucket in Host instead.
      def canonical_resource(host, raw_path, pairs)
        bucket = SignedRequest.virtual_host_bucket(host)
        resource = bucket ? "/#{bucket}#{raw_path}" : raw_path
        sub = pairs.map(&:first).select { |key| SUB_RESOURCES.include?(key) }
        sub.empty? ? resource : "#{resource}?#{sub.join('&')}"
      end

      private

      def credentials(pairs)
        values = %w[GoogleAccessId Expires Signature].map do |name|
          found = pairs.select { |key, _| key == name }
          raise SignedRequest::Malformed, "missing query parameter #{name}" if found.empty?
          raise SignedRequest::Malformed, "query parameter #{name} appears #{found.size} times" if found.size > 1

          found.first.last
        end
        access_id, expires, signature = values
        raise SignedRequest::Malformed, "Expires must be an integer epoch time" unless expires.match?(/\A\d+\z/)
        # CGI.escape writes '+' as %2B; a raw '+' would be a space to a form decoder and '+' to
        # others, so refuse it instead of guessing.
        raise SignedRequest::Malformed, "Signature contains a raw '+'; escape it as %2B" if signature.include?("+")

        [SignedRequest.percent_decode(access_id).force_encoding(Encoding::UTF_8), expires, decode_signature(signature)]
      end

      # fog-google sends Base64.encode64 output, which has a "\n" every 60 characters (%0A in the URL):
      # GCS accepts it, so whitespace is dropped before strict decoding.
      def decode_signature(raw)
        SignedRequest.percent_decode(raw).gsub(/\s+/, "").unpack1("m0")
      rescue ArgumentError
        raise SignedRequest::Malformed, "Signature is not valid base64"
      end

      def judge(access_id, signature, string_to_sign, expires, now)
        fail_with = ->(code, message) { SignedRequest::Result.fail(:v2, code, message, string_to_sign: string_to_sign) }
        return fail_with.call("AccessDenied", "GoogleAccessId #{access_id} is not the emulator's service account #{@email}") unless access_id == @email
        unless @public_key.verify(OpenSSL::Digest.new("SHA256"), signature, string_to_sign)
          return fail_with.call("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
        end
        return fail_with.call("ExpiredToken", "The provided token has expired. Request signature expired at: #{Time.at(expires).utc.iso8601}") if now > expires

        SignedRequest::Result.pass(:v2, string_to_sign)
      end
    end
  end
end
