# frozen_string_literal: true

require "timeout"

# Issue 15 M1: only the store's own failures degrade to the local level. An
# exception raised into the thread while it waits for the store (what
# Timeout.timeout(s, Timeout::Error) or a request timeout's Thread#raise
# does) propagates, and the breaker stays closed for everyone else.
RSpec.describe GitlabGcsSigner::SharedCache, :emulator do
  # A store whose calls can be held, or made to fail, by the spec.
  class SharedCacheGatedStore
    attr_reader :entered
    attr_accessor :error

    def initialize
      @data = {}
      @entered = Queue.new
      @gate = nil
      @error = nil
    end

    def hold!
      @gate = Queue.new
    end

    def read(key, **)
      arrive
      @data[key]
    end

    def write(key, value, unless_exist: false, **)
      arrive
      return false if unless_exist && @data.key?(key)

      @data[key] = value
      true
    end

    def read_multi(*keys, **)
      arrive
      @data.slice(*keys)
    end

    def delete(key, **)
      arrive
      !@data.delete(key).nil?
    end

    private

    def arrive
      raise @error if @error

      return unless @gate

      @entered << true
      @gate.pop
    end
  end

  let(:store) { SharedCacheGatedStore.new }
  let(:signer) { keyless_signer(shared_cache: described_class.new(store)) }

  def sign(name)
    signer.signed_url(bucket: "b", object: name, expires_in: 600)
  end

  it "lets an exception raised into the thread during a store read propagate, breaker closed" do
    signer.email
    store.hold!
    waiter = Thread.new { sign("held") }
    waiter.report_on_exception = false
    store.entered.pop
    waiter.raise(Timeout::Error, "request timed out")
    expect { waiter.value }.to raise_error(Timeout::Error, "request timed out")
    expect(signer.stats).to include(shared_errors: 0, shared_breaker_open: 0, shared_breaker_opens: 0)
  end

  it "does not swallow a bug in the store either" do
    store.error = NoMethodError.new("undefined method `get' for nil")
    expect { sign("buggy") }.to raise_error(NoMethodError, /get/)
    expect(signer.stats).to include(shared_errors: 0, shared_breaker_open: 0)
  end

  it "still degrades to the local level on the store's own failures" do
    stub_const("Redis::CannotConnectError", Class.new(StandardError))
    stub_const("Redis::BaseError", Class.new(StandardError))
    failures = [Errno::ECONNREFUSED.new("127.0.0.1:6379"), IOError.new("closed stream"),
                Class.new(Timeout::Error).new("client read timeout"),
                Class.new(Redis::BaseError).new("connection lost")]
    failures.each_with_index do |error, i|
      store.error = error
      fresh = keyless_signer(shared_cache: described_class.new(store))
      expect(sign_with(fresh, "down/#{i}")).to include("X-Goog-Signature=")
      expect(fresh.stats).to include(shared_errors: 1, shared_breaker_open: 1)
    end
  end

  def sign_with(signer, name)
    signer.signed_url(bucket: "b", object: name, expires_in: 600)
  end
end
