# frozen_string_literal: true

# What the gem exposes is what it means to support: test hooks (simulated
# time) live in spec/support/manual_clock.rb, not in the public API.
RSpec.describe "GitlabGcsSigner's public surface" do
  it "has no clock: keyword on Signer.new" do
    expect { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, clock: nil) }
      .to raise_error(ArgumentError, /unknown keyword: :clock/)
    keywords = GitlabGcsSigner::Signer.instance_method(:initialize).parameters.map(&:last)
    expect(keywords).not_to include(:clock)
  end

  it "keeps the simulated clock out of the public namespaces" do
    expect(GitlabGcsSigner::Native.const_defined?(:ManualClock, false)).to be(false)
    expect(GitlabGcsSigner::Native::Testing::ManualClock).to be(GitlabGcsSigner::Testing::ManualClock)
    expect(GitlabGcsSigner::Signer).not_to respond_to(:on_clock)
    expect(GitlabGcsSigner::Signer.private_methods).to include(:on_clock)
  end

  it "builds a signer on a simulated clock through the test support only" do
    clock = GitlabGcsSigner::Testing::ManualClock.new(1_700_000_000)
    signer = GitlabGcsSigner::Testing.signer(credentials: CONFORMANCE_KEY, clock: clock)
    url = signer.signed_url(bucket: "b", object: "o", expires_in: 60)
    expect(url).to include("X-Goog-Date=20231114T221320Z")
    expect { GitlabGcsSigner::Signer.send(:on_clock, Object.new, credentials: CONFORMANCE_KEY) }
      .to raise_error(ArgumentError, /ManualClock/)
  end

  it "has no SharedCache#signed_url (the pipeline lives in one place)" do
    expect(GitlabGcsSigner::SharedCache.method_defined?(:signed_url)).to be(false)
  end
end
