# frozen_string_literal: true

require "cgi"
require_relative "support/keyless_helper"

# Issue 3, "What must be shown": keyless URLs (metadata token + signBlob) are
# byte for byte the URLs a local key makes for the same inputs, and the
# emulator's GCS, which verifies with the public key and code of its own,
# accepts them for GET, PUT and DELETE and refuses any tampered copy.
RSpec.describe "keyless signed URLs", :emulator do
  let(:bucket) { "gitlab-uploads" }
  let(:object) { "@hashed/6b/86/a b+c&d?é.png" }
  let(:now) { Time.now.to_i }

  def swap_param(url, name)
    url.sub(/([?&]#{Regexp.escape(name)}=)([^&]*)/) { "#{Regexp.last_match(1)}#{yield Regexp.last_match(2)}" }
  end

  # Flips the last hex digit / base64 character of a signature.
  def flip(text)
    last = text[-1]
    text[0...-1] + (last == "0" || last == "A" ? "1" : "0")
  end

  describe "V4" do
    let(:request) do
      { bucket: bucket, object: object, expires_in: 900, timestamp: now,
        headers: { "x-goog-meta-build" => "42" }, query: { "response-content-disposition" => "attachment" } }
    end

    it "equals the local-key URL for the same inputs, in every URL style and method" do
      [{}, { url_style: :virtual_hosted }, { url_style: :bucket_bound_hostname, bucket_bound_hostname: "cdn.example.com" },
       { method: "PUT" }, { method: :delete, query: {} }, { object: nil, query: { "prefix" => "a/" } }].each do |change|
        keyless = keyless_signer.signed_url(**request, **change)
        expect(keyless).to eq(key_signer.signed_url(**request, **change)), change.inspect
      end
      expect(emulator.stats["sign_blob_ok"]).to eq(6)
    end

    it "is accepted by GCS for PUT, GET and DELETE, and each only for its own method" do
      signer = keyless_signer
      urls = %w[PUT GET DELETE].to_h { |m| [m, signer.signed_url(bucket: bucket, object: object, method: m, expires_in: 600)] }

      expect(gcs(urls["GET"]).code).to eq("404")
      expect(gcs(urls["PUT"], method: "PUT", body: "hello").code).to eq("200")
      expect([gcs(urls["GET"]).code, gcs(urls["GET"]).body]).to eq(%w[200 hello])
      expect(gcs(urls["GET"], method: "DELETE").code).to eq("403")
      expect(gcs(urls["PUT"], method: "GET").code).to eq("403")
      expect(gcs(urls["DELETE"], method: "DELETE").code).to eq("204")
      expect(gcs(urls["GET"]).code).to eq("404")
      expect(emulator.stats["verifications_failed"]).to eq(2)
    end

    it "signs the headers it was given: GCS wants them sent as signed" do
      url = keyless_signer.signed_url(bucket: bucket, object: "typed.txt", method: "PUT", expires_in: 600,
                                      headers: { "Content-Type" => "text/plain" })
      expect(gcs(url, method: "PUT", body: "x", headers: { "Content-Type" => "image/png" }).code).to eq("403")
      expect(gcs(url, method: "PUT", body: "x", headers: { "Content-Type" => "text/plain" }).code).to eq("200")
    end

    it "is refused when tampered: path, method, expiry, signature, a signed query value, the date" do
      emulator.client.put_object(bucket, "secret.txt", "s3cret")
      url = keyless_signer.signed_url(bucket: bucket, object: "secret.txt", expires_in: 600,
                                      query: { "response-content-disposition" => "attachment" })
      expect(gcs(url).code).to eq("200")
      tampered = {
        path: url.sub("secret.txt", "secreT.txt"),
        expiry: swap_param(url, "X-Goog-Expires") { |v| (Integer(v) + 1).to_s },
        signature: swap_param(url, "X-Goog-Signature") { |v| flip(v) },
        query_value: url.sub("attachment", "inline"),
        date: swap_param(url, "X-Goog-Date") { |v| v.sub(/\d\dZ\z/) { |s| format("%02dZ", (s.to_i + 1) % 60) } },
        extra_parameter: "#{url}&x-goog-meta-evil=1"
      }
      tampered.each { |what, bad| expect(gcs(bad).code).to eq("403"), what.to_s }
      expect(gcs(url, method: "DELETE").code).to eq("403")
      expect(emulator.stats["verifications_failed"]).to eq(tampered.size + 1)
      expect(gcs(url).code).to eq("200")
    end

    it "is refused once expired (on the emulator's clock)" do
      emulator.client.put_object(bucket, "soon.txt", "x")
      url = keyless_signer(cache: false).signed_url(bucket: bucket, object: "soon.txt", expires_in: 60)
      expect(gcs(url).code).to eq("200")
      emulator.configure("now_override" => Time.now.to_i + 120)
      expect(gcs(url).code).to eq("403")
    end
  end

  describe "V2 (fog-google's format)" do
    let(:expires_at) { Time.at(now + 3600) }
    let(:request) { { version: :v2, bucket: bucket, object: object, expires_at: expires_at } }

    it "equals the local-key URL for a fixed expiry, with and without headers and extra query" do
      keyless = keyless_signer(cache: false)
      key = key_signer(cache: false)
      [{}, { method: "PUT", headers: { "Content-Type" => "application/zip", "x-goog-meta-a" => "1" } },
       { query: { "response-content-disposition" => "attachment; filename=\"a b.png\"" } }, { method: "DELETE" }].each do |change|
        expect(keyless.signed_url(**request, **change)).to eq(key.signed_url(**request, **change)), change.inspect
      end
      expect(emulator.stats["sign_blob_ok"]).to eq(4)
    end

    it "is accepted by GCS for PUT, GET and DELETE" do
      signer = keyless_signer(cache: false)
      put = signer.signed_url(**request, method: "PUT", headers: { "Content-Type" => "text/plain" })
      get = signer.signed_url(**request)
      delete = signer.signed_url(**request, method: "DELETE")
      expect(gcs(put, method: "PUT", body: "two", headers: { "Content-Type" => "text/plain" }).code).to eq("200")
      expect([gcs(get).code, gcs(get).body]).to eq(%w[200 two])
      expect(gcs(delete, method: "DELETE").code).to eq("204")
      expect(gcs(get).code).to eq("404")
    end

    it "is refused when tampered: path, method, expiry, signature, GoogleAccessId" do
      emulator.client.put_object(bucket, "v2.txt", "v2")
      url = keyless_signer(cache: false).signed_url(version: :v2, bucket: bucket, object: "v2.txt", expires_at: expires_at)
      expect(gcs(url).code).to eq("200")
      tampered = {
        path: url.sub("v2.txt", "v3.txt"),
        expiry: swap_param(url, "Expires") { |v| (Integer(v) + 1).to_s },
        signature: swap_param(url, "Signature") { |v| CGI.escape(flip(CGI.unescape(v).chomp)) },
        access_id: swap_param(url, "GoogleAccessId") { |v| v.sub("test-iam", "tezt-iam") }
      }
      tampered.each { |what, bad| expect(gcs(bad).code).to eq("403"), what.to_s }
      expect(gcs(url, method: "DELETE").code).to eq("403")
      emulator.configure("now_override" => expires_at.to_i + 1)
      expect(gcs(url).code).to eq("403")
    end
  end
end
