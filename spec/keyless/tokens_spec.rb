# frozen_string_literal: true

require_relative "support/keyless_helper"

# Google's token rules (docs/facts.md#token-caching), counted at the emulator's metadata
# server: one token per process for every signer and thread, refreshed in
# the background between 225 s and 120 s of life left, waited for below
# that, and fetched again exactly once after signBlob's 401.
RSpec.describe "keyless access tokens", :emulator do
  def sign_many(signers, threads: 8, per_thread: 5, prefix: "o")
    Array.new(threads) do |t|
      Thread.new do
        Array.new(per_thread) { |i| signers.sample.signed_url(bucket: "b", object: "#{prefix}/#{t}/#{i}", expires_in: 600) }
      end
    end.flat_map(&:value)
  end

  it "fetches one token (and the email once) for many signers and threads in one process" do
    with_own_emulator do |own|
      signers = Array.new(10) { signer_on(own) }
      urls = sign_many(signers)
      expect(urls.uniq.size).to eq(40)
      expect(own.stats.values_at("token_requests", "sign_blob_ok")).to eq([1, 40])
      expect(signers.map { |s| s.stats[:token_fetches] }.uniq).to eq([1])
      # Signers made later, after the first ones are gone, still share it.
      signers = nil
      GC.start
      sign_many(Array.new(3) { signer_on(own) }, threads: 2, prefix: "later")
      expect(own.stats.values_at("token_requests", "email_requests")).to eq([1, 1])
    end
  end

  it "serves a token with 225..120 s left and refreshes it once in the background" do
    with_own_emulator(token_lifetime: 200) do |own|
      signer = signer_on(own)
      signer.signed_url(bucket: "b", object: "first", expires_in: 600)
      expect(own.stats["token_requests"]).to eq(1)
      # The refresh is slow (4.5 s, under the metadata client's 5 s attempt
      # timeout); nobody waits for it: a caller that did would take 4.5 s.
      own.configure("metadata" => { "latency_ms" => 4500 })
      urls, elapsed = timed { sign_many([signer], threads: 4, per_thread: 5, prefix: "window") }
      expect(urls.uniq.size).to eq(20)
      expect(elapsed).to be < 3.5
      wait_until("the background refresh at the metadata server") { own.stats["token_requests"] >= 2 }
      expect(own.stats["token_requests"]).to eq(2)
      expect(own.stats["sign_blob_ok"]).to eq(21)
    end
  end

  it "waits for a new token when less than 120 s are left, one fetch for all waiters" do
    with_own_emulator(token_lifetime: 100) do |own|
      signer = signer_on(own)
      signer.signed_url(bucket: "b", object: "first", expires_in: 600)
      # A new token is used for its first 10 s however short its life
      # (src/token.rs MIN_REUSE: expires_in 0 must not mean a fetch per call).
      signer.signed_url(bucket: "b", object: "second", expires_in: 600)
      expect(own.stats["token_requests"]).to eq(1)
      sleep 10.1
      own.configure("metadata" => { "latency_ms" => 500 })
      _, elapsed = timed { sign_many([signer], threads: 6, per_thread: 1, prefix: "short") }
      # Everyone waited for the one refresh their calls started.
      expect(elapsed).to be >= 0.45
      expect(own.stats["token_requests"]).to eq(2)
    end
  end

  it "after signBlob's 401 (revoked token) fetches exactly one new token and the next sign works" do
    signer = keyless_signer
    signer.signed_url(bucket: "b", object: "before", expires_in: 600)
    emulator.revoke_tokens!
    tokens, unauthenticated = emulator_delta(emulator, "token_requests") do
      url = signer.signed_url(bucket: "b", object: "after", expires_in: 600)
      emulator.client.put_object("b", "after", "ok")
      expect(gcs(url).code).to eq("200")
      sign_many([signer, keyless_signer], threads: 4, per_thread: 3, prefix: "after-401")
    end, emulator.stats["sign_blob_errors"]["401"]
    expect(tokens).to eq([1])
    expect(unauthenticated).to eq(1)
  end

  it "raises AuthenticationError when even the fresh token is refused" do
    with_own_emulator do |own|
      signer = signer_on(own, timeout: 8)
      signer.signed_url(bucket: "b", object: "x", expires_in: 600)
      # Each signBlob answer takes 1.5 s (the token is checked when it
      # answers); the token is revoked before the first request and again
      # once the second request, made with the token fetched after the
      # first 401, is waiting for its answer.
      own.configure("iam" => { "latency_ms" => 1500 })
      own.revoke_tokens!
      attempt = Thread.new { signer.signed_url(bucket: "b", object: "y", expires_in: 600) }
      attempt.report_on_exception = false
      wait_until("the retry with the fresh token at signBlob") { own.stats["sign_blob_calls"] == 3 }
      own.revoke_tokens!
      expect { attempt.value }.to raise_error(GitlabGcsSigner::AuthenticationError, /freshly fetched access token/)
      expect(own.stats["sign_blob_errors"]).to eq("401" => 2)
      expect(own.stats["token_requests"]).to eq(2)
    end
  end
end
