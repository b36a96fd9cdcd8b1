# frozen_string_literal: true

require "open3"
require "rbconfig"
require_relative "../spec_helper"

# Issue 14 item 3: every default and limit is defined once, in the core
# (src/config.rs), exported as GitlabGcsSigner::DEFAULTS and enforced with
# one message, whichever way a value arrives.
RSpec.describe "GitlabGcsSigner::DEFAULTS" do
  let(:defaults) { GitlabGcsSigner::DEFAULTS }
  let(:config_rs) { File.read(File.expand_path("../../src/config.rs", __dir__)) }

  it "holds the core's defaults and limits, frozen" do
    expect(defaults).to be_frozen
    expect(defaults.values).to all(be_frozen)
    expect(defaults[:signer]).to eq(timeout: 10.0, max_sign_blob_per_minute: 6000, max_sign_blob_in_flight: 64)
    expect(defaults[:cache]).to eq(extension_ratio: 0.1, max_extension: 300, max_entries: 20_000)
    expect(defaults[:limits]).to include(v4_max_expires_in: 604_800, sign_blob_max_serve: 43_200,
                                         timeout_max: 3600.0, max_sign_blob_in_flight_max: 10_000)
    expect(defaults[:endpoints]).to include(storage_host: "storage.googleapis.com", metadata_host: "169.254.169.254",
                                            iam_endpoint: "https://iamcredentials.googleapis.com")
    expect(GitlabGcsSigner::Signer::CACHE_DEFAULTS).to equal(defaults[:cache])
    out, status = Open3.capture2e(RbConfig.ruby, "-I", File.expand_path("../../lib", __dir__), "-e",
                                  'require "gitlab_gcs_signer"; p GitlabGcsSigner::DEFAULTS')
    expect(status).to be_success
    expect(out).to include(":max_sign_blob_per_minute=>6000", ":v4_max_expires_in=>604800")
  end

  it "is what a default signer uses" do
    signer = GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY)
    expect(signer.cache_config).to eq(defaults[:cache])
  end

  # The same text from Ruby as from the core: each message below is pinned,
  # verbatim, by src/config.rs's own test of the function that makes it, and
  # Ruby raises exactly it (no Ruby-side check with its own wording).
  {
    "timeout must be a number of seconds, more than 0 and at most 3600, got 0.0" =>
      -> { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, timeout: 0.0) },
    "max_sign_blob_in_flight must be an Integer from 1 to 10000, got 0" =>
      -> { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, max_sign_blob_in_flight: 0) },
    "max_sign_blob_per_minute must be an Integer from 1 to 1000000, got 18446744073709551616" =>
      -> { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, max_sign_blob_per_minute: 2**64) },
    "cache extension_ratio must be between 0.0 and 1.0, got 2.0" =>
      -> { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, cache: { extension_ratio: 2.0 }) },
    "cache max_entries must be an Integer from 1 to 100000000, got 0" =>
      -> { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, cache: { max_entries: 0 }) },
    "a V4 URL can live at most 604800 seconds (7 days); 604801 seconds were asked; pass a shorter expiry" =>
      -> { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY).signed_url(bucket: "b", object: "o", expires_in: 604_801) }
  }.each do |message, call|
    it "raises the core's own text: #{message[0, 50]}..." do
      expect(config_rs).to include(message.inspect)
      expect { call.call }.to raise_error(ArgumentError) { |e| expect(e.message).to eq(message) }
    end
  end

  it "has its V4 lifetime rule enforced with one message however the expiry is given" do
    signer = GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY)
    now = Time.now.to_i
    by_at = -> { signer.signed_url(bucket: "b", object: "o", expires_at: now + 604_900, timestamp: now) }
    expect(&by_at).to raise_error(ArgumentError, /\Aa V4 URL can live at most 604800 seconds \(7 days\); 604900 seconds were asked/)
    expect { signer.string_to_sign(bucket: "b", object: "o", expires_in: 604_900) }
      .to raise_error(ArgumentError, /\Aa V4 URL can live at most 604800 seconds \(7 days\); 604900 seconds were asked/)
    [{}, { expires_in: 1, expires_at: Time.now + 60 }].each do |expiry|
      expect { signer.signed_url(bucket: "b", object: "o", **expiry) }
        .to raise_error(ArgumentError, "give exactly one of expires_in: (seconds) or expires_at: (a Time)")
    end
  end

  # Ruby reads the constant: no limit or default is written out in lib/.
  it "is the only place lib/ takes a number limit from" do
    numbers = [6000, 64, 604_800, 43_200, 20_000, 3600, 86_400, 100_000_000, 10_000, 1_000_000, 222, 1024]
    pattern = /(?<![\w.])(#{numbers.flat_map { |n| [n.to_s, n.to_s.reverse.scan(/\d{1,3}/).join('_').reverse] }.uniq.join('|')})(?![\w.])/
    offenders = Dir[File.expand_path("../../lib/gitlab_gcs_signer/{signer,shared_cache,observability,fog}.rb", __dir__)]
                .flat_map { |f| File.readlines(f).map(&:strip).grep_v(/\A#/).grep(pattern).map { |l| "#{File.basename(f)}: #{l}" } }
    expect(offenders).to eq([])
  end
end
