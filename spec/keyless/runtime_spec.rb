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
    # The cold start is set just before the call (the emulator counts it
    # from then on), inside the timed block: however slowly the emulator
    # booted, the call meets all 3 s of silence.
    it "is waited for: the first sign takes about the cold start and succeeds" do
      with_own_emulator do |own|
        url, elapsed = timed do
          own.configure("metadata" => { "cold_start_ms" => 3000 })
          signer_on(own).signed_url(**request, object: "cold")
        end
        expect(url).to include("X-Goog-Signature=")
        expect(elapsed).to be_between(3, 9)
      end
    end

    it "raises TimeoutError with timeout: 1, naming the metadata server" do
      with_own_emulator do |own|
        signer = signer_on(own, timeout: 1)
        cold_from = monotonic
        e, elapsed = timed do
          own.configure("metadata" => { "cold_start_ms" => 4000 })
          signer.signed_url(**request, object: "cold")
        rescue GitlabGcsSigner::Error => e
          e
        end
        expect(e).to be_an_instance_of(GitlabGcsSigner::TimeoutError)
        expect(e.message).to include("timeout:", "metadata server")
        # Without the timeout the call would last the 4 s of silence.
        expect(elapsed).to be < 3
        # The lookup the call gave up on (the account's email) goes on and
        # serves the next call once the metadata server answers.
        sleep 0.05 until monotonic > cold_from + 4
        expect(signer.signed_url(**request, object: "warm")).to include("X-Goog-Signature=")
        expect(own.stats["email_requests"]).to eq(1)
      end
    end
  end

  it "releases the GVL while signBlob waits: another Ruby thread makes progress" do
    signer = keyless_signer
    signer.signed_url(**request, object: "warm-up") # token and email in hand
    emulator.configure("iam" => { "latency_ms" => 1000 })
    ticks = Queue.new
    ticker = Thread.new { loop { ticks << monotonic; sleep 0.01 } }
    wait_until("the ticker's first tick") { !ticks.empty? }
    started = monotonic
    signer.signed_url(**request, object: "slow")
    finished = monotonic
    ticker.kill.join
    times = Array.new(ticks.size) { ticks.pop }
    expect(finished - started).to be >= 1.0
    # Held for the second signBlob takes, the GVL would keep the ticker out
    # for all of it (one gap of 1 s). Released, the ticker runs throughout;
    # a loaded machine only spaces its ticks further apart, by far less.
    gaps = [started, *times.select { |t| t > started && t < finished }, finished].each_cons(2).map { |a, b| b - a }
    expect(gaps.max).to be < 0.5
  end

  describe "interrupts" do
    before { emulator.configure("iam" => { "latency_ms" => 5000 }) }

    # timeout: 20 gives each attempt 10 s, so a 5 s signBlob still succeeds.
    let(:signer) { keyless_signer(timeout: 20).tap(&:email) }

    it "Timeout.timeout ends a slow signBlob promptly, and the signer still works after" do
      _, elapsed = timed do
        expect { Timeout.timeout(0.2) { signer.signed_url(**request, object: "slow") } }.to raise_error(Timeout::Error)
      end
      # Not interrupted, the call would wait the 5 s signBlob takes.
      expect(elapsed).to be < 3
      emulator.configure("iam" => { "latency_ms" => 0 })
      expect(signer.signed_url(**request, object: "other")).to include("X-Goog-Signature=")
      # The abandoned flight for "slow" lands (5 s later) or is retried, but never poisons the key.
      url = signer.signed_url(**request, object: "slow")
      emulator.client.put_object("b", "slow", "ok")
      expect(gcs(url).code).to eq("200")
    end

    it "Thread#kill ends a waiting thread promptly; its followers and later callers are served" do
      waiter = Thread.new { signer.signed_url(**request, object: "killed") }
      wait_until("the waiter's signBlob on the wire") { emulator.stats["sign_blob_calls"] == 1 }
      follower = Thread.new { signer.signed_url(**request, object: "killed") }
      wait_until("the follower in the waiter's flight") { signer.stats[:coalesced] == 1 }
      _, elapsed = timed do
        waiter.kill
        waiter.join(10)
      end
      expect(waiter).not_to be_alive
      # Not interrupted, the waiter would wait for the signBlob answer (5 s
      # after it was sent, a moment ago).
      expect(elapsed).to be < 3
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
      wait_until("the waiter's signBlob on the wire") { emulator.stats["sign_blob_calls"] == 1 }
      waiter.raise(Interrupt)
      # Not interrupted, the waiter would wait for the 5 s signBlob answer.
      expect(waiter.join(3)&.value).to be_a(Interrupt)
    end
  end
end
