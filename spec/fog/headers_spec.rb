# frozen_string_literal: true

# Issue 15 S2 through the fog shim: fog-google 1.15 signs Content-MD5,
# Content-Type and x-goog-* headers only in its own spelling and silently
# leaves `content-type` or `X-Goog-Meta-Owner` out of the signature. The
# shim binds them in any spelling (stricter than fog, never looser), and
# refuses a header V2 cannot sign instead of dropping it (README, "fog-google").
RSpec.describe "fog shim headers", :emulator, :fog do
  let(:bucket) { "gitlab-uploads" }
  let(:headers) { { "content-type" => "application/zip", "X-Goog-Meta-Owner" => "alice" } }

  def expires_of(url)
    Integer(CGI.parse(URI(url).query).fetch("Expires").first)
  end

  def put(url, sent)
    gcs(url, method: "PUT", body: "zip", headers: sent)
  end

  it "binds headers fog itself drops, for keyless and keyed connections" do
    [keyless_storage, keyed_storage].each do |storage|
      url = storage.put_object_url(bucket, "upload.zip", Time.now + 600, headers)
      expect(put(url, headers).code).to eq("200")
      headers.each_key { |name| expect(put(url, headers.except(name)).code).to eq("403"), name }
      expect(put(url, headers.merge("content-type" => "text/html")).code).to eq("403")
    end
  end

  it "is stricter than fog's own URL for the same call, never looser" do
    storage = keyed_storage
    ours = storage.put_object_url(bucket, "same.zip", Time.now + 600, headers)
    fogs = without_shim { storage.put_object_url(bucket, "same.zip", expires_of(ours), headers) }
    # fog's URL does not require the headers it was given...
    expect(put(fogs, {}).code).to eq("200")
    # ...the shim's does.
    expect(put(ours, {}).code).to eq("403")
    # fog's own spellings still give fog's own URL.
    exact = { "Content-Type" => "application/zip", "x-goog-meta-owner" => "alice" }
    ours = storage.put_object_url(bucket, "same.zip", Time.now + 600, exact)
    expect(without_shim { storage.put_object_url(bucket, "same.zip", expires_of(ours), exact) }).to eq(ours)
  end

  it "refuses a header V2 cannot sign rather than returning a URL that ignores it" do
    expect { keyed_storage.put_object_url(bucket, "x.zip", Time.now + 600, "Cache-Control" => "no-store") }
      .to raise_error(ArgumentError, /cannot be signed in a V2 URL/)
  end
end
