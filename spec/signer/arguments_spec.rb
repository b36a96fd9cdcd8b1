# frozen_string_literal: true

# Every bad argument raises ArgumentError (or a documented
# GitlabGcsSigner::Error) with a message that names the argument; nothing
# crashes the process.
RSpec.describe GitlabGcsSigner::Signer, "arguments" do
  subject(:signer) { described_class.new(credentials: CONFORMANCE_KEY) }

  let(:good) { { bucket: "b", object: "o", expires_in: 600 } }

  it "signs the baseline request" do
    expect(signer.signed_url(**good)).to start_with("https://storage.googleapis.com/b/o?")
  end

  {
    "a missing bucket" => [{ bucket: nil }, /bucket must be a String/],
    "an empty bucket" => [{ bucket: "" }, /bucket must not be empty/],
    "a bucket with a slash" => [{ bucket: "a/b" }, /not a valid bucket name/],
    "a bucket that is not a String" => [{ bucket: 42 }, /bucket must be a String/],
    "an empty object" => [{ object: "" }, /object must not be empty/],
    "a V2 bucket-level URL" => [{ object: nil, version: :v2 }, /object must not be empty/],
    "an object with a line feed" => [{ object: "a\nb" }, /line feed/],
    "an object with a NUL byte" => [{ object: "a\0b" }, /NUL/],
    "an object over 1024 bytes" => [{ object: "x" * 1025 }, /1024/],
    "an object in invalid UTF-8" => [{ object: "\xff\xfe".dup.force_encoding("UTF-8") }, /not valid UTF-8/],
    "a zero expiry" => [{ expires_in: 0 }, /positive/],
    "a negative expiry" => [{ expires_in: -5 }, /positive/],
    "a NaN expiry" => [{ expires_in: Float::NAN }, /finite number/],
    "an expiry that is a String" => [{ expires_in: "600" }, /finite number/],
    "a V4 expiry over 7 days" => [{ expires_in: 604_802 }, /at most 604800/],
    "an expires_at in the past" => [{ expires_in: nil, expires_at: Time.now - 1 }, /future/],
    "both expires_in and expires_at" => [{ expires_at: Time.now + 60 }, /exactly one/],
    "neither expires_in nor expires_at" => [{ expires_in: nil }, /exactly one/],
    "an unknown version" => [{ version: :v3 }, /unknown version/],
    "an unknown url_style" => [{ url_style: :sideways }, /unknown url_style/],
    "a bucket-bound style without its hostname" => [{ url_style: :bucket_bound_hostname }, /needs bucket_bound_hostname/],
    "a lower-case or bogus method" => [{ method: "GE T" }, /HTTP verb/],
    "a method that is not a String" => [{ method: 1 }, /method must be a String/],
    "an unknown scheme" => [{ scheme: "ftp" }, /scheme/],
    "a host with a space" => [{ host: "a b" }, /host/],
    "headers that are not a Hash" => [{ headers: [1] }, /headers must be a Hash/],
    "a header value with CRLF" => [{ headers: { "x-goog-meta-a" => "a\r\nb" } }, /line break/],
    "a header value that is nil" => [{ headers: { "a" => nil } }, /must be a String/],
    "a query value that is nil" => [{ query: { "a" => nil } }, /must be a String/],
    "an empty query name" => [{ query: { "" => "v" } }, /must not be empty/],
    "a V2 URL in virtual-hosted style" => [{ version: :v2, url_style: :virtual_hosted }, /path style only/]
  }.each do |what, (change, message)|
    it "rejects #{what}" do
      expect { signer.signed_url(**good, **change) }.to raise_error(ArgumentError, message)
    end
  end

  it "rejects unknown keywords" do
    expect { signer.signed_url(**good, expire: 5) }.to raise_error(ArgumentError, /unknown keyword: :expire/)
  end

  it "rejects bad constructor options" do
    expect { described_class.new(credentials: 42) }.to raise_error(ArgumentError, /credentials/)
    expect { described_class.new(credentials: CONFORMANCE_KEY, timeout: 0) }.to raise_error(ArgumentError, /timeout/)
    expect { described_class.new(credentials: CONFORMANCE_KEY, cache: { ttl: 5 }) }
      .to raise_error(ArgumentError, /unknown cache option/)
    expect { described_class.new(credentials: CONFORMANCE_KEY, cache: { extension_ratio: 2.0 }) }
      .to raise_error(ArgumentError, /extension_ratio/)
    expect { described_class.new(credentials: CONFORMANCE_KEY, cache: { max_entries: 0 }) }
      .to raise_error(ArgumentError, /max_entries/)
    expect { described_class.new(credentials: CONFORMANCE_KEY, max_sign_blob_in_flight: 0) }
      .to raise_error(ArgumentError, /max_sign_blob_in_flight/)
  end

  it "raises CredentialsError for a malformed key, without echoing it" do
    secret = "-----BEGIN PRIVATE KEY-----\nTUlJRXZnSUJBREFOQmdrcWhraUc5dzBC\n-----END PRIVATE KEY-----\n"
    json = { type: "service_account", client_email: "a@b.iam.gserviceaccount.com", private_key: secret }
    expect { described_class.new(credentials: json) }.to raise_error(GitlabGcsSigner::CredentialsError) { |e|
      expect(e.message).not_to include("TUlJRXZn")
    }
  end

  it "raises CredentialsError naming a missing credentials file" do
    expect { described_class.new(credentials: "/nonexistent/key.json") }
      .to raise_error(GitlabGcsSigner::CredentialsError, %r{/nonexistent/key\.json})
  end

  it "rejects sign_blob on something other than a String" do
    expect { signer.sign_blob(nil) }.to raise_error(ArgumentError, /String/)
  end

  it "keeps the key out of inspect" do
    key = JSON.parse(File.read(CONFORMANCE_KEY))["private_key"]
    body = key.lines[1].strip
    expect(signer.inspect).not_to include(body)
    expect(signer.inspect).to include("test-iam-credentials@dummy-project-id.iam.gserviceaccount.com")
  end
end
