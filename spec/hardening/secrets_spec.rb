# frozen_string_literal: true

require "logger"
require "stringio"
require "tempfile"
require "uri"

# Access tokens, the private key and signatures never appear in anything the
# gem can print: exception messages (full_message, inspect, backtraces),
# inspect/to_s of signers and clocks, stats, the gem's logger (debug level),
# its ActiveSupport::Notifications payloads, and whatever reaches the
# process's stdout/stderr (file descriptors 1 and 2, so native output is
# caught too). The run goes through every error path the
# emulator can produce, with keyless and key signers, and through fog.
RSpec.describe "secrets never leak", :emulator do
  include FogHelpers

  let(:log) { StringIO.new }
  let(:texts) { [] }
  let(:urls) { [] }
  let(:blobs) { [] }
  let(:pem_lines) do
    JSON.parse(File.read(CONFORMANCE_KEY))["private_key"].lines.map(&:strip).reject { |l| l.empty? || l.start_with?("-----") }
  end

  def record(value)
    texts << value.to_s
  end

  # Runs a call and records everything about its outcome.
  # A success is a secret itself (a signed URL, a signature), so it is kept
  # for the scan, not printed.
  def attempt(what)
    result = yield
    if result.is_a?(String) && result.start_with?("http")
      urls << result
    elsif result.is_a?(String)
      blobs << result
    end
  rescue StandardError => e
    record(what)
    record(e.message)
    record(e.full_message(highlight: false))
    record(e.inspect)
    record(e.detailed_message) if e.respond_to?(:detailed_message)
    Logger.new(log).error(e)
  end

  def record_signer(signer)
    [signer.inspect, signer.to_s, signer.stats.inspect, signer.cache_config.inspect, signer.identity,
     signer.instance_variable_get(:@native).inspect].each { |t| record(t) }
  end

  # Redirects file descriptors 1 and 2 while the block runs.
  def capturing_fds
    files = [Tempfile.new("out"), Tempfile.new("err")]
    saved = [$stdout.dup, $stderr.dup]
    $stdout.reopen(files[0])
    $stderr.reopen(files[1])
    yield
  ensure
    $stdout.flush
    $stderr.flush
    $stdout.reopen(saved[0])
    $stderr.reopen(saved[1])
    files.each do |f|
      record(File.read(f.path))
      f.close!
    end
  end

  def keyless(**options)
    keyless_signer(timeout: 0.5, **options)
  end

  # The secret values a run produced: signatures in every form a URL carries.
  def signatures
    blobs.flat_map { |b| [b.unpack1("H*"), [b].pack("m0")] } + urls.flat_map do |url|
      query = URI.decode_www_form(URI.parse(url).query).to_h
      v4 = query["X-Goog-Signature"]
      v2 = query["Signature"]
      [v4, v2, v2 && v2.delete("\n"), v2 && URI.encode_www_form_component(v2),
       v2 && v2.unpack1("m").unpack1("H*")].compact
    end
  end

  def leaks(secrets)
    haystack = texts.join("\n") + log.string
    secrets.select { |s| s.size >= 16 && haystack.include?(s) }
  end

  def faulted(config)
    emulator.reset!
    emulator.configure(config)
    signer = keyless
    yield signer
    record_signer(signer)
  end

  def run_every_error_path
    request = { bucket: "secrets", object: "a b/é.txt", expires_in: 600 }
    v2 = request.merge(version: :v2, query: { "response-content-disposition" => "attachment" })
    # A working signer first: a token, and URLs whose signatures must not leak later.
    good = keyless
    attempt("v4") { good.signed_url(**request) }
    attempt("v2") { good.signed_url(**v2) }
    attempt("sign_blob") { good.sign_blob("payload") }
    record_signer(good)

    metadata_faults = [{ "garbage" => true }, { "truncated" => true }, { "no_flavor" => true }, { "rate_503" => 1.0 },
                       { "rate_429" => 1.0 }, { "timeout_rate" => 1.0 }, { "cold_start_ms" => 1000 }]
    metadata_faults.each do |fault|
      # Email lookups first (a fresh signer asks), then the token path: a
      # revoked token makes signBlob answer 401, and the new token request meets the fault.
      faulted({ "metadata" => fault }) { |s| attempt("email #{fault}") { s.signed_url(**request) } }
      faulted({ "metadata" => fault }) do |s|
        emulator.revoke_tokens!
        attempt("token #{fault}") { keyless(service_account_email: emulator_email).signed_url(**request, object: "t") }
        attempt("string_to_sign #{fault}") { s.string_to_sign(**request) }
        attempt("email() #{fault}") { s.email }
      end
    end
    iam_faults = [{ "iam" => { "rate_429" => 1.0 } }, { "iam" => { "rate_503" => 1.0 } }, { "iam" => { "garbage" => true } },
                  { "iam" => { "truncated" => true } }, { "iam" => { "timeout_rate" => 1.0 } },
                  { "iam" => { "fail_next" => [401, 401] } }, { "iam" => { "fail_next" => [500, 502, 504, 400] } },
                  { "deny_sign_blob" => true }, { "api_disabled" => true },
                  { "revoke_tokens" => true, "iam" => { "fail_next" => [401] } }]
    iam_faults.each do |fault|
      faulted(fault) do |s|
        attempt("iam #{fault}") { s.signed_url(**request) }
        attempt("iam v2 #{fault}") { s.signed_url(**v2) }
        attempt("iam sign_blob #{fault}") { s.sign_blob("bytes") }
      end
    end
    # An unmapped Workload Identity pod. The email is asked once per process
    # and metadata host, so this signer names the emulator by another name.
    faulted({ "email" => "dummy-project-id.svc.id.goog" }) do
      unmapped = keyless_signer(metadata_host: "localhost:#{emulator.port}", timeout: 0.5)
      attempt("unmapped") { unmapped.signed_url(**request) }
      record_signer(unmapped)
    end
    emulator.reset!
    # The client-side quota guard: one signBlob per minute, the second call is refused.
    throttled = keyless(max_sign_blob_per_minute: 1)
    attempt("guard 1") { throttled.signed_url(**request, object: "q1") }
    attempt("guard 2") { throttled.signed_url(**request, object: "q2") }
    record_signer(throttled)

    # Through fog-google, as GitLab calls it, with IAM refusing.
    emulator.configure("deny_sign_blob" => true)
    GitlabGcsSigner::Fog.install!(signer: keyless, version: :v2)
    attempt("fog") { keyless_storage.directories.new(key: "secrets").files.new(key: "o").url(Time.now + 600) }
    emulator.reset!

    # Key signers: bad and mangled keys, and a good one.
    key_json = JSON.parse(File.read(CONFORMANCE_KEY))
    mangled = [key_json.merge("private_key" => key_json["private_key"].sub("MII", "XXX")),
               key_json.merge("private_key" => key_json["private_key"].lines[0..5].join), key_json.merge("client_email" => nil),
               "\uFEFF#{File.read(CONFORMANCE_KEY)}", "[#{File.read(CONFORMANCE_KEY)}]", key_json["private_key"],
               File.read(CONFORMANCE_KEY).tr("{", "(")]
    mangled.each { |c| attempt("credentials") { GitlabGcsSigner::Signer.new(credentials: c).signed_url(**request) } }
    signer = key_signer
    attempt("key v4") { signer.signed_url(**request) }
    attempt("key bad") { signer.signed_url(**request, expires_in: -1) }
    attempt("key blob") { signer.sign_blob("x") }
    record_signer(signer)
    record(GitlabGcsSigner::Native::ManualClock.new(1_700_000_000).inspect)
  end

  # The gem's logger at debug level and its instrumentation events, for the run.
  def observing
    require "active_support" # ActiveSupport 7 needs its base before any part of it
    require "active_support/notifications"
    previous = GitlabGcsSigner::Observability.logger
    GitlabGcsSigner.logger = Logger.new(log, level: Logger::DEBUG)
    subscriber = ActiveSupport::Notifications.subscribe(GitlabGcsSigner::SIGN_URL_EVENT) do |*event|
      record(event.last.inspect)
    end
    yield
    GitlabGcsSigner.flush_log_events
    record(GitlabGcsSigner.stats.inspect)
  ensure
    ActiveSupport::Notifications.unsubscribe(subscriber) if subscriber
    GitlabGcsSigner::Observability.logger = previous
  end

  it "finds none of them in messages, inspect output, stats, logs, events, stdout or stderr" do
    capturing_fds { observing { run_every_error_path } }
    tokens = emulator.tokens
    secrets = tokens + pem_lines + signatures

    # The run did reach the error paths, produced tokens and signatures, and printed plenty.
    expect(tokens.size).to be >= 3
    expect(urls.size).to be >= 4
    expect(signatures.size).to be >= 4
    expect(blobs.size).to be >= 2
    all = texts.join("\n")
    # The logger saw the failures too (the gem logs each error it raises).
    expect(log.string).to include("gitlab-gcs-signer: ").and include("GitlabGcsSigner::TimeoutError")
    %w[MetadataError ProtocolError TimeoutError QuotaError PermissionDeniedError ApiDisabledError
       AuthenticationError WorkloadIdentityError CredentialsError].each do |klass|
      expect(all).to include("GitlabGcsSigner::#{klass}")
    end
    # The scan itself can see a secret.
    texts << "planted #{tokens.first}"
    expect(leaks(secrets)).to eq([tokens.first])
    texts.pop

    expect(leaks(secrets)).to eq([])
  end
end
