# frozen_string_literal: true

require "digest"
require_relative "../spec_helper"

# Issue 15 S2, m5, m8: a header the caller asks for is bound by the URL in
# whatever case it is spelt (Cloud Storage reads names case-insensitively),
# for V2 as for V4, or refused; never left out of the signature. Checked
# against the emulator's verifiers, which rebuild the string to sign from
# the request as received (lib/gitlab_gcs_signer/emulator/verifier_v*.rb).
RSpec.describe "signed headers", :emulator do
  let(:signer) { key_signer }
  let(:body) { "hello" }
  let(:md5) { [Digest::MD5.digest(body)].pack("m0") }

  def spellings(name)
    [name, name.downcase, name.upcase, name.chars.each_with_index.map { |c, i| i.even? ? c.upcase : c.downcase }.join]
      .uniq
  end

  def put(url, headers)
    gcs(url, method: "PUT", body: body, headers: headers)
  end

  %i[v2 v4].each do |version|
    describe version.to_s do
      [["Content-Type", "text/plain", "text/html"],
       ["Content-MD5", nil, "XrY7u+Ae7tCTyyK7j1rNww=="],
       ["X-Goog-Meta-Owner", "alice", "mallory"]].each do |name, value, other|
        it "binds #{name} in every spelling: as asked 200, missing or another value 403" do
          value ||= md5
          spellings(name).each do |spelling|
            object = "#{version}-#{spelling}"
            url = signer.signed_url(version: version, method: "PUT", bucket: "b", object: object,
                                    expires_in: 600, headers: { spelling => value })
            expect(put(url, { name => value }).code).to eq("200"), "#{spelling}: as asked"
            expect(put(url, {}).code).to eq("403"), "#{spelling}: without the header"
            expect(put(url, { name => other }).code).to eq("403"), "#{spelling}: another value"
          end
        end
      end

      it "binds all three at once, as GitLab's direct upload sends them" do
        headers = { "content-type" => "application/octet-stream", "content-md5" => md5, "X-Goog-Meta-Owner" => "alice" }
        url = signer.signed_url(version: version, method: "PUT", bucket: "b", object: "all", expires_in: 600,
                                headers: headers)
        expect(put(url, headers).code).to eq("200")
        headers.each_key do |dropped|
          expect(put(url, headers.except(dropped)).code).to eq("403"), dropped
        end
      end

      # m5: a name that is no RFC 9110 token can never be sent, so no URL can verify.
      it "refuses header names that are no HTTP token" do
        ["x-goog-meta-a;b", "a b", "x:y", "a(b)", "é"].each do |name|
          expect { signer.signed_url(version: version, bucket: "b", object: "o", expires_in: 60, headers: { name => "v" }) }
            .to raise_error(ArgumentError, /not a valid HTTP header name/), name
        end
      end
    end
  end

  # S2: V2 signs only Content-MD5, Content-Type and x-goog-*; anything else
  # would not be required by the URL, so it is refused rather than dropped.
  it "refuses a header V2 cannot sign instead of dropping it" do
    ["Cache-Control", "content-disposition", "X-Custom"].each do |name|
      expect { signer.signed_url(version: :v2, method: "PUT", bucket: "b", object: "o", expires_in: 60, headers: { name => "v" }) }
        .to raise_error(ArgumentError, /cannot be signed in a V2 URL/), name
    end
    expect { signer.signed_url(version: :v2, bucket: "b", object: "o", expires_in: 60, headers: { "Content-Type" => "a", "content-type" => "b" }) }
      .to raise_error(ArgumentError, /twice with different values/)
  end

  # m8: V2 values are trimmed, as an HTTP server reads them.
  it "trims V2 header values like the server does" do
    url = signer.signed_url(version: :v2, method: "PUT", bucket: "b", object: "trim", expires_in: 600,
                            headers: { "Content-Type" => "  text/plain\t", "x-goog-meta-a" => " 1 " })
    expect(put(url, { "Content-Type" => "text/plain", "x-goog-meta-a" => "1" }).code).to eq("200")
  end

  # m8: Cloud Storage leaves the customer-supplied key and its hash out of
  # the V2 string to sign; a URL that signed them could never verify.
  it "leaves the customer-supplied encryption key out of a V2 signature (and out of the URL)" do
    key = ["k" * 32].pack("m0")
    csek = { "x-goog-encryption-algorithm" => "AES256", "x-goog-encryption-key" => key,
             "x-goog-encryption-key-sha256" => [Digest::SHA256.digest("k" * 32)].pack("m0") }
    url = signer.signed_url(version: :v2, method: "PUT", bucket: "b", object: "csek", expires_in: 600, headers: csek)
    expect(url).not_to include(CGI.escape(key))
    expect(signer.string_to_sign(version: :v2, method: "PUT", bucket: "b", object: "csek", expires_in: 600, headers: csek))
      .not_to include(key)
    expect(put(url, csek).code).to eq("200")
    expect(put(url, csek.merge("x-goog-encryption-algorithm" => "other")).code).to eq("403")
  end

  # m5: only spaces and tabs are collapsed in V4 header values; a form feed
  # is a byte of the value, as for the server.
  it "collapses only spaces and tabs in V4 header values" do
    url = signer.signed_url(bucket: "b", object: "ff", method: "PUT", expires_in: 600,
                            headers: { "x-goog-meta-a" => " a \t b\fc  d" })
    expect(put(url, { "x-goog-meta-a" => "a b\fc d" }).code).to eq("200")
    expect(put(url, { "x-goog-meta-a" => "a b c d" }).code).to eq("403")
  end
end
