# frozen_string_literal: true

require "timeout"
require_relative "support/keyless_helper"

# How a keyless call behaves inside Ruby: a cold metadata server is waited
# for within the timeout, the GVL is released while the network is slow, and
# waits end promptly on Timeout.timeout and Thread#kill without breaking the
# signer.
RSpec.describe "keyless calls in Ruby", :emulator do
  let(:request) { { bucket: "b", expires_in: 600 } }

  describe "a cold metadata server" do
    it "is waited for: the first sign takes about the cold start and succeeds" do
      with_own_emulator(cold_start_ms: 3000) do |own|
        url, elapsed = timed { signer_on(own).signed_url(**request, object: "cold") }
        expect(url).to include("X-Goog-Signature=")
        expect(elapsed).to be_between(1.5, 9)
      end
    end

    it "raises TimeoutError with timeout: 1, naming the metadata server" do
      with_own_emulator(cold_start_ms: 3000) do |own|
        signer = signer_on(own, timeout: 1)
        e, elapsed = timed do
          signer.signed_url(**request, object: "cold")
        rescue GitlabGcsSigner::Error => e
          e
        end
        expect(e).to be_an_instance_of(GitlabGcsSigner::TimeoutError)
        expect(e.message).to include("timeout:", "metadata server")
        expect(elapsed).to be < 1.5
        # The lookup the call gave up on goes on and serves the next call.
        sleep 2.2
        expect(signer.signed_url(**request, object: "warm")).to include("X-Goog-Signature=")
      end
    end
  end

  it "releases the GVL while signBlob waits: another Ruby thread makes progress" do
    signer = keyless_signer
    signer.signed_url(**request, object: "warm-up") # token and email in hand
    emulator.configure("iam" => { "latency_ms" => 500 })
    count = 0
    stop = false
    counter = Thread.new { count += 1 until stop }
    sleep 0.05
    before = count
    signer.signed_url(**request, object: "slow")
    during = count - before
    stop = true
    counter.join
    # With the GVL held for the half second, the counter could only have run
    # in the few ms around the call; released, it counts all the way.
    baseline_start = count
    stop = false
    counter = Thread.new { count += 1 until stop }
    sleep 0.1
    stop = true
    counter.join
    per_100ms = count - baseline_start
    expect(during).to be > per_100ms
  end

  describe "interrupts" do
    before { emulator.configure("iam" => { "latency_ms" => 5000 }) }

    # timeout: 20 gives each attempt 10 s, so a 5 s signBlob still succeeds.
    let(:signer) { keyless_signer(timeout: 20).tap(&:email) }

    it "Timeout.timeout ends a slow signBlob promptly, and the signer still works after" do
      _, elapsed = timed do
        expect { Timeout.timeout(0.2) { signer.signed_url(**request, object: "slow") } }.to raise_error(Timeout::Error)
      end
      expect(elapsed).to be < 1.0
      emulator.configure("iam" => { "latency_ms" => 0 })
      expect(signer.signed_url(**request, object: "other")).to include("X-Goog-Signature=")
      # The abandoned flight for "slow" lands (5 s later) or is retried, but never poisons the key.
      url = signer.signed_url(**request, object: "slow")
      emulator.client.put_object("b", "slow", "ok")
      expect(gcs(url).code).to eq("200")
    end

    it "Thread#kill ends a waiting thread promptly; its followers and later callers are served" do
      waiter = Thread.new { signer.signed_url(**request, object: "killed") }
      sleep 0.2
      follower = Thread.new { signer.signed_url(**request, object: "killed") }
      sleep 0.2
      _, elapsed = timed do
        waiter.kill
        waiter.join(2)
      end
      expect(waiter).not_to be_alive
      expect(elapsed).to be < 1.0
      url = follower.value # the coalesced flight kept going for the follower
      expect(signer.signed_url(**request, object: "killed")).to eq(url)
      expect(emulator.stats["sign_blob_calls"]).to eq(1)
    end

    it "Ctrl-C style interrupts (Thread#raise) surface as the raised exception" do
      waiter = Thread.new do
        signer.signed_url(**request, object: "raised")
      rescue Interrupt => e
        e
      end
      sleep 0.2
      waiter.raise(Interrupt)
      expect(waiter.join(2)&.value).to be_a(Interrupt)
    end
  end
end
