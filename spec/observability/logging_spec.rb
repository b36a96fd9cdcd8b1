# frozen_string_literal: true

require "logger"
require "stringio"

# GitlabGcsSigner.logger: retries, token refreshes and errors, drained from
# the core's event queue after misses, never a secret.
RSpec.describe "GitlabGcsSigner.logger", :emulator do
  let(:io) { StringIO.new }
  let(:log) { io.string }

  before do
    GitlabGcsSigner.flush_log_events # events of earlier examples, to the old logger
    logger = Logger.new(io, level: Logger::DEBUG)
    logger.formatter = proc { |severity, _time, _prog, message| "#{severity} #{message}\n" }
    GitlabGcsSigner.logger = logger
  end

  after { GitlabGcsSigner.logger = nil }

  def sign(signer, object = "o")
    signer.signed_url(bucket: "uploads", object: object, expires_in: 600)
  end

  it "logs a signBlob retry after a 503 as a warning" do
    emulator.configure("iam" => { "fail_next" => [503] })
    url = sign(keyless_signer)
    expect(log).to match(/^WARN gitlab-gcs-signer: signBlob: retrying in \d+\.\d\d s after unavailable: .*HTTP 503/)
    expect(log).not_to include("ERROR")
    expect(log).not_to include("ya29")
    expect(log).not_to include(url[/X-Goog-Signature=(\h+)/, 1])
  end

  it "logs the token refresh at debug level when IAM rejects a revoked token" do
    signer = keyless_signer
    sign(signer, "first")
    emulator.revoke_tokens!
    url = sign(signer, "second")
    expect(log).to match(/^DEBUG gitlab-gcs-signer: access token refreshed \(expires in 3599 s\)$/)
    expect(log).not_to include("WARN", "ERROR", "ya29")
    expect(log).not_to include(url[/X-Goog-Signature=(\h+)/, 1])
  end

  it "logs a metadata server retry" do
    # The token is shared process-wide (and held by any signer an earlier
    # example left installed, e.g. the fog shim's): revoking it makes this
    # call fetch a new one from the metadata server whatever ran before.
    emulator.revoke_tokens!
    emulator.configure("metadata" => { "fail_next" => [503] })
    sign(keyless_signer)
    expect(log).to match(/^WARN gitlab-gcs-signer: metadata server: retrying in .* after unavailable: HTTP 503/)
  end

  it "logs a failure at error level with the error class and its fix, once per failed call" do
    emulator.configure("deny_sign_blob" => true)
    signer = keyless_signer
    expect { sign(signer) }.to raise_error(GitlabGcsSigner::PermissionDeniedError)
    errors = log.lines.grep(/^ERROR/)
    expect(errors.size).to eq(1)
    expect(errors.first).to start_with("ERROR gitlab-gcs-signer: signing a v4 GET URL in bucket uploads failed: " \
                                       "GitlabGcsSigner::PermissionDeniedError: signBlob as #{emulator_email} was denied")
    expect(errors.first).to include("roles/iam.serviceAccountTokenCreator")
    expect(log).to match(/^DEBUG gitlab-gcs-signer: signBlob failed \(permission_denied\)/)
    expect(log).not_to include("ya29")
  end

  it "describes a failed fog shim call (a positional request) as it does a keyword one" do
    emulator.configure("deny_sign_blob" => true)
    expect { keyless_signer.fog_signed_url(:v2, nil, nil, nil, "uploads", "o", nil, nil, Time.now + 600, nil) }
      .to raise_error(GitlabGcsSigner::PermissionDeniedError)
    expect(log.lines.grep(/^ERROR/))
      .to contain_exactly(start_with("ERROR gitlab-gcs-signer: signing a v2 GET URL in bucket uploads failed: "))
  end

  it "logs a failed token refresh as a warning" do
    signer = keyless_signer(service_account_email: emulator_email)
    sign(signer, "first")
    emulator.revoke_tokens!
    emulator.configure("metadata" => { "fail_next" => [404] })
    expect { sign(signer, "second") }.to raise_error(GitlabGcsSigner::MetadataError)
    expect(log).to match(/^WARN gitlab-gcs-signer: access token refresh failed \(metadata\): .*HTTP 404/)
    expect(log).to match(/^ERROR gitlab-gcs-signer: .*GitlabGcsSigner::MetadataError/)
  end

  it "logs errors of sign_blob and email too" do
    emulator.configure("deny_sign_blob" => true)
    expect { keyless_signer.sign_blob("x") }.to raise_error(GitlabGcsSigner::PermissionDeniedError)
    expect(log).to match(/^ERROR gitlab-gcs-signer: signBlob failed: GitlabGcsSigner::PermissionDeniedError/)
  end

  it "does not touch the event queue on a cache hit" do
    signer = keyless_signer
    sign(signer)
    expect(GitlabGcsSigner::Native).not_to receive(:drain_events)
    3.times { sign(signer) }
  end

  it "defaults to Rails.logger when Rails is loaded, else to a null logger" do
    GitlabGcsSigner.logger = nil
    expect(GitlabGcsSigner.logger).to be(GitlabGcsSigner::Observability::NULL_LOGGER)
    rails_logger = Logger.new(io)
    stub_const("Rails", Module.new { define_singleton_method(:logger) { rails_logger } })
    expect(GitlabGcsSigner.logger).to be(rails_logger)
    custom = Logger.new(io)
    GitlabGcsSigner.logger = custom
    expect(GitlabGcsSigner.logger).to be(custom)
  end

  it "keeps logging in a forked child (a fresh event queue there)" do
    signer = keyless_signer
    sign(signer)
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      child_log = StringIO.new
      GitlabGcsSigner.logger = Logger.new(child_log)
      emulator.configure("iam" => { "fail_next" => [503] })
      sign(signer, "child")
      writer.write(child_log.string)
      writer.close
      exit!(0)
    end
    writer.close
    child_output = reader.read
    Process.wait(pid)
    expect(child_output).to include("signBlob: retrying in")
  end
end
