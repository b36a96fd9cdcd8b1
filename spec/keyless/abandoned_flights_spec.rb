# frozen_string_literal: true

require_relative "support/keyless_helper"

# Issue 15 m12: callers interrupted by Timeout must not leave their signBlob
# calls behind. A flight nobody waits for any more is cancelled before it is
# sent (src/flight.rs), instead of queueing for the in-flight limit and the
# quota and spending the project's signBlob quota on URLs nobody gets.
RSpec.describe "misses whose callers gave up", :emulator do
  it "are cancelled before they are sent" do
    signer = keyless_signer(max_sign_blob_in_flight: 1)
    signer.signed_url(bucket: "b", object: "warm-up", expires_in: 600) # token and email
    # 1 s per signBlob: a Timeout of 0.1 s fires long before any answer,
    # however late a loaded machine schedules it.
    emulator.configure("iam" => { "latency_ms" => 1000 })
    calls_before = emulator.stats["sign_blob_calls"]

    interrupted = Array.new(12) do |i|
      Thread.new do
        Timeout.timeout(0.1) { signer.signed_url(bucket: "b", object: "gone-#{i}", expires_in: 600) }
        :signed
      rescue Timeout::Error
        :interrupted
      end
    end.map(&:value)
    expect(interrupted).to all(eq(:interrupted))

    # Queued behind one 1 s call at a time, a second call would be sent 1 s
    # after the first, a third after 2 s; only the one already on the wire
    # may go out.
    sleep 2.5
    expect(emulator.stats["sign_blob_calls"] - calls_before).to be <= 1
    emulator.configure("iam" => { "latency_ms" => 0 })
    expect(signer.signed_url(bucket: "b", object: "gone-0", expires_in: 600)).to include("X-Goog-Signature=")
  end
end
