# frozen_string_literal: true

require "securerandom"

module GitlabGcsSigner
  module Emulator
    # Access tokens issued by the metadata endpoint, checked by signBlob. Expiry follows the
    # emulator's clock (Config#now), so pinning now_override ages tokens on demand.
    class Tokens
      Token = Struct.new(:scopes, :expires_at, :revoked)
      PRUNE_ABOVE = 10_000

      def initialize
        @mutex = Mutex.new
        @tokens = {}
      end

      def issue(scopes:, lifetime:, now:)
        value = "ya29.emulator.#{SecureRandom.urlsafe_base64(32)}"
        @mutex.synchronize do
          prune(now) if @tokens.size > PRUNE_ABOVE
          @tokens[value] = Token.new(scopes.dup.freeze, now + lifetime, false)
        end
        value
      end

      # [:ok, scopes] or [:unknown | :expired | :revoked, nil]
      def check(value, now:)
        token = @mutex.synchronize { @tokens[value] }
        return [:unknown, nil] unless token
        return [:revoked, nil] if token.revoked
        return [:expired, nil] if now >= token.expires_at

        [:ok, token.scopes]
      end

      # Every token value still held (issued and not pruned), for secret-leak scans in specs.
      def values
        @mutex.synchronize { @tokens.keys }
      end

      def revoke_all
        @mutex.synchronize { @tokens.each_value { |token| token.revoked = true } }
      end

      def inspect
        "#<#{self.class.name} count=#{@tokens.size}>"
      end
      alias to_s inspect

      private

      def prune(now)
        @tokens.delete_if { |_, token| token.revoked || token.expires_at <= now }
      end
    end
  end
end
