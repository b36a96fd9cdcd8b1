# frozen_string_literal: true

require "json"
require "uri"

module GitlabGcsSigner
  module Emulator
    # IAM Credentials signBlob (field notes, section 2):
    #   POST /v1/projects/-/serviceAccounts/{EMAIL}:signBlob  {"payload": base64, "delegates": [...]}
    #   -> {"keyId": ..., "signedBlob": base64(RSASSA-PKCS1-v1_5 SHA-256)}
    # with Google's JSON error envelope and the statuses/reasons a keyless signer meets in practice.
    class Iam
      PATH = %r{\A/v1/projects/(?<project>[^/]+)/serviceAccounts/(?<account>[^/]+):signBlob\z}.freeze
      SIGN_SCOPES = [Config::CLOUD_PLATFORM, Config::IAM_SCOPE].freeze
      SERVICE = "iamcredentials.googleapis.com"
      STATUS_NAMES = {
        400 => "INVALID_ARGUMENT", 401 => "UNAUTHENTICATED", 403 => "PERMISSION_DENIED", 404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED", 409 => "ABORTED", 429 => "RESOURCE_EXHAUSTED", 500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED", 502 => "UNAVAILABLE", 503 => "UNAVAILABLE", 504 => "DEADLINE_EXCEEDED"
      }.freeze

      def self.handles?(path)
        path.start_with?("/v1/")
      end

      # account: the key file's account (the metadata server's default);
      # others: more accounts any token may sign as (roles/iam.serviceAccountTokenCreator on them).
      def initialize(config:, tokens:, stats:, account:, others: [])
        @config = config
        @tokens = tokens
        @stats = stats
        @account = account
        @others = others.to_h { |a| [a.email, a] }
      end

      def count(_request)
        @stats.incr("sign_blob_calls")
      end

      def call(request)
        match = decoded_path(request)&.match(PATH)
        return error(404, "Method not found.") unless match
        return error(405, "Method #{request.method} not allowed; signBlob is POST.") unless request.method == "POST"

        authenticated(request) { |scopes| sign_blob(request, match, scopes) }
      end

      # Injected statuses look like Google's: quota (429) and transient errors (5xx).
      def error_reply(status)
        case status
        when 429
          error(429, "Quota exceeded for quota metric 'Sign Blob requests' and limit 'Sign Blob requests per minute' " \
                     "of service '#{SERVICE}' (emulated fault).",
                reason: "RATE_LIMIT_EXCEEDED", domain: "googleapis.com", metadata: { "service" => SERVICE })
        when 503 then error(503, "The service is currently unavailable.")
        else error(status, "Emulated fault #{status}.")
        end
      end

      def flavor_headers
        {}
      end

      # {"error": {"code", "message", "status", "details": [ErrorInfo]}} (google.rpc.Status as JSON).
      def error(code, message, reason: nil, domain: nil, metadata: nil)
        body = { "code" => code, "message" => message, "status" => STATUS_NAMES.fetch(code, "UNKNOWN") }
        if reason
          info = { "@type" => "type.googleapis.com/google.rpc.ErrorInfo", "reason" => reason, "domain" => domain }
          info["metadata"] = metadata if metadata
          body["details"] = [info]
        end
        headers = code == 401 ? { "WWW-Authenticate" => 'Bearer realm="https://accounts.google.com/", error="invalid_token"' } : {}
        Reply.json(code, { "error" => body }, headers)
      end

      private

      def decoded_path(request)
        URI.decode_www_form_component(request.raw_path.to_s.gsub("+", "%2B"))
      rescue ArgumentError
        nil
      end

      def authenticated(request)
        token = request.header("authorization").to_s[/\ABearer\s+(\S+)\z/, 1]
        return unauthenticated("CREDENTIALS_MISSING") unless token

        state, scopes = @tokens.check(token, now: @config.now)
        return unauthenticated(state == :expired ? "ACCESS_TOKEN_EXPIRED" : "ACCESS_TOKEN_TYPE_UNSUPPORTED") unless state == :ok
        return insufficient_scopes if (scopes & SIGN_SCOPES).empty?

        yield scopes
      end

      def sign_blob(request, match, _scopes)
        return service_disabled if @config["api_disabled"]
        unless match[:project] == "-"
          return error(400, "The project in the resource name must be '-' (projects/-/serviceAccounts/EMAIL); got #{match[:project]}.")
        end

        account = match[:account]
        if account.end_with?(".svc.id.goog")
          return error(400, "Invalid form of account ID #{account}. Should be [Gaia ID |Email |Unique ID |] of the account")
        end
        signer = account == @account.email ? @account : @others[account]
        return permission_denied if signer.nil? || @config["deny_sign_blob"]

        payload = parse_payload(request.body)
        return error(400, "Request contains an invalid argument: #{INVALID}.") unless payload

        Reply.json(200, { "keyId" => signer.key_id, "signedBlob" => [signer.sign(payload)].pack("m0") })
      end

      INVALID = "payload must be non-empty base64 and delegates a list of strings"

      # The decoded payload bytes, or nil when the body is not a valid request.
      def parse_payload(body)
        json = JSON.parse(body)
        return nil unless json.is_a?(Hash)

        delegates = json.fetch("delegates", [])
        payload = json["payload"]
        return nil unless delegates.is_a?(Array) && delegates.all?(String) && payload.is_a?(String) && !payload.empty?

        # proto3 JSON "bytes": standard or URL-safe base64, padding optional.
        bytes = payload.tr("-_", "+/")
        bytes += "=" * (-bytes.size % 4)
        bytes.unpack1("m0")
      rescue JSON::ParserError, ArgumentError
        nil
      end

      def unauthenticated(reason)
        error(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie " \
                   "or other valid authentication credential.", reason: reason, domain: "googleapis.com")
      end

      def insufficient_scopes
        error(403, "Request had insufficient authentication scopes.",
              reason: "ACCESS_TOKEN_SCOPE_INSUFFICIENT", domain: "googleapis.com",
              metadata: { "service" => SERVICE, "method" => "google.iam.credentials.v1.IAMCredentials.SignBlob" })
      end

      def permission_denied
        error(403, "Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist).",
              reason: "IAM_PERMISSION_DENIED", domain: "iam.googleapis.com",
              metadata: { "permission" => "iam.serviceAccounts.signBlob" })
      end

      def service_disabled
        project = @account.project_id
        error(403, "IAM Service Account Credentials API has not been used in project #{project} before or it is " \
                   "disabled. Enable it (gcloud services enable #{SERVICE} --project #{project}) then retry.",
              reason: "SERVICE_DISABLED", domain: "googleapis.com",
              metadata: { "service" => SERVICE, "consumer" => "projects/#{project}" })
      end
    end
  end
end
