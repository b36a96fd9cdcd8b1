# frozen_string_literal: true

require "active_support"
require "active_support/notifications"

# ActiveSupport::Notifications events for Signer#signed_url.
RSpec.describe "sign_url.gitlab_gcs_signer instrumentation", :emulator do
  let(:signer) { keyless_signer }
  let(:request) { { bucket: "uploads", object: "secret/report.pdf", expires_in: 600, query: { "response-content-type" => "application/pdf" } } }

  # Events recorded while the block runs.
  def events
    recorded = []
    subscriber = ActiveSupport::Notifications.subscribe(GitlabGcsSigner::SIGN_URL_EVENT) do |*args|
      recorded << ActiveSupport::Notifications::Event.new(*args)
    end
    yield
    recorded
  ensure
    ActiveSupport::Notifications.unsubscribe(subscriber)
  end

  it "has a documented name" do
    expect(GitlabGcsSigner::SIGN_URL_EVENT).to eq("sign_url.gitlab_gcs_signer")
  end

  it "reports a miss, then a hit, with method, bucket and version, and the duration" do
    # signBlob answers after 300 ms: the miss's duration has a floor that
    # does not depend on how busy the machine is.
    emulator.configure("iam" => { "latency_ms" => 300 })
    urls = []
    recorded = events do
      urls << signer.signed_url(**request)
      urls << signer.signed_url(**request)
      urls << signer.signed_url(**request, method: :put, version: :v2)
    end
    expect(recorded.map(&:payload)).to eq([
      { cache: :miss, method: "GET", bucket: "uploads", version: :v4 },
      { cache: :hit, method: "GET", bucket: "uploads", version: :v4 },
      { cache: :miss, method: "PUT", bucket: "uploads", version: :v2 }
    ])
    expect(recorded.map(&:name).uniq).to eq(["sign_url.gitlab_gcs_signer"])
    # A miss went to signBlob over HTTP; a hit did not leave the process.
    expect(recorded[0].duration).to be >= 300
    expect(recorded[1].duration).to be < recorded[0].duration
    # Never the URL, its signature, its query or the object name.
    urls.each do |url|
      signature = url[/(?:X-Goog-Signature|Signature)=([^&]+)/, 1]
      expect(recorded.map { |e| e.payload.to_s }.join).not_to include(signature)
    end
    expect(recorded.map { |e| e.payload.values.join(" ") }.join).not_to match(/report|pdf|X-Goog|ya29/)
  end

  it "reports the fog shim's positional requests with the same payload as keyword ones" do
    expires = Time.now + 600
    recorded = events do
      2.times { signer.fog_signed_url(:v2, "PUT", "https", nil, "uploads", "o.bin", nil, nil, expires, nil) }
      signer.fog_signed_url(:v4, nil, nil, nil, "uploads", "o.bin", nil, nil, expires, nil)
    end
    expect(recorded.map(&:payload)).to eq([
      { cache: :miss, method: "PUT", bucket: "uploads", version: :v2 },
      { cache: :hit, method: "PUT", bucket: "uploads", version: :v2 },
      { cache: :miss, method: "GET", bucket: "uploads", version: :v4 }
    ])
  end

  it "reports the error class and message on failure, as a miss" do
    emulator.configure("deny_sign_blob" => true)
    recorded = events do
      expect { signer.signed_url(**request) }.to raise_error(GitlabGcsSigner::PermissionDeniedError)
    end
    payload = recorded.first.payload
    expect(payload).to include(cache: :miss, method: "GET", bucket: "uploads", version: :v4)
    expect(payload[:exception]).to match(["GitlabGcsSigner::PermissionDeniedError", /roles\/iam.serviceAccountTokenCreator/])
    expect(payload[:exception_object]).to be_a(GitlabGcsSigner::PermissionDeniedError)
  end

  it "leaves cache nil when the arguments are rejected before signing" do
    recorded = events do
      expect { signer.signed_url(**request, expires_in: 10 * 86_400) }.to raise_error(ArgumentError)
    end
    expect(recorded.first.payload).to include(cache: nil, bucket: "uploads")
  end

  it "does not instrument at all while nobody listens" do
    expect(ActiveSupport::Notifications.notifier.listening?(GitlabGcsSigner::SIGN_URL_EVENT)).to be(false)
    expect(ActiveSupport::Notifications).not_to receive(:instrumenter)
    expect(ActiveSupport::Notifications).not_to receive(:instrument)
    2.times { signer.signed_url(**request) }
  end

  it "gives one-argument subscribers (ActiveSupport::Notifications::Event) the payload and duration" do
    emulator.configure("iam" => { "latency_ms" => 300 })
    recorded = []
    subscriber = ActiveSupport::Notifications.subscribe(GitlabGcsSigner::SIGN_URL_EVENT) { |event| recorded << event }
    2.times { signer.signed_url(**request) }
    expect(recorded.map { |e| e.payload[:cache] }).to eq(%i[miss hit])
    expect(recorded.map(&:duration)).to all(be >= 0)
    expect(recorded.first.duration).to be >= 300 # the miss waited for signBlob
    expect(recorded.last.duration).to be < recorded.first.duration
  ensure
    ActiveSupport::Notifications.unsubscribe(subscriber)
  end

  it "subscribes beside the signing pipeline, which signs on its own" do
    expect(GitlabGcsSigner::Signing.subscriber).to be(GitlabGcsSigner::Observability)
    expect(GitlabGcsSigner::Observability).not_to respond_to(:signed_url)
    previous = GitlabGcsSigner::Signing.subscriber
    seen = []
    recorder = Object.new
    recorder.define_singleton_method(:call_started) do |what, _args|
      seen << [:started, what]
      :handle
    end
    recorder.define_singleton_method(:call_finished) do |started, what, _args, status, error, _stale = nil|
      seen << [:finished, started, what, status, error&.class]
    end
    GitlabGcsSigner::Signing.subscriber = recorder
    2.times { signer.signed_url(**request) }
    expect { signer.signed_url(**request, expires_in: 10 * 86_400) }.to raise_error(ArgumentError)
    expect(seen).to eq([
      [:started, :sign_url], [:finished, :handle, :sign_url, :miss, nil],
      [:started, :sign_url], [:finished, :handle, :sign_url, :hit, nil],
      [:started, :sign_url], [:finished, :handle, :sign_url, nil, ArgumentError]
    ])
    GitlabGcsSigner::Signing.subscriber = nil
    expect(signer.signed_url(**request, object: "unobserved")).to include("unobserved")
  ensure
    GitlabGcsSigner::Signing.subscriber = previous
  end
end
