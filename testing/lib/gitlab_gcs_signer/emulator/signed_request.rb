# frozen_string_literal: true

module GitlabGcsSigner
  module Emulator
    # Pieces both verifiers need: the raw request target split without any decoding, strict
    # percent-decoding, the Host rules, and the verification result. Canonicalisation itself lives
    # in VerifierV2 / VerifierV4, each following its own Google document.
    module SignedRequest
      # code is the GCS XML error code (SignatureDoesNotMatch, ExpiredToken, AccessDenied,
      # MalformedSecurityHeader); string_to_sign / canonical_request are what the emulator computed,
      # returned in the error body as GCS does, to show a signer where it diverged.
      Result = Struct.new(:ok, :version, :code, :message, :string_to_sign, :canonical_request, keyword_init: true) do
        def ok?
          ok
        end

        def self.pass(version, string_to_sign, canonical_request = nil)
          new(ok: true, version: version, string_to_sign: string_to_sign, canonical_request: canonical_request)
        end

        def self.fail(version, code, message, string_to_sign: nil, canonical_request: nil)
          new(ok: false, version: version, code: code, message: message,
              string_to_sign: string_to_sign, canonical_request: canonical_request)
        end
      end

      # Raised while parsing; turned into a MalformedSecurityHeader result.
      class Malformed < StandardError; end

      # Buckets addressed as "{bucket}.127.0.0.1" or "{bucket}.localhost" (virtual-hosted style).
      VIRTUAL_HOST = /\A(?<bucket>[a-z0-9][a-z0-9._-]*)\.(?:127\.0\.0\.1|localhost)\z/i.freeze

      module_function

      # "/path?query" -> [raw_path, raw_query or nil], both exactly as sent.
      def split_target(target)
        path, query = target.split("?", 2)
        [path, query]
      end

      # Raw "k=v&k2" -> [["k", "v"], ["k2", ""]], still percent-encoded.
      def query_pairs(raw_query)
        return [] if raw_query.nil? || raw_query.empty?

        raw_query.split("&").reject(&:empty?).map do |pair|
          key, value = pair.split("=", 2)
          [key, value || ""]
        end
      end

      # RFC 3986 percent-decoding to bytes. A '%' not followed by two hex digits is malformed; '+'
      # is left alone (it is a space only in form encoding, which signed URLs do not use).
      def percent_decode(text)
        raise Malformed, "invalid percent-encoding in #{text.inspect}" if text.match?(/%(?![0-9A-Fa-f]{2})/)

        text.b.gsub(/%([0-9A-Fa-f]{2})/) { Regexp.last_match(1).hex.chr }
      end

      # The Host header without its port ("[::1]:80" -> "[::1]").
      def host_without_port(host)
        host = host.to_s.strip
        return host[/\A\[[^\]]*\]/] if host.start_with?("[")

        host.sub(/:\d*\z/, "")
      end

      def virtual_host_bucket(host)
        host_without_port(host)[VIRTUAL_HOST, :bucket]
      end

      # Header values for +name+ as one string: repeated headers joined with ",", or nil.
      def header(headers, name)
        values = headers.find { |key, _| key.to_s.downcase == name }&.last
        return nil if values.nil?

        Array(values).join(",")
      end
    end
  end
end
