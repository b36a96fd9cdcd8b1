# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/emulator_helper"
require "time"

# googleapis/conformance-tests storage/v1 signingV4Tests, replayed as requests against the
# emulator's verifier: first as a Ruby object, then over HTTP.
RSpec.describe GitlabGcsSigner::Emulator::VerifierV4 do
  vectors = JSON.parse(File.read(File.join(EmulatorHelper::FIXTURES, "v4_signatures.json"))).fetch("signingV4Tests")

  # The request a client would send for a vector's expectedUrl: Host is the URL's authority.
  def request_for(vector, url: vector["expectedUrl"])
    authority, target = url.sub(%r{\Ahttps?://}, "").split("/", 2)
    { method: vector["method"], host: authority, target: "/#{target}", headers: vector.fetch("headers", {}),
      now: Time.iso8601(vector["timestamp"]).to_i }
  end

  # Vector 28's expectedCanonicalRequest keeps the bucket in the path although its URL is
  # virtual-hosted; its string to sign and signature are for "/test-object" (fixtures README).
  def expected_canonical(vector)
    canonical = vector["expectedCanonicalRequest"]
    return canonical unless vector["description"] == "Universe domain with virtual hosted style"

    canonical.sub("\n/test-bucket/test-object\n", "\n/test-object\n")
  end

  def replace_param(target, name, value)
    target.sub(/([?&]#{Regexp.escape(name)}=)[^&]*/) { "#{Regexp.last_match(1)}#{value}" }
  end

  def alter_last_alnum(text)
    index = text.rindex(/[A-Za-z0-9]/)
    text.dup.tap { |copy| copy[index] = copy[index] == "a" ? "b" : "a" }
  end

  let(:verifier) { described_class.new(public_key: EmulatorHelper::KEY.public_key, email: EmulatorHelper::EMAIL) }

  it "has all 29 vectors" do
    expect(vectors.size).to eq(29)
  end

  describe "as a unit" do
    vectors.each_with_index do |vector, index|
      context "vector #{index}: #{vector['description']}" do
        let(:request) { request_for(vector) }

        it "accepts the expected URL and rebuilds the expected canonical request and string to sign" do
          result = verifier.verify(**request)
          expect(result.message).to be_nil
          expect(result).to be_ok
          expect(result.canonical_request).to eq(expected_canonical(vector))
          expect(result.string_to_sign).to eq(vector["expectedStringToSign"])
        end

        it "rejects a tampered method, path, host, signature and every signed query value" do
          path, query = request[:target].split("?", 2)
          tampered = [
            request.merge(method: request[:method] == "GET" ? "PUT" : "GET"),
            request.merge(target: "#{alter_last_alnum(path)}?#{query}"),
            request.merge(host: "x#{request[:host]}"),
            request.merge(target: replace_param(request[:target], "X-Goog-Signature", alter_last_alnum(query[/X-Goog-Signature=(\h+)/, 1])))
          ]
          query.split("&").map { |pair| pair.split("=", 2) }.each do |name, value|
            next if name == "X-Goog-Signature"

            tampered << request.merge(target: replace_param(request[:target], name, value.empty? ? "a" : alter_last_alnum(value)))
          end
          request[:headers].each_key do |name|
            tampered << request.merge(headers: request[:headers].merge(name => "#{request[:headers][name]}x"))
          end
          tampered.each do |variant|
            expect(verifier.verify(**variant)).not_to be_ok, "accepted #{variant.inspect}"
          end
        end
      end
    end

    let(:simple) { vectors.fetch(0) }

    it "canonicalises equivalent path spellings alike (decode, then re-encode)" do
      request = request_for(simple)
      result = verifier.verify(**request.merge(target: request[:target].sub("/test-object?", "/tes%74-object?")))
      expect(result).to be_ok
    end

    it "sorts the query itself, whatever order the URL carries it in" do
      request = request_for(vectors.fetch(14)) # has prefix= and X-Goog-Meta-Foo= besides the X-Goog-* parameters
      path, query = request[:target].split("?", 2)
      result = verifier.verify(**request.merge(target: "#{path}?#{query.split('&').reverse.join('&')}"))
      expect(result).to be_ok
    end

    it "is valid from 60 s before X-Goog-Date to X-Goog-Date + X-Goog-Expires, and not outside" do
      request = request_for(simple)
      signed_at = request[:now]
      expect(verifier.verify(**request.merge(now: signed_at - 60))).to be_ok
      expect(verifier.verify(**request.merge(now: signed_at + 10))).to be_ok

      expired = verifier.verify(**request.merge(now: signed_at + 11))
      expect([expired.ok?, expired.code]).to eq([false, "ExpiredToken"])
      early = verifier.verify(**request.merge(now: signed_at - 61))
      expect([early.ok?, early.code]).to eq([false, "AccessDenied"])
    end

    it "rejects another account's credential, a missing host, X-Goog-Expires over 7 days and a raw '+'" do
      request = request_for(simple)
      other = verifier.verify(**request.merge(target: request[:target].sub("test-iam-credentials%40", "someone-else%40")))
      expect([other.ok?, other.code, other.message]).to eq([false, "MalformedSecurityHeader", "X-Goog-Credential is for someone-else@dummy-project-id.iam.gserviceaccount.com, not #{EmulatorHelper::EMAIL}"])

      no_host = verifier.verify(**request.merge(target: replace_param(request[:target], "X-Goog-SignedHeaders", "x-goog-date")))
      expect(no_host.message).to include("must include host")

      week = verifier.verify(**request.merge(target: replace_param(request[:target], "X-Goog-Expires", "604801")))
      expect(week.message).to include("X-Goog-Expires")

      plus = verifier.verify(**request.merge(target: "#{request[:target]}&a=b+c"))
      expect(plus.message).to include("raw '+'")
    end
  end

  describe "over HTTP" do
    # HTTP field names are tokens (RFC 9110), which cannot contain "/": WEBrick refuses vector 5's
    # header "header/name/with/slash" before the emulator sees it, so that vector is unit-tested only.
    http_vectors = vectors.each_with_index.reject { |vector, _| vector.fetch("headers", {}).keys.any? { |name| name.include?("/") } }

    it "skips only the vector whose header name HTTP cannot carry" do
      expect(vectors.size - http_vectors.size).to eq(1)
    end

    it "passes every vector's URL and refuses it with one signature byte changed" do
      http_vectors.each do |vector, index|
        request = request_for(vector)
        emulator.configure("now_override" => request[:now])
        body = %w[PUT POST].include?(request[:method]) ? "hello" : nil
        headers = request[:headers].merge(body ? { "Content-Type" => "text/plain" } : {})
        response = http(request[:method], request[:target], headers: headers, host: request[:host], body: body)
        expect(response.code).not_to eq("403"), "vector #{index}: #{response.body}"

        bad = replace_param(request[:target], "X-Goog-Signature", alter_last_alnum(request[:target][/X-Goog-Signature=(\h+)/, 1]))
        refused = http(request[:method], bad, headers: headers, host: request[:host], body: body)
        expect([refused.code, xml_code(refused)]).to eq(%w[403 SignatureDoesNotMatch]), "vector #{index}"
      end
      stats = emulator.stats
      expect(stats.values_at("verifications_passed", "verifications_failed")).to eq([http_vectors.size, http_vectors.size])
    end

    it "answers ExpiredToken once the pinned clock passes the expiry" do
      request = request_for(vectors.fetch(0))
      emulator.configure("now_override" => request[:now] + 11)
      response = http("GET", request[:target], host: request[:host])
      expect([response.code, xml_code(response)]).to eq(%w[403 ExpiredToken])
      expect(emulator.stats["failure_reasons"].last).to include("ExpiredToken")
    end
  end
end
