# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/emulator_helper"

RSpec.describe "emulated IAM Credentials signBlob" do
  let(:payload) { "GET\n\n\n1700000000\n/bucket/object" }

  def error_info(response)
    error = google_error(response)
    [response.code.to_i, error["code"], error["status"], error.dig("details", 0, "reason")]
  end

  it "signs the payload with the key (RSASSA-PKCS1-v1_5 SHA-256) and names the key" do
    response = sign_blob(payload)
    expect(response.code).to eq("200")
    body = JSON.parse(response.body)
    expect(body["keyId"]).to eq(EmulatorHelper::KEY_JSON["private_key_id"])
    signature = body["signedBlob"].unpack1("m0")
    expect(EmulatorHelper::KEY.public_key.verify(OpenSSL::Digest.new("SHA256"), signature, payload)).to be(true)
    expect(EmulatorHelper::KEY.public_key.verify(OpenSSL::Digest.new("SHA256"), signature, "#{payload}x")).to be(false)
  end

  it "accepts the account's '@' raw as well as %40, and an iam-scoped token" do
    raw = http("POST", "/v1/projects/-/serviceAccounts/#{EmulatorHelper::EMAIL}:signBlob",
               headers: { "Authorization" => "Bearer #{fetch_token}", "Content-Type" => "application/json" },
               body: JSON.generate("payload" => "YWJj"))
    expect(raw.code).to eq("200")
    expect(sign_blob(payload, token: fetch_token(scopes: ["https://www.googleapis.com/auth/iam"])).code).to eq("200")
  end

  it "answers 401 UNAUTHENTICATED without a token, with an unknown one, and with a revoked one" do
    none = http("POST", "/v1/projects/-/serviceAccounts/#{CGI.escape(EmulatorHelper::EMAIL)}:signBlob",
                headers: { "Content-Type" => "application/json" }, body: JSON.generate("payload" => "YWJj"))
    expect(error_info(none)).to eq([401, 401, "UNAUTHENTICATED", "CREDENTIALS_MISSING"])
    expect(error_info(sign_blob(payload, token: "ya29.made-up"))[0..2]).to eq([401, 401, "UNAUTHENTICATED"])

    token = fetch_token
    emulator.revoke_tokens!
    expect(sign_blob(payload, token: token).code).to eq("401")
    expect(sign_blob(payload).code).to eq("200") # tokens issued after the revocation work

    later = fetch_token
    emulator.configure("revoke_tokens" => true)
    expect(sign_blob(payload, token: later).code).to eq("401")
  end

  it "answers 401 once the token has expired on the emulator's clock" do
    emulator.configure("token_lifetime" => 60, "now_override" => 1_700_000_000)
    token = fetch_token
    emulator.configure("now_override" => 1_700_000_059)
    expect(sign_blob(payload, token: token).code).to eq("200")
    emulator.configure("now_override" => 1_700_000_060)
    expect(error_info(sign_blob(payload, token: token))).to eq([401, 401, "UNAUTHENTICATED", "ACCESS_TOKEN_EXPIRED"])
  end

  it "answers 403 ACCESS_TOKEN_SCOPE_INSUFFICIENT to a storage-only token (fog-google issue 599)" do
    token = fetch_token(scopes: ["https://www.googleapis.com/auth/devstorage.read_write"])
    response = sign_blob(payload, token: token)
    expect(error_info(response)).to eq([403, 403, "PERMISSION_DENIED", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"])
    expect(google_error(response)["message"]).to eq("Request had insufficient authentication scopes.")
  end

  it "answers 400 Invalid form of account ID for an unmapped Workload Identity account" do
    response = sign_blob(payload, email: "my-proj.svc.id.goog")
    expect(error_info(response)[0..2]).to eq([400, 400, "INVALID_ARGUMENT"])
    expect(google_error(response)["message"]).to start_with("Invalid form of account ID my-proj.svc.id.goog")
  end

  it "answers 403 IAM_PERMISSION_DENIED for another account, or when signBlob is denied" do
    other = sign_blob(payload, email: "other@dummy-project-id.iam.gserviceaccount.com")
    expect(error_info(other)).to eq([403, 403, "PERMISSION_DENIED", "IAM_PERMISSION_DENIED"])
    expect(google_error(other)["message"]).to eq("Permission 'iam.serviceAccounts.signBlob' denied on resource (or it may not exist).")

    emulator.configure("deny_sign_blob" => true)
    expect(error_info(sign_blob(payload))[3]).to eq("IAM_PERMISSION_DENIED")
  end

  it "answers 403 SERVICE_DISABLED when the API is disabled" do
    emulator.configure("api_disabled" => true)
    response = sign_blob(payload)
    expect(error_info(response)).to eq([403, 403, "PERMISSION_DENIED", "SERVICE_DISABLED"])
    expect(google_error(response)["message"]).to start_with("IAM Service Account Credentials API has not been used in project")
  end

  it "answers 400 to a malformed body or a project other than '-'" do
    expect(sign_blob(payload, body: "not json").code).to eq("400")
    expect(sign_blob(payload, body: JSON.generate("payload" => "%%%")).code).to eq("400")
    expect(sign_blob(payload, body: JSON.generate("delegates" => [])).code).to eq("400")
    project = http("POST", "/v1/projects/my-proj/serviceAccounts/#{CGI.escape(EmulatorHelper::EMAIL)}:signBlob",
                   headers: { "Authorization" => "Bearer #{fetch_token}", "Content-Type" => "application/json" },
               body: JSON.generate("payload" => "YWJj"))
    expect(project.code).to eq("400")
  end

  it "counts calls, successes and errors by status" do
    sign_blob(payload)
    sign_blob(payload, token: "ya29.made-up")
    sign_blob(payload, email: "my-proj.svc.id.goog")
    stats = emulator.stats
    expect(stats.values_at("sign_blob_calls", "sign_blob_ok", "sign_blob_errors")).to eq([3, 1, { "401" => 1, "400" => 1 }])
  end

  it "serves concurrent calls in parallel and records the peak in flight" do
    emulator.configure("iam" => { "latency_ms" => 500 })
    token = fetch_token
    started = GitlabGcsSigner::Emulator.monotonic
    codes = Array.new(16) { Thread.new { sign_blob(payload, token: token).code } }.map(&:value)
    elapsed = GitlabGcsSigner::Emulator.monotonic - started
    expect(codes.uniq).to eq(["200"])
    expect(elapsed).to be < 16 * 0.5 / 2 # serial would take 8 s
    expect(emulator.stats["sign_blob_max_in_flight"]).to be >= 8
  end
end
