# frozen_string_literal: true

# `gitlab-gcs-signer doctor` against the emulator: every check passing, and
# each one failing with the emulator fault that causes it in production.
RSpec.describe "gitlab-gcs-signer doctor", :cli, :emulator do
  let(:email) { emulator_email }
  let(:project) { email[/@([^.]+)\./, 1] }

  def doctor(*args, env: {})
    cli("doctor", "--metadata-host", emulator.host, "--iam-endpoint", emulator.url, *args, env: env)
  end

  def doctor_json(*args)
    run = doctor("--json", *args)
    [run, run.json["checks"].to_h { |c| [c["name"], c] }]
  end

  def line(run, title)
    run.out.lines.find { |l| l =~ /\A(PASS|FAIL|SKIP)\s+#{Regexp.escape(title)}\s/ } or
      raise "no #{title.inspect} line in:\n#{run.out}"
  end

  # The "fix:" line printed under a check's line.
  def fix_for(run, title)
    lines = run.out.lines
    following = lines[lines.index(line(run, title)) + 1]
    following&.strip&.start_with?("fix: ") ? following.strip.delete_prefix("fix: ") : nil
  end

  it "passes every check on a healthy setup and exits 0" do
    run = doctor("--bucket", "uploads", "--gcs-endpoint", emulator.url)
    expect(run.status).to eq(0), run.out + run.err
    expect(run.out).to start_with("gitlab-gcs-signer #{GitlabGcsSigner::VERSION} doctor\n")
    {
      "metadata server" => /#{Regexp.escape(emulator.host)} answered with Metadata-Flavor: Google/,
      "service account" => /#{Regexp.escape(email)} \(a Google service account\)/,
      "token scopes" => %r{auth/cloud-platform allows signBlob},
      "signBlob" => /signed a test blob as #{Regexp.escape(email)} \(2048-bit RSA signature/,
      "clock skew" => /0 s against the metadata server, 0 s against IAM/,
      "bucket access" => %r{signed HEAD gs://uploads/gitlab-gcs-signer-doctor-probe: 404, the signature was accepted}
    }.each do |title, message|
      expect(line(run, title)).to start_with("PASS").and match(message)
      expect(fix_for(run, title)).to be_nil
    end
    expect(run.out).to end_with("All checks passed.\n")
    # The probe went through the emulator's verifier; signBlob signed the
    # test blob and the probe URL.
    expect(emulator.stats).to include("verifications_passed" => 1, "sign_blob_ok" => 2)
  end

  it "probes through the gem's own HTTP client: Net::HTTP is never loaded" do
    script = <<~RUBY
      require "gitlab_gcs_signer/cli"
      require "stringio"
      out = StringIO.new
      code = GitlabGcsSigner::CLI.start(ARGV, out: out, err: out, env: {})
      abort(out.string) unless code.zero?
      puts defined?(Net::HTTP).inspect
    RUBY
    out, err, status = Open3.capture3({ "HOME" => Dir.tmpdir }, RbConfig.ruby, "-w", "-I", CliHelpers::LIB, "-e", script,
                                      "doctor", "--metadata-host", emulator.host, "--iam-endpoint", emulator.url,
                                      "--bucket", "uploads", "--gcs-endpoint", emulator.url)
    expect(status.exitstatus).to eq(0), out + err
    expect(out).to eq("nil\n")
    # Every probe reached the emulator: the metadata server twice (email,
    # scopes), the bucket once through the verifier.
    expect(emulator.stats).to include("verifications_passed" => 1)
  end

  it "reads the hosts from GCE_METADATA_HOST and GCS_SIGNER_IAM_ENDPOINT" do
    run = cli("doctor", env: { "GCE_METADATA_HOST" => emulator.host, "GCS_SIGNER_IAM_ENDPOINT" => emulator.url })
    expect(run.status).to eq(0), run.out
    expect(run.out).to include("metadata host: #{emulator.host}\n", "IAM endpoint:  #{emulator.url}\n")
  end

  it "prints the universe domain (--universe-domain, else GOOGLE_CLOUD_UNIVERSE_DOMAIN, else googleapis.com)" do
    # The IAM endpoint stays the emulator's: the derived https://iamcredentials.example.test
    # would need DNS (spec/fog/universe_spec.rb signs through it with a loopback-only /etc/hosts).
    run = cli("doctor", "--metadata-host", emulator.host, "--iam-endpoint", emulator.url, "--json",
              env: { "GOOGLE_CLOUD_UNIVERSE_DOMAIN" => "example.test" })
    expect(run.json).to include("universe_domain" => "example.test", "iam_endpoint" => emulator.url)
    expect(doctor("--universe-domain", "Example.Test").out).to include("universe:      example.test\n")
    expect(doctor.out).to include("universe:      googleapis.com\n")
  end

  it "prints one JSON document with --json" do
    run, checks = doctor_json("--bucket", "uploads", "--gcs-endpoint", emulator.url)
    expect(run.status).to eq(0)
    doc = run.json
    expect(doc).to include("version" => GitlabGcsSigner::VERSION, "ok" => true,
                           "metadata_host" => emulator.host, "iam_endpoint" => emulator.url)
    expect(checks.keys).to eq(%w[metadata identity scopes sign_blob clock bucket])
    expect(checks.values.map { |c| c["status"] }.uniq).to eq(["pass"])
    expect(checks["sign_blob"]["details"]).to eq("email" => email, "identity" => "iam:metadata:#{emulator.host}")
    expect(checks["scopes"]["details"]).to eq("default_scopes" => ["https://www.googleapis.com/auth/cloud-platform"])
    expect(checks["clock"]["details"]).to eq("metadata_server" => 0, "iam" => 0)
    expect(checks["bucket"]["details"]).to include("bucket" => "uploads", "status" => 404)
    expect(checks.values).to all(include("fix" => nil))
  end

  it "reports JSON failures with ok: false, the fix, and exit 1" do
    emulator.configure("deny_sign_blob" => true)
    run, checks = doctor_json
    expect(run.status).to eq(1)
    expect(run.json["ok"]).to be(false)
    expect(checks["sign_blob"]).to include("status" => "fail")
    expect(checks["sign_blob"]["details"]).to include("error" => "GitlabGcsSigner::PermissionDeniedError")
    expect(checks["sign_blob"]["fix"]).to include("roles/iam.serviceAccountTokenCreator")
    expect(checks["metadata"]["status"]).to eq("pass")
  end

  describe "metadata server" do
    it "fails when nothing answers, and skips what depends on it" do
      run = cli("doctor", "--metadata-host", "127.0.0.1:#{closed_port}", "--iam-endpoint", "http://127.0.0.1:#{closed_port}")
      expect(run.status).to eq(1)
      expect(line(run, "metadata server")).to start_with("FAIL").and include("cannot reach the metadata server").and match(/Connection refused/i)
      expect(fix_for(run, "metadata server")).to include("169.254.169.254:80", "GCE_METADATA_HOST")
      %w[service\ account token\ scopes signBlob clock\ skew].each do |title|
        expect(line(run, title)).to start_with("SKIP")
      end
      expect(run.out).to end_with("1 of 5 checks failed.\n")
    end

    it "reaches the metadata server directly, whatever the proxy settings, as the gem does" do
      proxy = "http://127.0.0.1:#{closed_port}"
      run = doctor(env: { "http_proxy" => proxy, "HTTP_PROXY" => proxy, "NO_PROXY" => "" })
      expect(line(run, "metadata server")).to start_with("PASS")
      expect(line(run, "token scopes")).to start_with("PASS")
    end

    it "fails when the answer lacks Metadata-Flavor: Google (not genuine)" do
      emulator.configure("metadata" => { "no_flavor" => true })
      run = doctor
      expect(run.status).to eq(1)
      expect(line(run, "metadata server")).to start_with("FAIL").and include("without the Metadata-Flavor: Google header", "not a genuine")
      expect(fix_for(run, "metadata server")).to include("NO_PROXY=169.254.169.254,metadata.google.internal")
      expect(line(run, "signBlob")).to start_with("SKIP")
    end
  end

  describe "service account" do
    it "fails on PROJECT.svc.id.goog with the kubectl annotate command" do
      emulator.configure("email" => "#{project}.svc.id.goog")
      run = doctor
      expect(run.status).to eq(1)
      expect(line(run, "service account")).to start_with("FAIL").and include("reports #{project}.svc.id.goog", "not mapped")
      expect(fix_for(run, "service account")).to include(
        "kubectl annotate serviceaccount KSA --namespace NAMESPACE " \
        "iam.gke.io/gcp-service-account=GSA@#{project}.iam.gserviceaccount.com",
        "--role=roles/iam.workloadIdentityUser --member=\"serviceAccount:#{project}.svc.id.goog[NAMESPACE/KSA]\""
      )
      # The gem's own error, as the application would see it.
      expect(line(run, "signBlob")).to start_with("FAIL").and include("GitlabGcsSigner::WorkloadIdentityError")
    end

    it "passes with --service-account even when the pod is not mapped" do
      emulator.configure("email" => "#{project}.svc.id.goog")
      run = doctor("--service-account", email)
      expect(run.status).to eq(0), run.out
      expect(line(run, "service account")).to start_with("PASS")
        .and include("signing as #{email} (given); the metadata server reports #{project}.svc.id.goog")
    end
  end

  describe "token scopes" do
    let(:storage_only) { ["https://www.googleapis.com/auth/devstorage.read_write"] }

    it "fails when the metadata server ignores the requested scope (GCE) and signBlob refuses the token" do
      emulator.configure("default_scopes" => storage_only, "honour_scopes_param" => false)
      run = doctor
      expect(run.status).to eq(1)
      expect(line(run, "token scopes")).to start_with("FAIL").and include("devstorage.read_write")
      expect(fix_for(run, "token scopes")).to include(
        "--workload-metadata=GKE_METADATA",
        "gcloud compute instances set-service-account VM --service-account #{email} --scopes=cloud-platform"
      )
      expect(line(run, "signBlob")).to start_with("FAIL").and include("InsufficientScopeError", "issue 599")
    end

    it "passes, with a note, when the default scopes lack cloud-platform but the requested scope is honoured (GKE)" do
      emulator.configure("default_scopes" => storage_only)
      run = doctor
      expect(run.status).to eq(0), run.out
      expect(line(run, "token scopes")).to start_with("PASS").and include("lack cloud-platform", "a GCE VM would not")
    end
  end

  describe "signBlob" do
    it "fails without roles/iam.serviceAccountTokenCreator, printing the gcloud command for this account" do
      emulator.configure("deny_sign_blob" => true)
      run = doctor
      expect(run.status).to eq(1)
      expect(line(run, "signBlob")).to start_with("FAIL").and include("GitlabGcsSigner::PermissionDeniedError")
      expect(fix_for(run, "signBlob")).to eq(
        "gcloud iam service-accounts add-iam-policy-binding #{email} --member=serviceAccount:#{email} " \
        "--role=roles/iam.serviceAccountTokenCreator (new bindings take 2-7 minutes to apply)"
      )
      expect(run.out).to end_with("1 of 5 checks failed.\n")
    end

    it "fails when the IAM Credentials API is disabled" do
      emulator.configure("api_disabled" => true)
      run = doctor
      expect(fix_for(run, "signBlob")).to eq("gcloud services enable iamcredentials.googleapis.com --project #{project}")
      expect(line(run, "signBlob")).to include("GitlabGcsSigner::ApiDisabledError")
    end
  end

  describe "clock skew" do
    # now_override pins the emulator's Date at one second, so the skew the
    # doctor reads shrinks by however long its process takes to start and
    # probe (seconds on a loaded machine). Runs the block with the Date
    # pinned +offset+ s from now; returns its value and the skews (rounded,
    # as reported) that the times before and after the run allow.
    def with_date_pinned(offset)
      before = Time.now.to_f
      pinned = before.to_i + offset
      emulator.configure("now_override" => pinned)
      run = yield
      [run, (pinned - Time.now.to_f).floor..(pinned - before).ceil]
    end

    it "fails when this clock is ahead of the servers' (and GCS refuses the probe as not yet valid)" do
      emulator.configure("now_override" => Time.now.to_i - 600)
      run = doctor("--bucket", "uploads", "--gcs-endpoint", emulator.url)
      expect(run.status).to eq(1)
      expect(line(run, "clock skew")).to start_with("FAIL").and match(/clock is (59[5-9]|6\d\d) s ahead of/)
      expect(fix_for(run, "clock skew")).to include("NTP")
      expect(line(run, "bucket access")).to start_with("FAIL").and include("403 AccessDenied", "not valid yet")
      expect(fix_for(run, "bucket access")).to include("fix this machine's clock")
    end

    it "fails when this clock is behind (URLs expire early)" do
      run, allowed = with_date_pinned(900) { doctor("--bucket", "uploads", "--gcs-endpoint", emulator.url) }
      expect(line(run, "clock skew")).to start_with("FAIL").and match(/clock is \d+ s behind .*expire early/)
      expect(Integer(line(run, "clock skew")[/clock is (\d+) s behind/, 1])).to be_between(allowed.begin, allowed.end)
      expect(line(run, "bucket access")).to start_with("FAIL").and include("ExpiredToken")
    end

    # The server's Date is truncated to the second and was read somewhere
    # in the exchange: a correct clock must read 0 s however the exchange
    # straddles a second (a midpoint estimate read +1 s here in CI).
    it "reads only the skew the Date header proves" do
      require "gitlab_gcs_signer/cli/doctor_probes"
      probes = Class.new { include GitlabGcsSigner::CLI::DoctorProbes }.new
      probe = GitlabGcsSigner::CLI::DoctorProbes::Probe
      skew = ->(sent, received, date) { probes.send(:skew, probe.new(sent: sent, received: received, date: date)) }
      expect(skew.(100.2, 101.3, 101.0)).to eq(0)
      expect(skew.(100.9, 100.95, 100.0)).to eq(0)
      expect(skew.(100.0, 100.1, 160.0)).to be_within(1e-9).of(59.9)
      expect(skew.(100.0, 100.1, 40.0)).to be_within(1e-9).of(-59.0)
    end

    it "passes within the limit" do
      run, allowed = with_date_pinned(10) { doctor }
      expect(run.status).to eq(0)
      expect(line(run, "clock skew")).to start_with("PASS").and match(/(\+\d+|0) s against the metadata server/)
      skews = line(run, "clock skew").scan(/([+-]\d+|0) s against/).flatten.map { |v| Integer(v) }
      expect(skews.size).to eq(2) # the metadata server and IAM
      expect(skews).to all(be_between(allowed.begin, allowed.end))
    end
  end

  describe "bucket access" do
    it "passes with 200 when the probe object exists" do
      emulator.client.put_object("uploads", "probe/here.txt", "hi")
      run = doctor("--bucket", "uploads", "--object", "probe/here.txt", "--gcs-endpoint", emulator.url)
      expect(run.status).to eq(0), run.out
      expect(line(run, "bucket access")).to start_with("PASS").and include("gs://uploads/probe/here.txt: 200")
    end

    it "fails when GCS keeps answering an error" do
      emulator.configure("gcs" => { "fail_next" => [503] })
      run = doctor("--bucket", "uploads", "--gcs-endpoint", emulator.url)
      expect(run.status).to eq(1)
      expect(line(run, "bucket access")).to start_with("FAIL").and include("signed HEAD answered HTTP 503")
    end

    it "fails when the endpoint is unreachable" do
      run = doctor("--bucket", "uploads", "--gcs-endpoint", "http://127.0.0.1:#{closed_port}")
      expect(line(run, "bucket access")).to start_with("FAIL").and include("could not reach").and match(/Connection refused/i)
    end

    it "is skipped when signBlob fails" do
      emulator.configure("deny_sign_blob" => true)
      run = doctor("--bucket", "uploads", "--gcs-endpoint", emulator.url)
      expect(line(run, "bucket access")).to start_with("SKIP")
      expect(emulator.stats["gcs_requests"]).to eq(0)
    end
  end

  it "rejects bad command lines with exit 64" do
    [["--frob"], ["extra"], ["--object", "x"], ["--iam-endpoint", "ftp://x"], ["--bucket"]].each do |args|
      run = doctor(*args)
      expect(run.status).to eq(64), "#{args.inspect}: #{run.out}#{run.err}"
      expect(run.err).to include("gitlab-gcs-signer doctor: ", "Run 'gitlab-gcs-signer doctor --help' for usage.")
      expect(run.out).to eq("")
    end
  end
end
