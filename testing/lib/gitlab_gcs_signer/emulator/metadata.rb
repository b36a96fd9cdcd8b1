# frozen_string_literal: true

require "uri"

module GitlabGcsSigner
  module Emulator
    # The metadata server as seen from a GKE Workload Identity pod (field notes, section 3):
    # base /computeMetadata/v1/, "Metadata-Flavor: Google" required on requests and present on
    # every answer.
    class Metadata
      BASE = "/computeMetadata/v1/"
      FLAVOR = { "Metadata-Flavor" => "Google" }.freeze
      ACCOUNT_PATH = %r{\Ainstance/service-accounts/(?<account>[^/]+)/(?<leaf>token|email|scopes|)\z}.freeze

      def initialize(config:, tokens:, stats:, project_id:)
        @project_id = project_id
        @config = config
        @tokens = tokens
        @stats = stats
      end

      def self.handles?(path)
        path == "/" || path == "/computeMetadata" || path.start_with?("/computeMetadata/")
      end

      # Counts the request before faults can swallow it.
      def count(request)
        @stats.incr("metadata_requests")
        leaf = relative(request)&.match(ACCOUNT_PATH)&.[](:leaf)
        @stats.incr("token_requests") if leaf == "token"
        @stats.incr("email_requests") if leaf == "email"
      end

      def call(request)
        # The bare root answers without the header: client libraries probe it to detect GCE.
        return text(200, "computeMetadata/\n") if request.raw_path == "/"
        return text(405, "Method not allowed\n") unless %w[GET HEAD].include?(request.method)
        return text(403, "Missing required header \"Metadata-Flavor\": \"Google\"\n") unless request.header("metadata-flavor") == "Google"
        # The real server refuses proxied requests.
        return text(403, "Request contains an X-Forwarded-For header; refusing\n") if request.header("x-forwarded-for")

        route(relative(request), request)
      end

      def error_reply(status)
        text(status, status == 429 ? "Too Many Requests\n" : "Service Unavailable (emulated fault #{status})\n")
      end

      def flavor_headers
        FLAVOR
      end

      private

      def relative(request)
        path = URI.decode_www_form_component(request.raw_path.to_s)
        return "" if path == "/computeMetadata/v1" || path == "/computeMetadata"

        path.delete_prefix(BASE) if path.start_with?(BASE)
      rescue ArgumentError
        nil
      end

      def route(path, request)
        return text(200, "instance/\nproject/\n") if path == ""
        return text(200, "default/\n#{@config.email}/\n") if path == "instance/service-accounts/"
        return text(200, @project_id) if path == "project/project-id"
        return universe_domain if path == "universe/universe-domain"

        match = path&.match(ACCOUNT_PATH)
        return text(404, "Not Found\n") unless match && [@config.email, "default"].include?(match[:account])

        case match[:leaf]
        when "token" then token(request)
        when "email" then text(200, @config.email)
        when "scopes" then text(200, @config["default_scopes"].map { |scope| "#{scope}\n" }.join)
        else text(200, "aliases\nemail\nidentity\nscopes\ntoken\n")
        end
      end

      # GKE honours ?scopes=a,b; GCE ignores it (honour_scopes_param: false) and issues the
      # instance's scopes. The scopes are recorded with the token so signBlob can refuse a
      # storage-only token the way Google does (fog-google issue 599).
      def token(request)
        scopes = request.params["scopes"]&.split(",")&.map(&:strip)&.reject(&:empty?) if @config["honour_scopes_param"]
        scopes = @config["default_scopes"] if scopes.nil? || scopes.empty?
        lifetime = @config["token_lifetime"]
        value = @tokens.issue(scopes: scopes, lifetime: lifetime, now: @config.now)
        @stats.incr("tokens_issued")
        Reply.json(200, { "access_token" => value, "expires_in" => lifetime, "token_type" => "Bearer" }, FLAVOR)
      end

      # Outside Google's public cloud the server names the universe; a 404 means googleapis.com.
      def universe_domain
        universe = @config["universe_domain"]
        universe ? text(200, universe) : text(404, "Not Found\n")
      end

      def text(status, body)
        Reply.text(status, body, FLAVOR)
      end
    end
  end
end
