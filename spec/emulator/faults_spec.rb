# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/emulator_helper"

RSpec.describe "emulator fault injection" do
  let(:token_path) { "/computeMetadata/v1/instance/service-accounts/default/token" }

  def timed
    started = GitlabGcsSigner::Emulator.monotonic
    result = yield
    [result, GitlabGcsSigner::Emulator.monotonic - started]
  end

  it "answers fail_next in order, then normally" do
    emulator.configure("metadata" => { "fail_next" => [503, 429, "garbage", "truncated", "no_flavor"] })
    responses = Array.new(6) { http("GET", token_path, headers: flavor) }
    expect(responses.map(&:code)).to eq(%w[503 429 200 200 200 200])
    expect { JSON.parse(responses[2].body) }.to raise_error(JSON::ParserError)
    expect { JSON.parse(responses[3].body) }.to raise_error(JSON::ParserError)
    expect(responses[3].body).to start_with('{"access_token":"')
    expect(responses.map { |response| response["Metadata-Flavor"] }).to eq(["Google"] * 4 + [nil, "Google"])
    expect(JSON.parse(responses[5].body)).to include("token_type" => "Bearer")
    expect(emulator.stats["faults_injected"]).to eq("503" => 1, "429" => 1, "garbage" => 1, "truncated" => 1, "no_flavor" => 1)
  end

  it "gives signBlob Google-shaped 429 and 503 answers, counted as errors" do
    token = fetch_token
    emulator.configure("iam" => { "fail_next" => [429, 503, "timeout"], "timeout_ms" => 100 })
    quota = sign_blob("x", token: token)
    expect([quota.code, google_error(quota)["status"], google_error(quota).dig("details", 0, "reason")]).to eq(%w[429 RESOURCE_EXHAUSTED RATE_LIMIT_EXCEEDED])
    expect(google_error(sign_blob("x", token: token))["status"]).to eq("UNAVAILABLE")
    expect { sign_blob("x", token: token) }.to raise_error(EOFError)
    expect(sign_blob("x", token: token).code).to eq("200")
    expect(emulator.stats.values_at("sign_blob_ok", "sign_blob_errors")).to eq([1, { "429" => 1, "503" => 1, "timeout" => 1 }])
  end

  it "delays only the configured service by latency_ms" do
    emulator.configure("metadata" => { "latency_ms" => 1500 })
    _, slow = timed { http("GET", token_path, headers: flavor) }
    _, fast = timed { sign_blob("x", token: "ya29.unknown") }
    expect(slow).to be >= 1.5
    # Delayed too, it would take 1.5 s; a loaded machine stays far below.
    expect(fast).to be < 1.0
  end

  it "applies top-level fault keys to every service" do
    emulator.configure("fail_next" => [503])
    expect(http("GET", token_path, headers: flavor).code).to eq("503")
    expect(sign_blob("x", token: "ya29.unknown").code).to eq("503")
    expect(http("GET", "/bucket/object").code).to eq("503")
  end

  it "keeps the metadata server silent until cold_start_ms after configuration" do
    # Timed from before the configuration: the silence starts inside the
    # block, so the first answer cannot come sooner than 1.5 s later.
    _, first = timed do
      emulator.configure("metadata" => { "cold_start_ms" => 1500 })
      http("GET", token_path, headers: flavor)
    end
    _, second = timed { http("GET", token_path, headers: flavor) }
    expect(first).to be_between(1.5, 4)
    # Silent again (every answer after cold_start_ms), it would take 1.5 s.
    expect(second).to be < 1.0
  end

  it "hangs up without answering on a timeout fault" do
    emulator.configure("metadata" => { "fail_next" => ["timeout"], "timeout_ms" => 300 })
    _, elapsed = timed do
      expect { http("GET", token_path, headers: flavor, read_timeout: 5) }.to raise_error(EOFError)
    end
    expect(elapsed).to be_between(0.25, 2)
    expect(http("GET", token_path, headers: flavor).code).to eq("200")
  end

  it "lets a client time out while the emulator keeps serving others" do
    emulator.configure("metadata" => { "fail_next" => ["timeout"] }) # 30 s
    expect { http("GET", token_path, headers: flavor, read_timeout: 0.3) }.to raise_error(Net::ReadTimeout)
    expect(http("GET", token_path, headers: flavor).code).to eq("200")
  end

  it "injects 429/503/timeouts at configured rates from a seeded generator, reproducibly" do
    sample = lambda do
      emulator.reset!
      emulator.configure("seed" => 42, "metadata" => { "rate_503" => 0.3, "rate_429" => 0.3 })
      Array.new(30) { http("GET", token_path, headers: flavor).code }
    end
    first = sample.call
    expect(first.tally.keys).to contain_exactly("200", "429", "503")
    expect(sample.call).to eq(first)
  end

  it "answers garbage, truncated or flavourless bodies while those flags are set" do
    emulator.configure("metadata" => { "garbage" => true })
    expect(http("GET", token_path, headers: flavor).body).to start_with("<html>")
    emulator.configure("metadata" => { "garbage" => nil, "truncated" => true })
    expect { JSON.parse(http("GET", token_path, headers: flavor).body) }.to raise_error(JSON::ParserError)
    emulator.configure("metadata" => { "truncated" => false, "no_flavor" => true })
    expect(http("GET", token_path, headers: flavor)["Metadata-Flavor"]).to be_nil
  end

  it "refuses unknown or invalid settings and faults, changing nothing" do
    expect { emulator.configure("latency" => 5) }.to raise_error(ArgumentError, /unknown setting "latency"/)
    expect { emulator.configure("metadata" => { "rate_503" => 2 }) }.to raise_error(ArgumentError, /rate_503/)
    expect { emulator.configure("email" => "x@y", "iam" => { "fail_next" => ["boom"] }) }.to raise_error(ArgumentError, /fail_next/)
    expect(http("GET", "/computeMetadata/v1/instance/service-accounts/default/email", headers: flavor).body).to eq(EmulatorHelper::EMAIL)
  end
end
