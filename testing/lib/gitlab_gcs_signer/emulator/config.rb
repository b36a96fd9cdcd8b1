# frozen_string_literal: true

module GitlabGcsSigner
  module Emulator
    # Top-level, non-fault settings changed through POST /_emulator/config, plus the emulator's clock.
    # Faults live in Faults; this class only knows the keys below.
    class Config
      class Invalid < ArgumentError; end

      CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
      IAM_SCOPE = "https://www.googleapis.com/auth/iam"

      KEYS = %w[email token_lifetime default_scopes honour_scopes_param deny_sign_blob api_disabled now_override seed
                universe_domain].freeze

      def initialize(account:, token_lifetime: 3599)
        @account = account
        @defaults = {
          "email" => nil, # nil: the key file's client_email
          "token_lifetime" => Integer(token_lifetime),
          "default_scopes" => [CLOUD_PLATFORM],
          # GKE honours ?scopes= on the token request; GCE ignores it and
          # issues the instance's access scopes (field notes s.3).
          "honour_scopes_param" => true,
          "deny_sign_blob" => false,
          "api_disabled" => false,
          "now_override" => nil,
          "seed" => 1234,
          # computeMetadata/v1/universe/universe-domain: nil answers 404 (Google's public cloud)
          "universe_domain" => nil
        }.freeze
        @mutex = Mutex.new
        reset!
      end

      # Merges validated settings; the whole update is rejected if one value is invalid.
      def update(settings)
        checked = settings.to_h { |key, value| [key, validate(key, value)] }
        @mutex.synchronize { @values = @values.merge(checked).freeze }
      end

      def reset!
        @mutex.synchronize { @values = @defaults }
      end

      def [](key)
        @values.fetch(key)
      end

      # The email the metadata server reports (configurable to simulate an unmapped Workload
      # Identity pod, whose "email" is PROJECT.svc.id.goog).
      def email
        @values["email"] || @account.email
      end

      # Epoch seconds; pinned by now_override so V4 vectors (2019 timestamps) and token expiry can be tested.
      def now
        @values["now_override"] || Time.now.to_f
      end

      def to_h
        @values.merge("email" => email)
      end

      private

      def validate(key, value)
        case key
        when "email" then check(key, value, value.nil? || (value.is_a?(String) && !value.empty?))
        when "token_lifetime" then check(key, value, value.is_a?(Integer) && value.positive?)
        when "default_scopes" then check(key, value, value.is_a?(Array) && value.all?(String))
        when "deny_sign_blob", "api_disabled", "honour_scopes_param" then check(key, value, [true, false].include?(value))
        when "now_override" then check(key, value, value.nil? || value.is_a?(Numeric))
        when "seed" then check(key, value, value.is_a?(Integer))
        when "universe_domain" then check(key, value, value.nil? || (value.is_a?(String) && !value.empty?))
        else raise Invalid, "unknown setting #{key.inspect} (known: #{KEYS.join(', ')})"
        end
      end

      def check(key, value, valid)
        raise Invalid, "invalid value for #{key}: #{value.inspect}" unless valid

        value
      end
    end
  end
end
