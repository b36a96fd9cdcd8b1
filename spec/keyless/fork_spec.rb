# frozen_string_literal: true

require "json"
require_relative "support/keyless_helper"

# Puma (preload) and Sidekiq fork after boot (docs/facts.md#fork): a child must
# sign with the token and URLs the parent had, build its own runtime, and
# never hang on work the parent had in flight at the moment of fork.
RSpec.describe "keyless signing across fork", :emulator do
  let(:request) { { bucket: "b", expires_in: 600 } }

  # Runs the block in a forked child, which reports a JSON object on a pipe
  # and exits with exit! (no at_exit hooks of the parent's rspec). A child
  # still running after +timeout+ seconds is killed and the spec fails.
  def in_child(timeout: 20)
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      result = begin
        yield
      rescue Exception => e # rubocop:disable Lint/RescueException -- report anything to the parent
        { "error" => "#{e.class}: #{e.message}" }
      end
      writer.write(JSON.generate(result))
      writer.close
      exit!(result.key?("error") ? 1 : 0)
    end
    writer.close
    status = wait_or_kill(pid, timeout)
    [status, JSON.parse(reader.read.then { |s| s.empty? ? "{}" : s })]
  ensure
    reader&.close
  end

  it "signs in a forked child after the parent signed: cached URL, new URL, same token" do
    signer = keyless_signer
    cached = signer.signed_url(**request, object: "cached")
    emulator.client.put_object("b", "fresh", "from child")
    tokens_before = emulator.stats["token_requests"]

    status, child = in_child do
      fresh = signer.signed_url(**request, object: "fresh")
      { "cached" => signer.signed_url(**request, object: "cached"), "fresh" => fresh,
        "code" => gcs(fresh).code, "body" => gcs(fresh).body, "pid" => Process.pid }
    end

    expect(status).to be_success, child["error"]
    expect(child["cached"]).to eq(cached)
    expect(child.values_at("code", "body")).to eq(["200", "from child"])
    expect(emulator.stats["token_requests"]).to eq(tokens_before) # the parent's token carried over
    # The parent is unaffected and still signs.
    url = signer.signed_url(**request, object: "fresh")
    expect(gcs(url).code).to eq("200")
    expect(signer.signed_url(**request, object: "cached")).to eq(cached)
  end

  it "does not hang when forked while another parent thread waits on signBlob" do
    signer = keyless_signer
    signer.signed_url(**request, object: "warm-up")
    emulator.configure("iam" => { "latency_ms" => 1500 })
    busy = Thread.new { signer.signed_url(**request, object: "in-flight") }
    wait_until("the parent's signBlob on the wire") { emulator.stats["sign_blob_calls"] == 2 }

    status, child = in_child(timeout: 20) do
      { "same_key" => signer.signed_url(**request, object: "in-flight"),
        "other" => signer.signed_url(**request, object: "child-only") }
    end

    expect(status).to be_success, child["error"]
    expect(child["same_key"]).to include("X-Goog-Signature=")
    expect(child["other"]).to include("X-Goog-Signature=")
    expect(busy.value).to include("X-Goog-Signature=")
    emulator.configure("iam" => { "latency_ms" => 0 })
    expect(signer.signed_url(**request, object: "parent-after")).to include("X-Goog-Signature=")
  end

  it "a child that forks before the first token or email fetches its own" do
    with_own_emulator do |own|
      signer = signer_on(own)
      status, child = in_child { { "url" => signer.signed_url(**request, object: "c") } }
      expect(status).to be_success, child["error"]
      expect(signer.signed_url(**request, object: "p")).to include("X-Goog-Signature=")
      expect(own.stats["token_requests"]).to eq(2) # one per process
    end
  end
end
