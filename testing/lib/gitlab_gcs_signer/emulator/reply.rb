# frozen_string_literal: true

require "json"
require "uri"

module GitlabGcsSigner
  module Emulator
    # What the handlers see of a request: no WEBrick types, and the request target kept raw (signed
    # URLs must be checked against the bytes the client sent, not a re-parsed URI).
    Request = Struct.new(:method, :target, :host, :headers, :body_reader, keyword_init: true) do
      def self.from_webrick(req)
        new(method: req.request_method, target: req.unparsed_uri, host: req["Host"].to_s,
            headers: req.header, body_reader: -> { req.body.to_s })
      end

      def raw_path
        target.split("?", 2).first
      end

      def raw_query
        target.split("?", 2)[1]
      end

      # Form-decoded query (for the metadata and control endpoints, not for signature checks).
      def params
        URI.decode_www_form(raw_query.to_s).to_h
      rescue ArgumentError
        {}
      end

      def header(name)
        Array(headers[name.downcase]).first
      end

      def body
        @body ||= body_reader.call
      end

      # Headers carry bearer tokens: never print them.
      def inspect
        "#<#{self.class.name} #{method} #{raw_path}>"
      end
      alias_method :to_s, :inspect
    end

    # An answer before it is written to the socket, so faults can reshape it uniformly.
    Reply = Struct.new(:status, :headers, :body) do
      def self.text(status, body, headers = {})
        new(status, { "Content-Type" => "text/plain; charset=utf-8" }.merge(headers), body)
      end

      def self.json(status, object, headers = {})
        new(status, { "Content-Type" => "application/json; charset=UTF-8" }.merge(headers), JSON.generate(object))
      end

      def self.xml(status, body)
        new(status, { "Content-Type" => "application/xml; charset=UTF-8" }, body)
      end
    end
  end
end
