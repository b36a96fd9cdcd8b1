# frozen_string_literal: true

require "logger"
require "time"
require "active_support"
require "active_support/notifications"
require "stringio"

# Stale-if-error (README "Outages") against the emulator: when signing a
# miss fails because IAM or the metadata server is unavailable or the quota
# is exhausted, the URL cached for exactly the same request is served if it
# still works for the minimum life; authorisation and configuration errors
# are raised. Time runs on a ManualClock starting now; the emulator's GCS
# verifier is told the same time when it checks a served URL.
RSpec.describe "stale-if-error", :emulator do
  include OutageHelper

  let(:bucket) { "gitlab-uploads" }
  let(:object) { "uploads/1/report.pdf" }
  let(:clock) { GitlabGcsSigner::Testing::ManualClock.new(Time.now.to_i) }
  let(:t0) { clock.now }

  before { emulator.client.put_object(bucket, object, "pdf") }

  def signer(**options)
    keyless_signer(clock: clock, timeout: 3, **options)
  end

  # Seconds the URL works from the clock's now (V4: X-Goog-Date + X-Goog-Expires).
  def life_left(url)
    date = Time.strptime(url[/X-Goog-Date=(\w+)/, 1], "%Y%m%dT%H%M%S%z").to_i
    date + Integer(url[/X-Goog-Expires=(\d+)/, 1]) - clock.now.to_i
  end

  outages = {
    "signBlob 503 (retried until the deadline)" => [{ "iam" => { "rate_503" => 1.0 } }, :unavailable],
    "signBlob 429 (quota exhausted, after the back-off)" => [{ "iam" => { "rate_429" => 1.0 } }, :quota],
    "signBlob hangs (timeout)" => [{ "iam" => { "timeout_rate" => 1.0, "timeout_ms" => 5000 } }, :timeout]
  }
  outages.each do |name, (fault, kind)|
    it "serves the cached URL for the same request on #{name}" do
      s = signer
      url = download(s)
      clock.advance(120) # too short for a new 600 s request: 540 s left
      emulator.configure(fault)
      served = download(s)
      expect(served).to eq(url)
      expect(life_left(served)).to eq(540)
      expect(accepted?(served)).to be(true)
      expect(s.stats).to include(stale_served: 1, hits: 0)
      # another object has no stale URL: the error is raised
      expect { download(s, name: "uploads/2/other.pdf") }.to raise_error(GitlabGcsSigner::Error)
      expect(s.stats[:stale_unavailable]).to be >= 1
      expect(kind).to be_a(Symbol)
    end
  end

  it "serves stale when the metadata server is down and the token must be refetched" do
    s = signer
    url = download(s)
    clock.advance(120)
    emulator.revoke_tokens! # IAM answers 401, the gem asks the metadata server again...
    emulator.configure("metadata" => { "rate_503" => 1.0 }) # ...which keeps failing
    expect(download(s)).to eq(url)
    expect(s.stats[:stale_served]).to eq(1)
  end

  {
    "signBlob 403 permission denied" => [{ "deny_sign_blob" => true }, GitlabGcsSigner::PermissionDeniedError],
    "IAM Credentials API disabled" => [{ "api_disabled" => true }, GitlabGcsSigner::ApiDisabledError]
  }.each do |name, (config, error)|
    it "raises #{error.name.split('::').last} on #{name} although a stale URL is cached" do
      s = signer
      download(s)
      clock.advance(120)
      emulator.configure(config)
      expect { download(s) }.to raise_error(error)
      expect(s.stats).to include(stale_served: 0)
    end
  end

  it "serves a URL with exactly the minimum life left, not one second less" do
    s = signer(stale_if_error: { probe_interval: 0 })
    url = download(s) # expires at t0 + 660; minimum max(60, 10% of 600) = 60 s
    emulator.configure("iam" => { "rate_503" => 1.0 })
    clock.set(t0 + 600)
    expect(download(s)).to eq(url)
    expect(life_left(url)).to eq(60)
    expect(accepted?(url)).to be(true)
    clock.set(t0 + 601)
    expect { download(s) }.to raise_unavailable
  end

  it "uses the larger of min_life and min_ratio x lifetime" do
    s = signer(stale_if_error: { min_life: 30, min_ratio: 0.5, probe_interval: 0 })
    url = download(s) # 660 s; needs 300 s left
    emulator.configure("iam" => { "rate_429" => 1.0 })
    clock.set(t0 + 360)
    expect(download(s)).to eq(url)
    clock.set(t0 + 361)
    expect { download(s) }.to raise_error(GitlabGcsSigner::QuotaError)
  end

  it "never serves a URL for other parameters or a longer-lived one for a shorter request" do
    s = signer(stale_if_error: { probe_interval: 0 })
    download(s)
    clock.advance(120)
    emulator.configure("iam" => { "rate_503" => 1.0 })
    expect { download(s, query: { "response-content-disposition" => "inline" }) }.to raise_unavailable
    expect { download(s, query: {}) }.to raise_unavailable
    expect { download(s, method: "HEAD") }.to raise_unavailable
    # 540 s left would outlive a 60 s request by more than the cache allows
    expect { download(s, expires_in: 60) }.to raise_unavailable
    expect(s.stats[:stale_served]).to eq(0)
  end

  it "checks its options" do
    expect(signer.stale_config).to eq(min_life: 60, min_ratio: 0.1, probe_interval: 5)
    expect(signer.refresh_config).to be_nil
    expect(signer(refresh_ahead: true).refresh_config).to eq(lead: 0.25, max_quota_share: 0.1)
    # the defaults live in the core (src/config.rs), exported with the others
    expect(signer.stale_config).to eq(GitlabGcsSigner::DEFAULTS[:stale_if_error])
    expect(signer(refresh_ahead: true).refresh_config).to eq(GitlabGcsSigner::DEFAULTS[:refresh_ahead])
    expect(signer(cache: false).stale_config).to be_nil
    [{ min_life: 0 }, { min_ratio: 1.5 }, { probe_interval: -1 }, { wait: 1 }, "yes"].each do |bad|
      expect { signer(stale_if_error: bad) }.to raise_error(ArgumentError), bad.inspect
    end
    [{ lead: 1.0 }, { max_quota_share: 0 }, { every: 1 }].each do |bad|
      expect { signer(refresh_ahead: bad) }.to raise_error(ArgumentError), bad.inspect
    end
  end

  it "is off with stale_if_error: false" do
    s = signer(stale_if_error: false)
    expect(s.stale_config).to be_nil
    download(s)
    clock.advance(120)
    emulator.configure("iam" => { "rate_503" => 1.0 })
    expect { download(s) }.to raise_unavailable
  end

  it "answers at once during an outage and probes IAM once per probe_interval" do
    s = signer
    download(s)
    clock.advance(120)
    emulator.configure("iam" => { "rate_503" => 1.0 })
    download(s) # fails after the retries, served stale, starts the 5 s hold
    calls = emulator.stats["sign_blob_calls"]
    elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    5.times { download(s) }
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - elapsed).to be < 1.0
    expect(emulator.stats["sign_blob_calls"]).to eq(calls)
    # IAM is back: the probe after the hold signs a fresh URL
    emulator.configure("iam" => { "rate_503" => nil })
    clock.advance(5)
    fresh = download(s)
    expect(life_left(fresh)).to eq(660)
    expect(s.stats[:stale_served]).to eq(6)
  end

  it "works in a forked child (Puma, Sidekiq): stale answers and background refreshes" do
    s = signer(refresh_ahead: true)
    url = download(s)
    clock.advance(120)
    emulator.configure("iam" => { "rate_503" => 1.0 })
    pid = fork do
      served = download(s)
      emulator.configure("iam" => { "rate_503" => nil })
      clock.set(t0 + 160) # a 600 s request a minute later: a miss, signed in the child
      fresh = download(s)
      clock.set(t0 + 210) # 10 s of slack: refreshed in the background
      download(s)
      sleep 0.01 until s.stats[:refreshes] == 1
      exit!(served == url && fresh != url && s.stats[:stale_served] == 1 ? 0 : 1)
    end
    killer = Thread.new { sleep 30; Process.kill("KILL", pid) } # a hang is the bug looked for
    _, status = Process.wait2(pid)
    killer.kill
    expect(status.exitstatus).to eq(0)
  end

  describe "events, counters and the log" do
    let(:io) { StringIO.new }

    before do
      GitlabGcsSigner.flush_log_events
      GitlabGcsSigner.logger = Logger.new(io, level: Logger::DEBUG)
    end

    after { GitlabGcsSigner.logger = nil }

    it "instruments each stale answer, counts it and warns at most once a minute" do
      stale_events = []
      sign_events = []
      subs = [
        ActiveSupport::Notifications.subscribe(GitlabGcsSigner::STALE_URL_EVENT) { |*a| stale_events << a.last },
        ActiveSupport::Notifications.subscribe(GitlabGcsSigner::SIGN_URL_EVENT) { |*a| sign_events << a.last }
      ]
      s = signer
      before = GitlabGcsSigner.stats[:counters][:stale_served]
      download(s)
      clock.advance(120)
      emulator.configure("iam" => { "rate_503" => 1.0 })
      3.times { download(s) }
      expect(stale_events.size).to eq(3)
      expect(stale_events.first).to include(method: "GET", bucket: bucket, version: :v4, remaining: 540)
      expect(stale_events.first[:error]).to eq(:unavailable).or eq(:timeout) # timeout: a deadline hit mid-retry
      expect(stale_events.first.to_s).not_to include(object)
      expect(sign_events.map { |p| p[:cache] }).to eq(%i[miss stale stale stale])
      expect(s.stats[:stale_served]).to eq(3)
      expect(GitlabGcsSigner.stats[:counters][:stale_served] - before).to eq(3)
      warnings = io.string.scan(/WARN.*serving cached URLs with less life than asked.*/)
      expect(warnings.size).to eq(1)
      expect(warnings.first).to include("at least 60 s", "because signing failed")
      expect(warnings.first).to match(/\(unavailable\): .*HTTP 503|\(timeout\)/)
      clock.advance(60)
      download(s)
      expect(io.string.scan(/serving cached URLs with less life/).size).to eq(2)
    ensure
      subs&.each { |sub| ActiveSupport::Notifications.unsubscribe(sub) }
    end
  end
end
