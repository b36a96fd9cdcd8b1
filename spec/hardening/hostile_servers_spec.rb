# frozen_string_literal: true

require_relative "../keyless/support/keyless_helper"

# Issue 15 m2, m3, m4, m11: what a broken or hostile metadata server or IAM
# endpoint can make the signer do. Each case that depends on the token uses
# an emulator of its own: the token is process-wide per metadata host.
RSpec.describe "hostile metadata and IAM answers", :emulator do
  include KeylessHelpers

  let(:request) { { bucket: "b", expires_in: 600 } }

  def sign(signer, name)
    signer.signed_url(**request, object: name)
  end

  def error_of
    yield
    nil
  rescue GitlabGcsSigner::Error => e
    e
  end

  describe "oversized bodies (m2)" do
    it "refuses a token answer over 64 KiB at once, without reading it whole or retrying" do
      with_own_emulator(config: { "metadata" => { "body_bytes" => 4 * 1024 * 1024 } }) do |own|
        # The account is known: the token is the one metadata answer asked for.
        e = error_of { sign(signer_on(own, timeout: 5, service_account_email: emulator_email), "big-token") }
        expect(e).to be_a(GitlabGcsSigner::ProtocolError)
        expect(e.message).to include("64 KiB", "metadata server")
        expect(own.stats.values_at("token_requests", "sign_blob_calls")).to eq([1, 0])
      end
    end

    it "refuses a signBlob answer over 64 KiB" do
      signer = keyless_signer(timeout: 5)
      signer.email
      emulator.configure("iam" => { "body_bytes" => 4 * 1024 * 1024 })
      calls = emulator_delta(emulator, "sign_blob_calls") do
        e = error_of { sign(signer, "big-blob") }
        expect(e).to be_a(GitlabGcsSigner::ProtocolError)
        expect(e.message).to include("64 KiB", "iam_endpoint")
      end
      expect(calls).to eq([1])
      # Answers just under the cap are read as before.
      emulator.configure("iam" => { "body_bytes" => 60 * 1024 })
      expect(sign(signer, "padded")).to include("X-Goog-Signature=")
    end
  end

  describe "token lifetimes (m3)" do
    it "reuses a token with expires_in 0 instead of fetching one per signature" do
      with_own_emulator(config: { "metadata" => { "expires_in" => 0 } }) do |own|
        signer = signer_on(own)
        20.times { |i| expect(sign(signer, "short/#{i}")).to include("X-Goog-Signature=") }
        expect(own.stats["token_requests"]).to eq(1)
      end
    end

    it "keeps a token with expires_in 10^13 (no overflow into 'expired forever')" do
      with_own_emulator(config: { "metadata" => { "expires_in" => 10**13 } }) do |own|
        signer = signer_on(own)
        20.times { |i| expect(sign(signer, "long/#{i}")).to include("X-Goog-Signature=") }
        expect(own.stats["token_requests"]).to eq(1)
      end
    end
  end

  describe "tokens that cannot be a header (m4)" do
    it "fails at once with ProtocolError, no retries, the token not shown" do
      with_own_emulator(config: { "metadata" => { "token_crlf" => true } }) do |own|
        e, elapsed = timed { error_of { sign(signer_on(own, timeout: 5), "crlf") } }
        expect(e).to be_a(GitlabGcsSigner::ProtocolError)
        expect(e.message).to include("line break")
        expect(e.message).not_to match(KeylessHelpers::SECRET_LOOKING)
        expect(own.stats.values_at("token_requests", "sign_blob_calls")).to eq([1, 0])
        expect(elapsed).to be < 4 # well before the 5 s deadline the retries ran into
      end
    end
  end

  describe "server text quoted in errors (m11)" do
    it "redacts a bearer token that the server echoes in its error message" do
      signer = keyless_signer(timeout: 5)
      signer.email
      emulator.configure("iam" => { "echo_authorization" => true, "fail_next" => [400] })
      e = error_of { sign(signer, "echo") }
      expect(e).to be_a(GitlabGcsSigner::ProtocolError)
      expect(e.message).to include("Emulated fault 400", "Authorization: Bearer [redacted]")
      expect(e.message).not_to include("ya29.")
      emulator.tokens.each { |token| expect(e.message).not_to include(token) }
    end
  end
end
