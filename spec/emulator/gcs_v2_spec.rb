# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/emulator_helper"

# V2 URLs built the way fog-google 1.15 builds them (see EmulatorHelper#v2_target), signed with
# OpenSSL directly, then used against the emulated object endpoint.
RSpec.describe "emulated GCS object endpoint with V2 signed URLs" do
  let(:expires) { Time.now.to_i + 600 }
  let(:name) { "uploads/a b+c.png" }

  before { emulator.client.put_object("bucket", name, "PNG-bytes", content_type: "image/png") }

  it "serves an object to a GET URL whose path fog escaped (a%20b%2Bc.png) and whose signature has %0A" do
    target = v2_target("GET", "bucket", name, expires: expires)
    expect(target).to include("/bucket/uploads/a%20b%2Bc.png?").and include("%0A")
    response = http("GET", target)
    expect([response.code, response.body, response["Content-Type"]]).to eq(%w[200 PNG-bytes image/png])
  end

  it "signs the path exactly as sent, whichever way a fog-google version escaped it" do
    # 1.24 keeps '+'; 1.25+ (Addressable) also keeps "!$&'()*+,;=:@". GCS decodes these to the same name.
    %w[bucket/uploads/a%20b+c.png bucket/uploads/a%20b%2Bc.png bucket/uploads/a%20b%2bc.png].each do |raw_path|
      response = http("GET", v2_target("GET", "bucket", nil, expires: expires, raw_path: raw_path))
      expect([response.code, response.body]).to eq(%w[200 PNG-bytes]), raw_path
    end
    signed_one_way = v2_target("GET", "bucket", nil, expires: expires, raw_path: "bucket/uploads/a%20b+c.png")
    sent_another = signed_one_way.sub("a%20b+c.png", "a%20b%2Bc.png")
    expect(xml_code(http("GET", sent_another))).to eq("SignatureDoesNotMatch")
  end

  it "honours the unsigned response-content-disposition / -type parameters on GET" do
    query = { "response-content-disposition" => 'attachment; filename="a b.png"', "response-content-type" => "application/x-download" }
    response = http("GET", v2_target("GET", "bucket", name, expires: expires, query: query))
    expect(response.code).to eq("200")
    expect(response["Content-Disposition"]).to eq('attachment; filename="a b.png"')
    expect(response["Content-Type"]).to eq("application/x-download")
  end

  it "stores a PUT with the signed Content-Type and x-goog headers, and refuses a different Content-Type" do
    headers = { "Content-Type" => "text/plain", "x-goog-meta-origin" => "spec" }
    target = v2_target("PUT", "bucket", "new object.txt", expires: expires, headers: headers)
    expect(http("PUT", target, headers: headers, body: "hello").code).to eq("200")
    expect(http("GET", v2_target("GET", "bucket", "new object.txt", expires: expires)).body).to eq("hello")

    other_type = http("PUT", target, headers: headers.merge("Content-Type" => "text/html"), body: "x")
    expect([other_type.code, xml_code(other_type)]).to eq(%w[403 SignatureDoesNotMatch])
    missing_header = http("PUT", target, headers: { "Content-Type" => "text/plain" }, body: "x")
    expect(xml_code(missing_header)).to eq("SignatureDoesNotMatch")
    expect(missing_header.body).to include("<StringToSign>PUT\n\ntext/plain\n#{expires}\n/bucket/new%20object.txt</StringToSign>")
  end

  it "checks Content-MD5 when it is signed and sent" do
    md5 = [Digest::MD5.digest("hello")].pack("m0")
    headers = { "Content-MD5" => md5, "Content-Type" => "text/plain" }
    target = v2_target("PUT", "bucket", "md5.txt", expires: expires, headers: headers)
    expect(http("PUT", target, headers: headers, body: "hello").code).to eq("200")
    expect(xml_code(http("PUT", target, headers: headers, body: "hellO"))).to eq("BadDigest")
  end

  it "answers HEAD and DELETE to URLs signed for them, then 404 NoSuchKey" do
    head = http("HEAD", v2_target("HEAD", "bucket", name, expires: expires))
    expect([head.code, head["Content-Length"]]).to eq(%w[200 9])
    expect(http("DELETE", v2_target("DELETE", "bucket", name, expires: expires)).code).to eq("204")
    gone = http("GET", v2_target("GET", "bucket", name, expires: expires))
    expect([gone.code, xml_code(gone)]).to eq(%w[404 NoSuchKey])
  end

  it "serves virtual-hosted requests (Host: bucket.127.0.0.1:PORT), signing /bucket/object" do
    target = v2_target("GET", "bucket", name, expires: expires, virtual_host: true)
    expect(target).to start_with("/uploads/")
    response = http("GET", target, host: "bucket.127.0.0.1:#{emulator.port}")
    expect([response.code, response.body]).to eq(%w[200 PNG-bytes])
    expect(http("GET", target, host: "bucket.localhost:#{emulator.port}").code).to eq("200")
  end

  it "refuses tampered URLs: path, Expires, signature, method" do
    target = v2_target("GET", "bucket", name, expires: expires)
    tampered = [
      ["GET", target.sub("a%20b", "a%20c")],
      ["GET", target.sub("Expires=#{expires}", "Expires=#{expires + 1}")],
      ["GET", target.sub(/Signature=(.)/) { "Signature=#{Regexp.last_match(1) == 'A' ? 'B' : 'A'}" }],
      ["DELETE", target]
    ]
    tampered.each do |method, variant|
      response = http(method, variant)
      expect([response.code, xml_code(response)]).to eq(%w[403 SignatureDoesNotMatch]), "#{method} #{variant}"
    end
    expect(emulator.stats["verifications_failed"]).to eq(4)
  end

  it "refuses expired URLs, other accounts, unsigned requests and a raw '+' in the signature" do
    expired = http("GET", v2_target("GET", "bucket", name, expires: Time.now.to_i - 1))
    expect([expired.code, xml_code(expired)]).to eq(%w[403 ExpiredToken])

    other_key = OpenSSL::PKey::RSA.new(2048)
    other = http("GET", v2_target("GET", "bucket", name, expires: expires, key: other_key, email: "x@y.iam.gserviceaccount.com"))
    expect(xml_code(other)).to eq("AccessDenied")
    forged = http("GET", v2_target("GET", "bucket", name, expires: expires, key: other_key))
    expect(xml_code(forged)).to eq("SignatureDoesNotMatch")

    expect(xml_code(http("GET", "/bucket/uploads/a%20b%2Bc.png"))).to eq("AccessDenied")
    raw_plus = v2_target("GET", "bucket", name, expires: expires).sub(/Signature=[^&]*/, "Signature=ab+c")
    expect(xml_code(http("GET", raw_plus))).to eq("MalformedSecurityHeader")
    expect(emulator.stats["failure_reasons"].size).to eq(5)
  end

  it "follows the emulator's pinned clock" do
    target = v2_target("GET", "bucket", name, expires: 1_000_000_000)
    expect(xml_code(http("GET", target))).to eq("ExpiredToken")
    emulator.configure("now_override" => 1_000_000_000)
    expect(http("GET", target).code).to eq("200")
  end
end
