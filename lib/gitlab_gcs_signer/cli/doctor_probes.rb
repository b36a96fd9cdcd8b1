# frozen_string_literal: true

require "time"
require_relative "../../gitlab_gcs_signer"

module GitlabGcsSigner
  module CLI
    # The doctor's raw probes: one HTTP exchange each, through the gem's own
    # HTTP client (Native.http_probe), so they take the path signing takes.
    # Included by Doctor; reads its @metadata_host.
    module DoctorProbes
      # A raw answer: status, headers we care about, body, when it was sent/received.
      Probe = Struct.new(:status, :flavor, :date, :body, :sent, :received, :error, keyword_init: true)

      private

      def metadata_get(path)
        # The metadata server is link-local: a host, never a URL with a scheme.
        host, port = split_host(@metadata_host)
        host = "[#{host}]" if host.include?(":")
        # Never through a proxy, as the gem's metadata client.
        probe("GET", "http://#{host}:#{port}#{path}", { "Metadata-Flavor" => "Google" }, 5, direct: true)
      end

      # Unauthenticated on purpose: only the Date header is wanted.
      def date_probe(url)
        probe("GET", "#{url.chomp('/')}/", {}, 5)
      end

      def gcs_request(verb, url)
        probe(verb, url, {}, 10)
      end

      # One exchange through the gem's HTTP client; a transport failure is a
      # Probe with its error (the gem's message says refused, timed out, TLS).
      def probe(verb, url, headers, timeout, direct: false)
        sent = Time.now.to_f
        status, answer, body, elapsed = GitlabGcsSigner::Native.http_probe(verb, url, headers, timeout, direct)
        Probe.new(status: status, flavor: answer["metadata-flavor"]&.casecmp?("Google"),
                  date: parse_date(answer["date"]), body: body, sent: sent, received: sent + elapsed)
      rescue GitlabGcsSigner::Error => e
        Probe.new(error: e.message)
      end

      def parse_date(value)
        value && Time.httpdate(value).to_f
      rescue ArgumentError
        nil
      end

      # Server time minus ours, as little as the answer proves. The server
      # read its clock somewhere between our send and receive, and its Date
      # is truncated to the second, so the skew lies in
      # (date - received, date + 1 - sent); report the value of that window
      # nearest zero (zero when the window holds it). A midpoint estimate
      # reads +-1 s on a slow or loaded exchange with a correct clock.
      def skew(probe)
        low = probe.date - probe.received
        high = probe.date + 1 - probe.sent
        return low if low.positive?
        return high if high.negative?

        0.0
      end

      def ms(probe)
        ((probe.received - probe.sent) * 1000).round
      end

      def split_host(host_port)
        if (m = host_port.match(/\A\[(?<host>.+)\](?::(?<port>\d+))?\z/) || host_port.match(/\A(?<host>[^:]+)(?::(?<port>\d+))?\z/))
          [m[:host], (m[:port] || 80).to_i]
        else
          raise UsageError, "--metadata-host must be HOST or HOST:PORT, got #{host_port.inspect}"
        end
      end
    end
  end
end
