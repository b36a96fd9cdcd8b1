# frozen_string_literal: true

require "socket"
require "tmpdir"
require_relative "support/keyless_helper"

# Every failure a keyless pod meets, end to end from Ruby against the
# emulator: the right GitlabGcsSigner::Error subclass, and a message that
# says what is wrong and what fixes it, with no token in it.
RSpec.describe "keyless errors", :emulator do
  let(:request) { { bucket: "b", object: "o.txt", expires_in: 600 } }

  def error_from(signer = keyless_signer, **extra)
    signer.signed_url(**request, **extra)
    raise "expected signing to fail"
  rescue GitlabGcsSigner::Error => e
    expect(e.message).not_to match(KeylessHelpers::SECRET_LOOKING)
    expect(e.class.ancestors).to include(GitlabGcsSigner::Error, StandardError)
    e
  end

  it "PermissionDeniedError names the role to grant and the account" do
    emulator.configure("deny_sign_blob" => true)
    e = error_from
    expect(e).to be_an_instance_of(GitlabGcsSigner::PermissionDeniedError)
    expect(e.message).to include("roles/iam.serviceAccountTokenCreator", emulator_email, "add-iam-policy-binding")
    expect(emulator.stats["sign_blob_calls"]).to eq(1) # a 403 is an answer, not retried
  end

  it "InsufficientScopeError when the metadata server issues a token without cloud-platform (GCE access scopes)" do
    with_own_emulator(config: { "honour_scopes_param" => false,
                                "default_scopes" => ["https://www.googleapis.com/auth/devstorage.read_write"] }) do |own|
      e = error_from(signer_on(own))
      expect(e).to be_an_instance_of(GitlabGcsSigner::InsufficientScopeError)
      expect(e).to be_a(GitlabGcsSigner::PermissionDeniedError)
      expect(e.message).to include("cloud-platform", "issue 599", emulator_email)
    end
  end

  it "ApiDisabledError says which API to enable and how" do
    emulator.configure("api_disabled" => true)
    e = error_from
    expect(e).to be_an_instance_of(GitlabGcsSigner::ApiDisabledError)
    expect(e.message).to include("gcloud services enable iamcredentials.googleapis.com")
  end

  it "WorkloadIdentityError for an unmapped pod (email PROJECT.svc.id.goog), before any signBlob call" do
    # An emulator of its own: the email is asked for once per process and metadata host.
    with_own_emulator(config: { "email" => "proj.svc.id.goog" }) do |own|
      e = error_from(signer_on(own))
      expect(e).to be_an_instance_of(GitlabGcsSigner::WorkloadIdentityError)
      expect(e).to be_a(GitlabGcsSigner::CredentialsError)
      expect(e.message).to include("iam.gke.io/gcp-service-account", "service_account_email:", "proj.svc.id.goog")
      expect(own.stats["sign_blob_calls"]).to eq(0)
      # Not remembered: once the pod is mapped (here: the emulator fixed), signing works.
      own.configure("email" => nil)
      expect(signer_on(own).signed_url(**request)).to include("X-Goog-Signature=")
    end
  end

  it "WorkloadIdentityError when service_account_email: itself is a .svc.id.goog name (signBlob's 400)" do
    e = error_from(keyless_signer(service_account_email: "proj.svc.id.goog"))
    expect(e).to be_an_instance_of(GitlabGcsSigner::WorkloadIdentityError)
    expect(e.message).to include("iam.gke.io/gcp-service-account", "service_account_email:")
  end

  it "QuotaError within the timeout when every signBlob answer is 429" do
    emulator.configure("iam" => { "rate_429" => 1.0 })
    e, elapsed = timed { error_from(keyless_signer(timeout: 2)) }
    expect(e).to be_an_instance_of(GitlabGcsSigner::QuotaError)
    expect(e.message).to include("60,000", emulator_email)
    # The 2 s budget plus a second for a loaded machine; without the budget
    # the retries would go on.
    expect(elapsed).to be < 3
    expect(emulator.stats["sign_blob_calls"]).to be > 1 # retried with backoff, not given up at once
  end

  it "ServiceUnavailableError or TimeoutError when signBlob answers 503 beyond the deadline" do
    emulator.configure("iam" => { "rate_503" => 1.0 })
    e, elapsed = timed { error_from(keyless_signer(timeout: 1.5)) }
    expect(e).to be_a(GitlabGcsSigner::ServiceUnavailableError).or be_a(GitlabGcsSigner::TimeoutError)
    expect(e.message).to include("503").or include("timeout:")
    expect(elapsed).to be < 2.5 # the 1.5 s budget plus a second for a loaded machine
    expect(emulator.stats["sign_blob_calls"]).to be > 1
  end

  it "TimeoutError when signBlob hangs, naming the timeout: option" do
    emulator.configure("iam" => { "timeout_rate" => 1.0, "timeout_ms" => 5000 })
    e, elapsed = timed { error_from(keyless_signer(timeout: 1)) }
    expect(e).to be_an_instance_of(GitlabGcsSigner::TimeoutError)
    expect(e.message).to include("`timeout:`")
    expect(elapsed).to be < 3 # the 1 s budget, not the 5 s hang (the attempt timeout)
  end

  it "MetadataError when the metadata server's answer lacks Metadata-Flavor: Google" do
    with_own_emulator(config: { "metadata" => { "no_flavor" => true } }) do |own|
      e = error_from(signer_on(own))
      expect(e).to be_an_instance_of(GitlabGcsSigner::MetadataError)
      expect(e.message).to include("Metadata-Flavor", own.host, "GCE_METADATA_HOST")
    end
  end

  it "TimeoutError naming the host and the refused connection when nothing listens at the metadata host" do
    port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] } # closed again: connection refused
    signer = GitlabGcsSigner::Signer.new(metadata_host: "127.0.0.1:#{port}", iam_endpoint: emulator.url, timeout: 1.5)
    e, elapsed = timed { error_from(signer) }
    expect(e).to be_an_instance_of(GitlabGcsSigner::TimeoutError)
    expect(e.message).to include("127.0.0.1:#{port}", "connection failed", "GCE_METADATA_HOST", "service_account_email:")
    expect(elapsed).to be < 2.5 # the 1.5 s budget plus a second for a loaded machine
  end

  it "ProtocolError when the metadata server's token answer is not JSON" do
    with_own_emulator do |own|
      own.configure("metadata" => { "fail_next" => ["garbage"] })
      e = error_from(signer_on(own, service_account_email: emulator_email))
      expect(e).to be_an_instance_of(GitlabGcsSigner::ProtocolError)
      expect(e.message).to include("token", own.host)
    end
  end

  it "ProtocolError when signBlob answers 200 with something that is not a signBlob response" do
    emulator.configure("iam" => { "garbage" => true })
    e = error_from
    expect(e).to be_an_instance_of(GitlabGcsSigner::ProtocolError)
    expect(e.message).to include("signedBlob", "iam_endpoint:")
  end

  describe "credential files that cannot sign" do
    {
      "authorized_user" => { "type" => "authorized_user", "client_id" => "c", "client_secret" => "SECRET-CS",
                             "refresh_token" => "SECRET-RT" },
      "external_account" => { "type" => "external_account", "audience" => "//iam.googleapis.com/x",
                              "subject_token_type" => "urn:ietf:params:oauth:token-type:jwt",
                              "token_url" => "https://sts.googleapis.com/v1/token", "credential_source" => { "file" => "/x" } }
    }.each do |type, file|
      it "CredentialsError for #{type}, saying what works instead" do
        Dir.mktmpdir do |dir|
          path = File.join(dir, "adc.json")
          File.write(path, JSON.generate(file))
          expect { GitlabGcsSigner::Signer.new(credentials: path) }.to raise_error(GitlabGcsSigner::CredentialsError) { |e|
            expect(e.message).to include(type, path, "--impersonate-service-account", "Workload Identity")
            expect(e.message).not_to include("SECRET")
          }
        end
      end
    end
  end

  it "GOOGLE_APPLICATION_CREDENTIALS: a key file signs locally; an authorized_user file is refused by name" do
    Dir.mktmpdir do |dir|
      user = File.join(dir, "user.json")
      File.write(user, JSON.generate("type" => "authorized_user", "client_id" => "c", "client_secret" => "s",
                                     "refresh_token" => "r"))
      script = <<~RUBY
        require "gitlab_gcs_signer"
        signer = GitlabGcsSigner::Signer.new(metadata_host: "127.0.0.1:1", iam_endpoint: "http://127.0.0.1:1")
        puts signer.identity, signer.email
        puts signer.signed_url(bucket: "b", object: "o", expires_in: 600, timestamp: 1_700_000_000)
        begin
          ENV["GOOGLE_APPLICATION_CREDENTIALS"] = #{user.inspect}
          GitlabGcsSigner::Signer.new
        rescue GitlabGcsSigner::CredentialsError => e
          puts e.message
        end
      RUBY
      status, out, err = run_ruby(script, env: { "GOOGLE_APPLICATION_CREDENTIALS" => CONFORMANCE_KEY, "HOME" => dir })
      expect(status).to be_success, err
      identity, email, url, refusal = out.lines.map(&:chomp)
      expect(identity).not_to start_with("iam:")
      expect(email).to eq(emulator_email)
      expect(url).to eq(key_signer.signed_url(bucket: "b", object: "o", expires_in: 600, timestamp: 1_700_000_000))
      expect(refusal).to include("GOOGLE_APPLICATION_CREDENTIALS", user, "authorized_user")
    end
  end

  it "never shows a token in inspect, stats or any message after a token was used" do
    signer = keyless_signer
    signer.signed_url(**request)
    emulator.revoke_tokens!
    emulator.configure("deny_sign_blob" => true)
    e = error_from(signer, object: "other")
    shown = [signer.inspect, signer.to_s, signer.stats.inspect, signer.identity, e.message, e.inspect, e.full_message]
    shown.each { |text| expect(text).not_to match(KeylessHelpers::SECRET_LOOKING) }
  end
end
