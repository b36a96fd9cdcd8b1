# frozen_string_literal: true

require "openssl"
require "time"

module GitlabGcsSigner
  module Emulator
    # Verifies a V4 (GOOG4-RSA-SHA256) signed URL by rebuilding the canonical request from the
    # request as received, following Google's documents:
    #   signing-urls-manually:  docs/access-control/signing-urls-manually (query parameters)
    #   canonical-requests:     docs/authentication/canonical-requests
    #   signatures:             docs/authentication/signatures#string-to-sign
    # (all under cloud.google.com/storage/). Checked against googleapis/conformance-tests' 29 vectors.
    class VerifierV4
      ALGORITHM = "GOOG4-RSA-SHA256"
      SECURITY_PARAMS = %w[X-Goog-Algorithm X-Goog-Credential X-Goog-Date X-Goog-Expires X-Goog-SignedHeaders X-Goog-Signature].freeze
      MAX_EXPIRES = 604_800 # 7 days (signing-urls-manually: X-Goog-Expires)
      CLOCK_SKEW = 60
      # canonical-requests: "Characters that must not be encoded: A-Z a-z 0-9 - . _ ~" (and "/" in the path).
      UNRESERVED = /[^A-Za-z0-9\-._~]/n.freeze
      UNRESERVED_AND_SLASH = %r{[^A-Za-z0-9\-._~/]}n.freeze

      def initialize(public_key:, email:)
        @public_key = public_key
        @email = email
      end

      # +target+ is the raw "path?query" of the request line; +host+ the Host header; +headers+ a
      # Hash name => String or Array of Strings; +now+ epoch seconds.
      def verify(method:, host:, target:, headers:, now:)
        raw_path, raw_query = SignedRequest.split_target(target)
        pairs = SignedRequest.query_pairs(raw_query)
        params = security_params(pairs)
        date, scope, expires = check_credential(params)
        canonical = canonical_request(method, raw_path, pairs, params["X-Goog-SignedHeaders"], host, headers)
        string_to_sign = [ALGORITHM, params["X-Goog-Date"], scope, OpenSSL::Digest::SHA256.hexdigest(canonical)].join("\n")
        judge(params["X-Goog-Signature"], string_to_sign, canonical, date, expires, now)
      rescue SignedRequest::Malformed => e
        SignedRequest::Result.fail(:v4, "MalformedSecurityHeader", e.message)
      end

      # canonical-requests: VERB \n PATH \n QUERY \n HEADERS \n \n SIGNED_HEADERS \n PAYLOAD
      def canonical_request(method, raw_path, pairs, signed_headers, host, headers)
        names = signed_header_names(signed_headers)
        header_lines = names.map { |name| "#{name}:#{canonical_header_value(name, host, headers)}\n" }.join
        [method, canonical_path(raw_path), canonical_query(pairs), header_lines, signed_headers, payload(names, headers)].join("\n")
      end

      # The path as received, decoded then re-encoded so that equivalent spellings ("%7E" vs "~")
      # canonicalise alike; "/" is kept, so "a%2Fb" and "a/b" are the same resource.
      def canonical_path(raw_path)
        encode(SignedRequest.percent_decode(raw_path), UNRESERVED_AND_SLASH)
      end

      # Every query parameter but X-Goog-Signature, names and values decoded and re-encoded, space
      # as %20, sorted by code point (of the encoded form, which is ASCII).
      def canonical_query(pairs)
        pairs.reject { |key, _| key == "X-Goog-Signature" }.map do |key, value|
          # '+' means space in form encoding and '+' in RFC 3986; a URL relying on either reading
          # is ambiguous, so the emulator refuses it rather than guess (a signer must write %20 or %2B).
          raise SignedRequest::Malformed, "query parameter #{key.inspect} contains a raw '+'; encode it as %20 or %2B" if "#{key}#{value}".include?("+")

          [encode(SignedRequest.percent_decode(key), UNRESERVED), encode(SignedRequest.percent_decode(value), UNRESERVED)]
        end.sort.map { |key, value| "#{key}=#{value}" }.join("&")
      end

      private

      def encode(bytes, pattern)
        bytes.gsub(pattern) { |char| format("%%%02X", char.ord) }
      end

      def security_params(pairs)
        SECURITY_PARAMS.to_h do |name|
          values = pairs.select { |key, _| key == name }.map { |_, value| SignedRequest.percent_decode(value).force_encoding(Encoding::UTF_8) }
          raise SignedRequest::Malformed, "missing query parameter #{name}" if values.empty?
          raise SignedRequest::Malformed, "query parameter #{name} appears #{values.size} times" if values.size > 1

          [name, values.first]
        end
      end

      # X-Goog-Credential = EMAIL/YYYYMMDD/LOCATION/storage/goog4_request; returns [date, scope, expires].
      def check_credential(params)
        raise SignedRequest::Malformed, "X-Goog-Algorithm must be #{ALGORITHM}, got #{params['X-Goog-Algorithm'].inspect}" unless params["X-Goog-Algorithm"] == ALGORITHM

        email, day, location, service, request = params["X-Goog-Credential"].split("/", -1)
        unless request == "goog4_request" && service == "storage" && location.to_s != "" && day.to_s.match?(/\A\d{8}\z/)
          raise SignedRequest::Malformed, "X-Goog-Credential must be EMAIL/YYYYMMDD/auto/storage/goog4_request"
        end
        raise SignedRequest::Malformed, "X-Goog-Credential is for #{email}, not #{@email}" unless email == @email

        date = parse_date(params["X-Goog-Date"])
        raise SignedRequest::Malformed, "X-Goog-Credential date #{day} differs from X-Goog-Date" unless params["X-Goog-Date"].start_with?(day)

        expires = params["X-Goog-Expires"]
        raise SignedRequest::Malformed, "X-Goog-Expires must be an integer from 1 to #{MAX_EXPIRES}" unless expires.match?(/\A\d+\z/) && expires.to_i.between?(1, MAX_EXPIRES)

        [date, [day, location, service, request].join("/"), expires.to_i]
      end

      def parse_date(text)
        raise SignedRequest::Malformed, "X-Goog-Date must be YYYYMMDD'T'HHMMSS'Z'" unless text.match?(/\A\d{8}T\d{6}Z\z/)

        Time.strptime(text, "%Y%m%dT%H%M%S%z").to_i
      rescue ArgumentError
        raise SignedRequest::Malformed, "X-Goog-Date is not a valid time"
      end

      def signed_header_names(value)
        names = value.split(";", -1)
        unless !names.empty? && names.all? { |name| !name.empty? && name == name.downcase } && names == names.sort.uniq
          raise SignedRequest::Malformed, "X-Goog-SignedHeaders must be lower-case names, sorted, unique, ';'-separated"
        end
        raise SignedRequest::Malformed, "X-Goog-SignedHeaders must include host" unless names.include?("host")

        names
      end

      # canonical-requests: values trimmed, inner whitespace runs collapsed; host is signed without port.
      def canonical_header_value(name, host, headers)
        value = name == "host" ? SignedRequest.host_without_port(host) : SignedRequest.header(headers, name)
        raise SignedRequest::Malformed, "signed header #{name.inspect} is missing from the request" if value.nil?

        # HTTP whitespace is space and tab (RFC 9110 section 5.6.3; CR LF only in obsolete line
        # folding): a form feed or vertical tab is a byte of the value, which Ruby's \s and strip
        # would take for whitespace.
        value.gsub(/\A[ \t\r\n]+|[ \t\r\n]+\z/, "").gsub(/[ \t\r\n]+/, " ")
      end

      def payload(names, headers)
        return "UNSIGNED-PAYLOAD" unless names.include?("x-goog-content-sha256")

        SignedRequest.header(headers, "x-goog-content-sha256").strip
      end

      def judge(signature_hex, string_to_sign, canonical, date, expires, now)
        fail_with = ->(code, message) { SignedRequest::Result.fail(:v4, code, message, string_to_sign: string_to_sign, canonical_request: canonical) }
        return fail_with.call("MalformedSecurityHeader", "X-Goog-Signature must be lower-case hex") unless signature_hex.match?(/\A(?:[0-9a-f]{2})+\z/)
        unless @public_key.verify(OpenSSL::Digest.new("SHA256"), [signature_hex].pack("H*"), string_to_sign)
          return fail_with.call("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
        end
        if now < date - CLOCK_SKEW
          return fail_with.call("AccessDenied", "Request is not valid yet: X-Goog-Date is #{(date - now).round} s in the future")
        end
        return fail_with.call("ExpiredToken", "The provided token has expired. Request signature expired at: #{Time.at(date + expires).utc.iso8601}") if now > date + expires

        SignedRequest::Result.pass(:v4, string_to_sign, canonical)
      end
    end
  end
end
