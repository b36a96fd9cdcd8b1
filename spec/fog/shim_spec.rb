# frozen_string_literal: true

require "cgi"

RSpec::Matchers.define_negated_matcher :not_change, :change unless RSpec::Matchers.method_defined?(:not_change)

# The fog-google shim with real fog-google (Debian's: 1.15 on Debian 12, 1.29 on sid) against the
# emulator: GitLab's calls, unchanged, produce URLs the emulator's verifier
# accepts, from one token and with no signBlob call for a repeated URL.
RSpec.describe GitlabGcsSigner::Fog, :emulator, :fog do
  let(:bucket) { "gitlab-artifacts" }
  let(:object) { "@hashed/6b/86/job 42/artifacts+1.zip" }
  let(:four_h15) { Time.now + (4 * 3600) + 900 }

  def expires_of(url)
    Integer(CGI.parse(URI(url).query).fetch("Expires").first)
  end

  it "patches the fog-google storage class that is loaded" do
    keyless_storage
    expect(fog_real_class.ancestors).to include(GitlabGcsSigner::Fog::Patch)
    expect(described_class.installed?).to be(true)
  end

  it "is idempotent" do
    3.times { described_class.install!(version: :v2) }
    expect(fog_real_class.ancestors.count(GitlabGcsSigner::Fog::Patch)).to eq(1)
  end

  it "signs GitLab's direct-upload trio keylessly, each on a fresh Fog::Storage, and every URL verifies" do
    put = keyless_storage.put_object_url(bucket, object, four_h15, "Content-Type" => "application/zip")
    expect(gcs(put, method: "PUT", body: "zip", headers: { "Content-Type" => "application/zip" }).code).to eq("200")

    get = keyless_storage.get_object_https_url(bucket, object, four_h15)
    response = gcs(get)
    expect([response.code, response.body]).to eq(%w[200 zip])

    delete = keyless_storage.delete_object_url(bucket, object, four_h15)
    expect(gcs(delete, method: "DELETE").code).to eq("204")
    expect(gcs(get).code).to eq("404")
  end

  it "signs a PUT with no headers" do
    put = keyless_storage.put_object_url(bucket, "plain.bin", Time.now + 600)
    expect(gcs(put, method: "PUT", body: "x").code).to eq("200")
  end

  it "keeps fog's URL shape: the keyless URL is the one fog-google itself builds with the key, byte for byte" do
    options = { query: { "response-content-disposition" => "attachment" } }
    url = keyless_storage.get_object_https_url(bucket, "a b+c.png", Time.now + 600, options)
    # The installed fog-google's own URL (its host, path encoding and query
    # order), signed locally with the key the emulator's signBlob signs with.
    fogs = without_shim { keyed_storage.get_object_https_url(bucket, "a b+c.png", expires_of(url), options) }
    expect(url).to eq(fogs)
    query = "response-content-disposition=attachment&GoogleAccessId=[^&]+&Signature=[^&]+&Expires=\\d+"
    expect(url).to match(%r{\Ahttps://storage\.googleapis\.com/gitlab-artifacts/a%20b[^?]*\?#{query}\z})
  end

  it "rejects tampered URLs" do
    emulator.client.put_object(bucket, "secret.txt", "s3cret")
    url = keyless_storage.get_object_https_url(bucket, "secret.txt", Time.now + 600)
    expect(gcs(url).code).to eq("200")
    [url.sub("secret.txt", "secreT.txt"), url.sub(/Expires=(\d+)/) { "Expires=#{Integer(Regexp.last_match(1)) + 1}" }]
      .each { |tampered| expect(gcs(tampered).code).to eq("403") }
    expect(gcs(url, method: "DELETE").code).to eq("403")
  end

  it "fetches one token per process and makes no signBlob call for a repeated URL" do
    # A fresh process, so that no token is cached yet: GitLab's pattern of a
    # new Fog::Storage per URL, from several threads.
    script = <<~RUBY
      require "gitlab_gcs_signer/fog"
      require "fog/google"
      require "googleauth"
      Fog::Logger[:deprecation] = nil
      GitlabGcsSigner.default_signer = GitlabGcsSigner::Signer.new(metadata_host: #{emulator.host.inspect},
                                                                   iam_endpoint: #{emulator.url.inspect})
      GitlabGcsSigner::Fog.install!
      # One expiry instant for all 20 calls: a thread that read the clock
      # just before a second boundary but reached the signer after one that
      # read it just after gets its own signature by design (src/signer.rs,
      # an_earlier_expiry_in_a_burst_is_signed_on_its_own).
      expires = Time.now + 600
      urls = 4.times.map do
        Thread.new do
          5.times.map do
            Fog::Storage.new(provider: "Google", google_project: "p", google_auth: Google::Auth::GCECredentials.new)
                        .get_object_https_url("b", "same/object.zip", expires)
          end
        end
      end.flat_map(&:value)
      stats = GitlabGcsSigner.default_signer.stats
      print urls.uniq.size, " ", stats[:hits] + stats[:misses], " ", stats[:sign_blob_calls], " ", stats[:token_fetches]
    RUBY
    out = IO.popen([RbConfig.ruby, *fog_lib_args, "-I", File.expand_path("../../lib", __dir__), "-e", script], &:read)
    # one distinct URL, 20 answers, one signBlob call (concurrent misses waited for it), one token
    expect(out).to eq("1 20 1 1")
    expect(emulator.stats).to include("token_requests" => 1, "sign_blob_calls" => 1)
  end

  it "returns byte for byte what fog-google itself builds for the same expiry (keyed connection)" do
    storage = keyed_storage
    options = { query: { "response-content-disposition" => "inline; filename=\"a b.png\"",
                         "response-content-type" => "image/png" } }
    ours = storage.get_object_https_url(bucket, "dir/ä b+c&d?.png", Time.now + 600, options)
    fogs = without_shim { storage.get_object_https_url(bucket, "dir/ä b+c&d?.png", expires_of(ours), options) }
    expect(ours).to eq(fogs)
    put_ours = storage.put_object_url(bucket, "p q", Time.now + 600, "Content-Type" => "text/plain", "x-goog-meta-a" => "1")
    put_fogs = without_shim { storage.put_object_url(bucket, "p q", expires_of(put_ours), "Content-Type" => "text/plain", "x-goog-meta-a" => "1") }
    expect(put_ours).to eq(put_fogs)
  end

  it "takes fog's arguments as fog does: nil query entries left out, Symbol names, byte for byte fog's own URL" do
    storage = keyed_storage
    query = { "response-content-type" => nil, nil => "x", "response-content-disposition": "inline" }
    ours = storage.get_object_https_url(bucket, "n.txt", Time.now + 600, query: query)
    fogs = without_shim { storage.get_object_https_url(bucket, "n.txt", expires_of(ours), query: query) }
    expect(ours).to eq(fogs)
    expect(ours).to include("?response-content-disposition=inline&GoogleAccessId=")
    # The same URL as without the nil entries: one cache entry, and it verifies.
    expect(storage.get_object_https_url(bucket, "n.txt", Time.at(expires_of(ours)),
                                        query: { "response-content-disposition" => "inline" })).to eq(ours)
    emulator.client.put_object(bucket, "n.txt", "n")
    expect(gcs(ours).code).to eq("200")
  end

  it "refuses a nil header value rather than signing something else (fog's PUT headers)" do
    expect { keyless_storage.put_object_url(bucket, "h.txt", Time.now + 600, "Content-Type" => nil) }
      .to raise_error(ArgumentError, /headers\["Content-Type"\]/)
  end

  it "signs an existing connection's next URL with a new default signer" do
    storage = keyless_storage
    old = GitlabGcsSigner.default_signer
    storage.get_object_https_url(bucket, "d.txt", Time.now + 600)
    replacement = key_signer # signs locally: no signBlob call
    GitlabGcsSigner.default_signer = replacement
    expect { storage.get_object_https_url(bucket, "d.txt", Time.now + 600) }
      .to change { replacement.stats[:misses] }.by(1).and(not_change { old.stats[:hits] + old.stats[:misses] })
    expect(emulator.stats["sign_blob_calls"]).to eq(1) # the first URL only
  end

  it "picks the signer again when a connection's authorization is replaced" do
    storage = keyless_storage
    storage.get_object_https_url(bucket, "a.txt", Time.now + 600)
    keyed = keyed_storage.instance_variable_get(:@storage_json).authorization
    storage.instance_variable_get(:@storage_json).authorization = keyed
    key_signer = described_class.key_signer(keyed)
    url = nil
    expect { url = storage.get_object_https_url(bucket, "a.txt", Time.now + 600) }
      .to change { key_signer.stats.values_at(:hits, :misses).sum }.by(1)
    expect(CGI.parse(URI(url).query)["GoogleAccessId"]).to eq([keyed.issuer])
    expect(emulator.stats["sign_blob_calls"]).to eq(1) # the first URL only
  end

  it "serves keyed connections from the gem's cache: one signer per key across connections" do
    first = keyed_storage.get_object_https_url(bucket, "k.txt", Time.now + 600)
    second = keyed_storage.get_object_https_url(bucket, "k.txt", Time.now + 600)
    expect(second).to eq(first)
    expect(emulator.stats["sign_blob_calls"]).to eq(0)
  end

  it "can be switched off per connection and globally" do
    storage = keyed_storage
    fresh = storage.get_object_https_url(bucket, "o", Time.now + 600)
    storage.gitlab_gcs_signer = false
    expires = expires_of(fresh)
    fog_url = storage.get_object_https_url(bucket, "o", expires)
    expect(fog_url).to eq(fresh) # same bytes, but built by fog (the signer's hit count does not move)
    signer = described_class.key_signer(storage.instance_variable_get(:@storage_json).authorization)
    expect { storage.get_object_https_url(bucket, "o", Time.now + 600) }.not_to(change { signer.stats[:hits] })
  end

  it "emits V4 URLs from the same fog calls with version: :v4, signing the response-content-* parameters" do
    described_class.install!(version: :v4)
    emulator.client.put_object(bucket, "v4.txt", "four")
    url = keyless_storage.get_object_https_url(bucket, "v4.txt", Time.now + 600,
                                              query: { "response-content-disposition" => "attachment" })
    expect(url).to include("X-Goog-Algorithm=GOOG4-RSA-SHA256").and include("response-content-disposition=attachment")
    expect(gcs(url).code).to eq("200")
    expect(gcs(url.sub("attachment", "inline")).code).to eq("403")
  ensure
    described_class.install!(version: :v2)
  end

  it "signs URLs fog builds itself (Real#signature) through the gem when the connection has no key" do
    storage = keyless_storage
    emulator.client.put_object(bucket, "raw.txt", "raw")
    url = storage.https_url({ headers: {}, host: "storage.googleapis.com", method: "GET",
                              path: "#{bucket}/raw.txt" }, Time.now + 600)
    expect(gcs(url).code).to eq("200")
  end

  it "works when installed before fog-google is loaded" do
    script = <<~RUBY
      require "gitlab_gcs_signer/fog"
      GitlabGcsSigner::Fog.install!(signer: GitlabGcsSigner::Signer.new(credentials: #{CONFORMANCE_KEY.inspect}))
      require "fog/google"
      require "googleauth"
      Fog::Storage.new(provider: "Google", google_project: "p", google_auth: Google::Auth::GCECredentials.new)
      real = defined?(Fog::Google::StorageJSON::Real) ? Fog::Google::StorageJSON::Real : Fog::Storage::GoogleJSON::Real
      print real.ancestors.include?(GitlabGcsSigner::Fog::Patch)
    RUBY
    out = IO.popen([RbConfig.ruby, *fog_lib_args, "-I", File.expand_path("../../lib", __dir__), "-e", script],
                   err: File::NULL, &:read)
    expect(out).to eq("true")
  end
end
