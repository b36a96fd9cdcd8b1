# frozen_string_literal: true

require "json"
require "openssl"

module GitlabGcsSigner
  module Emulator
    # The service-account key file the emulator signs with (signBlob) and verifies against (GCS).
    # Only the public half is used for verification.
    class ServiceAccount
      attr_reader :email, :project_id, :key_id, :public_key

      def self.load(path)
        data = JSON.parse(File.read(path))
        unless data["type"] == "service_account" && data["client_email"] && data["private_key"]
          raise ArgumentError, "#{path} is not a service_account key file (needs type, client_email, private_key)"
        end

        new(email: data["client_email"], project_id: data["project_id"].to_s,
            private_key_pem: data["private_key"], key_id: data["private_key_id"])
      end

      # A second account with a fresh key, in the same project: lets a test
      # sign as two accounts in one process (its private key never leaves the emulator).
      def self.second(primary)
        new(email: "second-signer@#{primary.project_id}.iam.gserviceaccount.com", project_id: primary.project_id,
            private_key_pem: OpenSSL::PKey::RSA.new(2048).to_pem)
      end

      def initialize(email:, project_id:, private_key_pem:, key_id: nil)
        @email = email
        @project_id = project_id
        @private_key = OpenSSL::PKey::RSA.new(private_key_pem)
        @public_key = @private_key.public_key
        # Google's keyId is the key's id; without one, a stable id derived from the public key.
        @key_id = key_id || OpenSSL::Digest::SHA1.hexdigest(@public_key.to_der)
      end

      # RSASSA-PKCS1-v1_5 with SHA-256, what signBlob returns.
      def sign(bytes)
        @private_key.sign(OpenSSL::Digest.new("SHA256"), bytes)
      end

      # Never show the private key.
      def inspect
        "#<#{self.class.name} email=#{@email} key_id=#{@key_id}>"
      end
      alias to_s inspect
    end
  end
end
