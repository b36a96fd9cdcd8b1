# frozen_string_literal: true

require_relative "../spec_helper"

# Issue 15 m6, m7, m9, m10: requests no URL can honour are refused with an
# ArgumentError that names what to change, and the number or option it
# names is the caller's.
RSpec.describe "request rules" do
  let(:signer) { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY) }
  let(:good) { { bucket: "b", object: "o", expires_in: 600 } }

  # m6: V2 writes GoogleAccessId, Signature and Expires itself; a caller's
  # copy would appear twice (V4 already refuses its own X-Goog-* names).
  it "refuses V2 query parameters that V2 signing sets itself" do
    %w[Expires Signature GoogleAccessId expires SIGNATURE googleaccessid].each do |name|
      expect { signer.signed_url(**good, version: :v2, query: { name => "1" }) }
        .to raise_error(ArgumentError, /query parameter "#{name}" is set by V2 signing itself/)
    end
    expect { signer.signed_url(**good, query: { "X-Goog-Signature" => "1" }) }
      .to raise_error(ArgumentError, /set by V4 signing itself/)
    expect(signer.signed_url(**good, version: :v2, query: { "Expiresx" => "1" })).to include("Expiresx=1&GoogleAccessId=")
  end

  # m7: a host that is no host name, and names no URL can reach.
  it "refuses hosts that are not host[:port]" do
    ["evil.com]:1:2", "[::1", "a:1:2", "a:0", "a:65536", "a..b", "[]", "[::1]x", "a:b", "[zz::1]"].each do |host|
      expect { signer.signed_url(**good, host: host) }.to raise_error(ArgumentError, /is not a host name/), host
      expect { signer.signed_url(**good, url_style: :bucket_bound_hostname, bucket_bound_hostname: host) }
        .to raise_error(ArgumentError, /bucket_bound_hostname/), host
    end
    ["127.0.0.1:8080", "[::1]:9000", "[::1]", "storage.example.org"].each do |host|
      expect(signer.signed_url(**good, host: host)).to start_with("https://#{host}/b/o?")
    end
  end

  it "refuses dot-segment buckets and object names with dot segments, for V2 and V4" do
    %i[v2 v4].each do |version|
      %w[. ..].each do |bucket|
        expect { signer.signed_url(**good, version: version, bucket: bucket) }
          .to raise_error(ArgumentError, /not a valid bucket name/)
      end
      ["../secret", "a/../../b", "./x", "a/.", "a/.."].each do |object|
        expect { signer.signed_url(**good, version: version, object: object) }
          .to raise_error(ArgumentError, /"\." or "\.\." path segment/), object
      end
      ["a..b/...", ".hidden/x.", "a/.b"].each do |object|
        expect(signer.signed_url(**good, version: version, object: object)).to include("/b/")
      end
    end
    expect { signer.signed_url(**good, version: :v2, v2_path: "b/%2E%2e/secret") }
      .to raise_error(ArgumentError, /path segment/)
  end

  # m9: the caller's number, not its Float rounding or a saturated i64.
  it "reports an out-of-range expiry as given" do
    expect { signer.signed_url(**good, expires_in: 2**64) }
      .to raise_error(ArgumentError, /can live at most 604800 seconds \(7 days\); 18446744073709551616 seconds were asked/)
    expect { signer.signed_url(**good, version: :v2, expires_in: 2**64) }
      .to raise_error(ArgumentError, /18446744073709551616 seconds were asked/)
    expect { signer.signed_url(**good, expires_in: 604_802) }.to raise_error(ArgumentError, /604802 seconds were asked/)
    expect { signer.signed_url(**good, expires_in: -2**64) }
      .to raise_error(ArgumentError, /positive number of seconds, got -18446744073709551616/)
    expect { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, max_sign_blob_in_flight: 2**64) }
      .to raise_error(ArgumentError, /max_sign_blob_in_flight must be an Integer from 1 to 10000, got 18446744073709551616/)
  end

  # m10: a Numeric whose to_s is not a String is a bad argument, not a TypeError.
  it "refuses a Numeric query or header value whose to_s is not a String with ArgumentError" do
    odd = Class.new(Numeric) { def to_s = 42 }.new
    expect { signer.signed_url(**good, query: { "a" => odd }) }.to raise_error(ArgumentError, /query\["a"\]\.to_s must be a String/)
    expect { signer.signed_url(**good, headers: { "x-goog-meta-a" => odd }) }.to raise_error(ArgumentError, /must be a String/)
    expect(signer.signed_url(**good, query: { "n" => 12, "f" => 1.5, "r" => 3r })).to include("f=1.5", "n=12", "r=3%2F1")
  end
end

# m9: a message names only options that exist.
RSpec.describe "quota guard messages", :emulator do
  it "names max_sign_blob_per_minute:, the option that exists" do
    throttled = keyless_signer(max_sign_blob_per_minute: 1, timeout: 0.5)
    throttled.signed_url(bucket: "b", object: "q1", expires_in: 600)
    expect { throttled.signed_url(bucket: "b", object: "q2", expires_in: 600) }
      .to raise_error(GitlabGcsSigner::QuotaError) { |e|
        expect(e.message).to include("`max_sign_blob_per_minute:`")
        expect(e.message).not_to match(/`max_(per_minute|in_flight):`/)
      }
    known = GitlabGcsSigner::Signer.instance_method(:initialize).parameters.map(&:last) +
            GitlabGcsSigner::DEFAULTS[:signer].keys + GitlabGcsSigner::DEFAULTS[:cache].keys
    source = Dir[File.expand_path("../../src/**/*.rs", __dir__)].map { |f| File.read(f) }.join
    source.scan(/`(max_[a-z_]+):`/).flatten.uniq.each do |option|
      expect(known).to include(option.to_sym), "src/ names `#{option}:`, which Signer.new does not take"
    end
  end
end
