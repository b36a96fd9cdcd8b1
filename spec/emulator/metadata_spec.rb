# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/emulator_helper"

RSpec.describe "emulated metadata server" do
  let(:base) { "/computeMetadata/v1/instance/service-accounts/default" }

  it "answers the bare-root probe with Metadata-Flavor: Google, without requiring the header" do
    response = http("GET", "/")
    expect(response.code).to eq("200")
    expect(response["Metadata-Flavor"]).to eq("Google")
  end

  it "requires Metadata-Flavor: Google below /computeMetadata/v1/ and answers with it" do
    missing = http("GET", "#{base}/token")
    wrong = http("GET", "#{base}/token", headers: { "Metadata-Flavor" => "google-ish" })
    expect([missing.code, wrong.code]).to eq(%w[403 403])
    expect(missing["Metadata-Flavor"]).to eq("Google")

    root = http("GET", "/computeMetadata/v1/", headers: flavor)
    expect([root.code, root["Metadata-Flavor"]]).to eq(%w[200 Google])
  end

  it "refuses proxied requests (X-Forwarded-For)" do
    expect(http("GET", "#{base}/email", headers: flavor.merge("X-Forwarded-For" => "10.0.0.1")).code).to eq("403")
  end

  it "issues a fresh random bearer token with the configured lifetime" do
    first = http("GET", "#{base}/token", headers: flavor)
    body = JSON.parse(first.body)
    expect(first["Content-Type"]).to start_with("application/json")
    expect(body.keys).to contain_exactly("access_token", "expires_in", "token_type")
    expect(body.values_at("expires_in", "token_type")).to eq([3599, "Bearer"])
    expect(fetch_token).not_to eq(body["access_token"])

    emulator.configure("token_lifetime" => 300)
    expect(JSON.parse(http("GET", "#{base}/token", headers: flavor).body)["expires_in"]).to eq(300)
  end

  it "reports the key's email, or a configured one (an unmapped Workload Identity pod)" do
    expect(http("GET", "#{base}/email", headers: flavor).body).to eq(EmulatorHelper::EMAIL)
    emulator.configure("email" => "my-proj.svc.id.goog")
    expect(http("GET", "#{base}/email", headers: flavor).body).to eq("my-proj.svc.id.goog")
  end

  it "answers by the account's email as well as by 'default', and 404 for other accounts" do
    by_email = http("GET", "/computeMetadata/v1/instance/service-accounts/#{EmulatorHelper::EMAIL}/email", headers: flavor)
    expect([by_email.code, by_email.body]).to eq(["200", EmulatorHelper::EMAIL])
    expect(http("GET", "/computeMetadata/v1/instance/service-accounts/other@x.iam.gserviceaccount.com/email", headers: flavor).code).to eq("404")
    expect(http("GET", "/computeMetadata/v1/instance/nothing-here", headers: flavor).code).to eq("404")
  end

  it "lists the default scopes, one a line, configurable" do
    expect(http("GET", "#{base}/scopes", headers: flavor).body).to eq("#{EmulatorHelper::CLOUD_PLATFORM}\n")
    emulator.configure("default_scopes" => %w[a b])
    expect(http("GET", "#{base}/scopes", headers: flavor).body).to eq("a\nb\n")
  end

  it "issues the default scopes whatever ?scopes= asks when honour_scopes_param is off (GCE)" do
    storage_only = ["https://www.googleapis.com/auth/devstorage.read_write"]
    emulator.configure("default_scopes" => storage_only)
    expect(sign_blob("x", token: fetch_token(scopes: [EmulatorHelper::CLOUD_PLATFORM])).code).to eq("200")
    emulator.configure("honour_scopes_param" => false)
    refused = sign_blob("x", token: fetch_token(scopes: [EmulatorHelper::CLOUD_PLATFORM]))
    expect([refused.code, google_error(refused).dig("details", 0, "reason")]).to eq(%w[403 ACCESS_TOKEN_SCOPE_INSUFFICIENT])
  end

  it "counts metadata, token and email requests" do
    fetch_token
    http("GET", "#{base}/email", headers: flavor)
    http("GET", "/")
    expect(emulator.stats.values_at("metadata_requests", "token_requests", "email_requests", "tokens_issued")).to eq([3, 1, 1, 1])
  end
end
