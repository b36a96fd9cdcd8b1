# frozen_string_literal: true

require "gitlab_gcs_signer/fog"

# Every public entry point, given bad input, raises ArgumentError or a
# documented GitlabGcsSigner::Error with a message, and the process goes on:
# no segfault, abort or Rust panic. spec/signer/arguments_spec.rb covers
# signed_url's basic refusals; this covers the rest, huge inputs, and a
# seeded fuzz of the public and the native methods (keyword Hashes of junk).
RSpec.describe "bad input" do
  let(:key_signer) { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY) }
  let(:good) { { bucket: "b", object: "o", expires_in: 600 } }
  let(:invalid_utf8) { "\xff\xfe".dup.force_encoding(Encoding::UTF_8) }
  let(:binary_high) { "caf\xC3".b }
  let(:documented) { [ArgumentError, GitlabGcsSigner::Error] }

  # The outcome of a call: :ok, or the error class, with a message required.
  def outcome
    yield
    :ok
  rescue ArgumentError, GitlabGcsSigner::Error => e
    raise "#{e.class} without a message" if e.message.strip.empty?

    e.class
  end

  def expect_refused(&block)
    result = outcome(&block)
    expect(result).not_to eq(:ok)
    expect(result <= ArgumentError || result <= GitlabGcsSigner::Error).to be(true)
  end

  describe "Signer.new" do
    # Keyless options point at a closed loopback port: Signer.new does no I/O,
    # and nothing here signs, so no request is ever made.
    let(:offline) { { metadata_host: "127.0.0.1:1", iam_endpoint: "http://127.0.0.1:1" } }

    {
      credentials: [42, [], :key, "", "   ", "{", "{\"type\": 5}", "/dev/null", "\0", "x" * 10_000_000],
      service_account_email: [42, :a, ["a@b"], "a\0b"],
      metadata_host: [42, :h, "a\0b"],
      iam_endpoint: [42, "ftp://x", "127.0.0.1:1", "a\0b"],
      delegates: [[1], [nil], { a: 1 }, 42, ["a\0b"]],
      cache: [true, nil, 42, "yes", { ttl: 1 }, { extension_ratio: Float::NAN }, { extension_ratio: -0.1 },
              { extension_ratio: "0.1" }, { max_extension: -1 }, { max_extension: 10**9 }, { max_entries: -1 },
              { max_entries: 2**64 }, { max_entries: 1.5 }],
      timeout: [0, -1, Float::NAN, Float::INFINITY, 3601, "10", nil, Complex(1, 1), 10**30],
      max_sign_blob_per_minute: [0, -1, 1.5, nil, 2**64, "60"],
      max_sign_blob_in_flight: [0, -1, 1.5, nil, 2**64, 10_001],
      clock: [Object.new, 5, Time.now]
    }.each do |option, values|
      values.each do |value|
        it "refuses #{option}: #{value.inspect[0, 40]}" do
          expect_refused { GitlabGcsSigner::Signer.new(**offline, option => value) }
        end
      end
    end

    [:invalid_utf8, :binary_high].each do |name|
      %i[credentials service_account_email metadata_host iam_endpoint].each do |option|
        it "refuses #{option} as #{name}" do
          expect_refused { GitlabGcsSigner::Signer.new(**offline, option => send(name)) }
        end
      end
    end

    it "refuses unknown options" do
      expect { GitlabGcsSigner::Signer.new(**offline, metdata_host: "x") }
        .to raise_error(ArgumentError, /unknown keyword: :metdata_host/)
    end

    it "raises CredentialsError for credentials of the wrong shape, naming no secret" do
      expect { GitlabGcsSigner::Signer.new(credentials: { "type" => "service_account", "private_key" => "SECRET" }) }
        .to raise_error(GitlabGcsSigner::CredentialsError) { |e| expect(e.message).not_to include("SECRET") }
    end
  end

  describe "signed_url and string_to_sign" do
    huge = "x" * 10_000_000
    {
      "a 10 MB object name" => { object: huge },
      "a 10 MB bucket name" => { bucket: huge },
      "a 10 MB host" => { host: huge },
      "a 10 MB method" => { method: huge },
      "a bignum expiry" => { expires_in: 2**100 },
      "a Complex expiry" => { expires_in: Complex(1, 1) },
      "an infinite expiry" => { expires_in: Float::INFINITY },
      "a tiny negative expiry" => { expires_in: -1e-300 },
      "an expires_at String" => { expires_in: nil, expires_at: "2030-01-01" },
      "an expires_at NaN" => { expires_in: nil, expires_at: Float::NAN },
      "an expires_at a century away (V2)" => { expires_in: nil, expires_at: Time.now + (100 * 365 * 86_400), version: :v2 },
      "an expires_at Time beyond the C time range" => { expires_in: nil, expires_at: Time.at(2**70) },
      "a timestamp before 1970" => { timestamp: -1 },
      "a timestamp after 9999" => { timestamp: 253_402_300_800 },
      "a bignum timestamp" => { timestamp: 2**70 },
      "a timestamp String" => { timestamp: "now" },
      "a non-ASCII method" => { method: "PÖST" },
      "a method with a control character" => { method: "GE\u0001T" },
      "a Symbol header value" => { headers: { "a" => :b } },
      "an Array header value" => { headers: { "a" => ["x"] } },
      "an Integer header name" => { headers: { 1 => "a" } },
      "a header name with a colon" => { headers: { "a:b" => "c" } },
      "a header name with a space" => { headers: { "a b" => "c" } },
      "a header value with NUL" => { headers: { "a" => "b\0c" } },
      "headers as nil" => { headers: nil },
      "query as an Array" => { query: [%w[a b]] },
      "a V4 query repeating X-Goog-Signature" => { query: { "X-Goog-Signature" => "00" } },
      "a v2_path with a space" => { version: :v2, v2_path: "b/a b" },
      "an empty v2_path" => { version: :v2, v2_path: "" },
      "a bucket-bound hostname with a slash" => { url_style: :bucket_bound_hostname, bucket_bound_hostname: "a/b" },
      "a version nil" => { version: nil },
      "a url_style Integer" => { url_style: 5 },
      "a scheme Symbol" => { scheme: :https },
      "a bucket with a control character" => { bucket: "b\u0001" },
      "an object with a carriage return" => { object: "a\rb" }
    }.each do |what, change|
      it "refuses #{what}" do
        expect_refused { key_signer.signed_url(**good, **change) }
        expect_refused { key_signer.string_to_sign(**good, **change) }
      end
    end

    %i[bucket object method scheme host].each do |field|
      it "refuses #{field} in invalid UTF-8 or undecodable binary" do
        expect_refused { key_signer.signed_url(**good, field => invalid_utf8) }
        expect_refused { key_signer.signed_url(**good, field => binary_high) }
      end
    end

    it "signs text in other encodings after converting it to UTF-8" do
      url = key_signer.signed_url(**good, object: "café".encode(Encoding::UTF_16LE))
      expect(url).to include("/b/caf%C3%A9?")
    end

    it "signs control characters other than CR/LF percent-encoded (Cloud Storage allows them)" do
      expect(key_signer.signed_url(**good, object: "a\u0001\tb")).to include("/b/a%01%09b?")
    end

    it "handles 100k headers and 100k query parameters without crashing" do
      headers = Array.new(100_000) { |i| ["x-goog-meta-#{i}", "v#{i}"] }.to_h
      query = Array.new(100_000) { |i| ["p#{i}", "v#{i}"] }.to_h
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      v4 = outcome { key_signer.signed_url(**good, headers: headers) }
      v2 = outcome { key_signer.signed_url(**good, version: :v2, headers: headers, query: query) }
      q4 = outcome { key_signer.signed_url(**good, query: query) }
      expect([v4, v2, q4]).to all(satisfy { |o| o == :ok || o <= ArgumentError || o <= GitlabGcsSigner::Error })
      # A bound against a hang, not a benchmark.
      expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 60
    end
  end

  describe "sign_blob" do
    [nil, 42, :sym, ["a"], { a: 1 }].each do |value|
      it "refuses #{value.inspect}" do
        expect { key_signer.sign_blob(value) }.to raise_error(ArgumentError, /String/)
      end
    end

    it "signs any bytes, empty, binary and 10 MB alike" do
      ["", "\0\xff".b, invalid_utf8, "x" * 10_000_000].each do |bytes|
        expect(key_signer.sign_blob(bytes).bytesize).to eq(256)
      end
    end
  end

  describe "the other public methods" do
    it "refuses arguments to methods that take none" do
      %i[email stats cache_config inspect].each do |name|
        expect { key_signer.public_send(name, 1) }.to raise_error(ArgumentError)
      end
    end

    it "refuses a default_signer that is not a Signer" do
      [nil, "signer", Object.new, key_signer.instance_variable_get(:@native)].each do |value|
        expect { GitlabGcsSigner.default_signer = value }.to raise_error(ArgumentError, /GitlabGcsSigner::Signer/)
      end
    end

    it "refuses bad Fog.install! arguments before changing anything" do
      version = GitlabGcsSigner::Fog.version
      expect { GitlabGcsSigner::Fog.install!(version: :v3) }.to raise_error(ArgumentError, /version/)
      expect { GitlabGcsSigner::Fog.install!(version: "v2") }.to raise_error(ArgumentError, /version/)
      expect { GitlabGcsSigner::Fog.install!(signer: "x") }.to raise_error(ArgumentError, /signer/)
      expect { GitlabGcsSigner::Fog.install!(bogus: 1) }.to raise_error(ArgumentError, /unknown keyword/)
      expect(GitlabGcsSigner::Fog.version).to eq(version)
    end

    it "refuses ManualClock values that are not finite numbers" do
      clock_class = GitlabGcsSigner::Testing::ManualClock
      [nil, "x", Float::NAN, Float::INFINITY, -Float::INFINITY, [1]].each do |value|
        expect { clock_class.new(value) }.to raise_error(ArgumentError)
        clock = clock_class.new(1_700_000_000)
        expect { clock.advance(value) }.to raise_error(ArgumentError)
        expect { clock.set(value) }.to raise_error(ArgumentError)
        expect(clock.now).to eq(1_700_000_000)
      end
      expect { clock_class.new }.to raise_error(ArgumentError)
      expect { clock_class.new(1e30) }.to raise_error(ArgumentError, /range/)
    end
  end

  # Random junk into every native method, as keyword Hashes, the way a caller
  # bypassing the Ruby layer would: only ArgumentError (TypeError included in
  # the conversion) or a GitlabGcsSigner::Error, and the process lives on.
  describe "seeded fuzz of the native methods" do
    junk = lambda do |rng|
      [nil, true, 0, -1, 2**64, 1.5, Float::NAN, "", "v4", "GET", "x" * rng.rand(0..300), "\xff".b, :v4, [], [["a", "b"]],
       [[1, 2]], [["a"]], {}, Object.new, 600.0, 1e300, "path", "bucket_bound_hostname"].sample(random: rng)
    end

    it "never crashes Native::Signer#signed_url, #string_to_sign and .new" do
      rng = Random.new(Integer(ENV.fetch("GCS_SIGNER_FUZZ_SEED", 20_240)))
      native = key_signer.instance_variable_get(:@native)
      request_keys = %i[version method bucket object headers query scheme host url_style bucket_bound_hostname
                        v2_path expires_in expires_at timestamp bogus]
      signer_keys = %i[service_account_email delegates cache timeout max_sign_blob_per_minute
                       max_sign_blob_in_flight clock bogus]
      results = Hash.new(0)
      3000.times do
        request = request_keys.sample(rng.rand(0..15), random: rng).to_h { |k| [k, junk.call(rng)] }
        request = junk.call(rng) if rng.rand(10).zero?
        results[outcome { native.signed_url(request) }] += 1
        results[outcome { native.string_to_sign(request) }] += 1
      end
      300.times do
        # Offline: a metadata host on a closed port, and nothing here signs.
        options = signer_keys.sample(rng.rand(0..8), random: rng).to_h { |k| [k, junk.call(rng)] }
        options = options.merge(metadata_host: "127.0.0.1:1", iam_endpoint: "http://127.0.0.1:1")
        results[outcome { GitlabGcsSigner::Native::Signer.new(options) }] += 1
      end
      expect(results.keys - [:ok]).to all(satisfy { |c| c <= ArgumentError || c <= GitlabGcsSigner::Error })
    end
  end
end
