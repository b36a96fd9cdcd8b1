# frozen_string_literal: true

require "net/http"
require "uri"

module GitlabGcsSigner
  # Sends a signed URL's request to a local endpoint (the bundled emulator)
  # instead of the host in the URL, keeping the URL's Host header, path and
  # query byte for byte: what /etc/hosts would do. Neither V2 nor V4 signs
  # the scheme, so an https:// URL is checked as it will be in production.
  # Used by the demo, the specs and the benchmarks; never by signing code.
  module HttpRoute
    module_function

    # Returns the Net::HTTPResponse of METHOD url, sent to 127.0.0.1:port.
    def request(url, endpoint_port, method: "GET", body: nil, headers: {}, timeout: 10)
      uri = URI.parse(url)
      host_header = uri.port == uri.default_port ? uri.host : "#{uri.host}:#{uri.port}"
      http = Net::HTTP.new("127.0.0.1", endpoint_port)
      http.open_timeout = timeout
      http.read_timeout = timeout
      request = Net::HTTPGenericRequest.new(method, !body.nil?, method != "HEAD", uri.request_uri,
                                            { "Host" => host_header }.merge(headers))
      if body
        request.body = body
        # Net::HTTP would add "application/x-www-form-urlencoded", which a V2
        # signature covers; an unsigned upload sends no content type at all.
        request["Content-Type"] ||= ""
      end
      http.start { |h| h.request(request) }
    end
  end
end
