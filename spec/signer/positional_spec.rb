# frozen_string_literal: true

# The fog shim's positional request (Signer#fog_signed_url: an Array in
# Native::REQUEST_KEYS order, no Hash on the cache-hit path) is the keyword
# request under another shape: same URL, same cache entry, same checks.
RSpec.describe GitlabGcsSigner::Signer, "positional requests" do
  subject(:signer) { described_class.new(credentials: CONFORMANCE_KEY) }

  let(:expires) { Time.now + 600 }
  let(:native) { signer.instance_variable_get(:@native) }

  it "has Signer#fog_signed_url's parameters in the native order" do
    parameters = described_class.instance_method(:fog_signed_url).parameters.map(&:last)
    expect(GitlabGcsSigner::Native::REQUEST_KEYS.first(parameters.size)).to eq(parameters)
    expect(GitlabGcsSigner::Native::REQUEST_KEYS).to be_frozen
  end

  {
    "a V2 GET" => { version: :v2 },
    "a V2 GET over http with a query" => { version: :v2, scheme: "http", query: { "response-content-type" => "a/b" } },
    "a V2 PUT with headers, fog-google >= 1.21 paths" =>
      { version: :v2, method: "PUT", headers: { "Content-Type" => "text/plain" }, v2_path: :addressable },
    "a V4 DELETE at another host" => { version: :v4, method: "DELETE", host: "storage.example.test" },
    "a V4 GET with Symbol query names" => { version: :v4, query: { "response-content-disposition": "inline" } }
  }.each do |what, keywords|
    it "signs #{what} as the keyword form does, from the same cache entry" do
      positional = GitlabGcsSigner::Native::REQUEST_KEYS.first(10).map do |key|
        { bucket: "b", object: "a b+c [1].png", expires_at: expires }.merge(keywords)[key]
      end
      url = signer.fog_signed_url(*positional)
      expect(url).to eq(signer.signed_url(bucket: "b", object: "a b+c [1].png", expires_at: expires, **keywords))
      expect(signer.stats).to include(misses: 1, hits: 1)
    end
  end

  it "leaves query entries with a nil name or value out, as fog-google does; the keyword form refuses them" do
    query = { "response-content-type" => nil, nil => "x", "a" => "1" }
    url = signer.fog_signed_url(:v2, nil, nil, nil, "b", "o", nil, query, expires, nil)
    expect(url).to eq(signer.signed_url(version: :v2, bucket: "b", object: "o", expires_at: expires, query: { "a" => "1" }))
    expect { signer.signed_url(version: :v2, bucket: "b", object: "o", expires_at: expires, query: query) }
      .to raise_error(ArgumentError, /query/)
  end

  it "checks a positional request as strictly as keywords" do
    expect { signer.fog_signed_url(:v3, nil, nil, nil, "b", "o", nil, nil, expires, nil) }
      .to raise_error(ArgumentError, /unknown version/)
    expect { signer.fog_signed_url(:v2, nil, nil, nil, nil, "o", nil, nil, expires, nil) }
      .to raise_error(ArgumentError, /missing keyword: :bucket/)
    expect { signer.fog_signed_url(:v2, nil, nil, nil, "b", "o", { "A" => nil }, nil, expires, nil) }
      .to raise_error(ArgumentError, /headers\["A"\]/)
    expect { native.signed_url_with_status([nil] * 15) }.to raise_error(ArgumentError, /at most 14 values/)
    expect { native.signed_url_with_status("b/o") }.to raise_error(ArgumentError, /Hash of keywords, got String/)
  end

  it "turns back into the keywords it stands for (Signing.keywords, for events and logs)" do
    request = [:v2, "PUT", nil, nil, "b", nil, nil, nil, expires, :addressable]
    expect(GitlabGcsSigner::Signing.keywords(request))
      .to eq(version: :v2, method: "PUT", bucket: "b", object: nil, expires_at: expires, v2_path: :addressable)
    keywords = { bucket: "b", object: "o" }
    expect(GitlabGcsSigner::Signing.keywords(keywords)).to be(keywords)
  end
end
