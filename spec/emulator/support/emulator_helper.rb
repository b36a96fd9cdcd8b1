# frozen_string_literal: true

require "base64"
require "cgi"
require "json"
require "net/http"
require "openssl"
require "gitlab_gcs_signer/emulator"

# One emulator child process for the whole emulator suite, reset before every example, and
# plain-HTTP helpers: the specs talk to it only over loopback HTTP.
module EmulatorHelper
  FIXTURES = File.expand_path("../../fixtures/conformance", __dir__)
  KEY_FILE = File.join(FIXTURES, "test_service_account.not-a-test.json")
  KEY_JSON = JSON.parse(File.read(KEY_FILE))
  KEY = OpenSSL::PKey::RSA.new(KEY_JSON["private_key"])
  EMAIL = KEY_JSON["client_email"]
  CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

  def self.emulator
    @emulator ||= GitlabGcsSigner::Emulator::Process.start
  end

  def emulator
    EmulatorHelper.emulator
  end

  # Sends +target+ ("/path?query") exactly as given. +host+ overrides the Host header.
  def http(method, target, headers: {}, body: nil, host: nil, read_timeout: 10, port: emulator.port)
    request = Net::HTTPGenericRequest.new(method, !body.nil?, method != "HEAD", target, headers)
    request["Host"] = host if host
    request.body = body if body
    connection = Net::HTTP.new("127.0.0.1", port)
    connection.read_timeout = read_timeout
    connection.max_retries = 0 # Net::HTTP silently retries idempotent requests once; fault specs must see the first answer
    connection.start { connection.request(request) }
  end

  def flavor
    { "Metadata-Flavor" => "Google" }
  end

  def fetch_token(scopes: nil)
    target = "/computeMetadata/v1/instance/service-accounts/default/token"
    target += "?scopes=#{CGI.escape(scopes.join(','))}" if scopes
    response = http("GET", target, headers: flavor)
    raise "token fetch failed: #{response.code}" unless response.code == "200"

    JSON.parse(response.body).fetch("access_token")
  end

  def sign_blob(payload, token: fetch_token, email: EMAIL, body: nil)
    target = "/v1/projects/-/serviceAccounts/#{CGI.escape(email)}:signBlob"
    http("POST", target, headers: { "Authorization" => "Bearer #{token}", "Content-Type" => "application/json" },
                         body: body || JSON.generate("payload" => [payload].pack("m0")))
  end

  def google_error(response)
    JSON.parse(response.body).fetch("error")
  end

  def xml_code(response)
    response.body[%r{<Code>([^<]*)</Code>}, 1]
  end

  # A V2 signed URL target shaped like fog-google 1.15's Utils#host_path_query and Real#signature:
  # its own path escaping (CGI.escape without '+', "/" kept), Base64.encode64 (line breaks every 60
  # characters, sent as %0A), CGI.escape on the signature, extra query parameters first.
  # +raw_path+ replaces fog 1.15's escaping with another spelling ("bucket/a%20b+c.png", as 1.24 writes).
  def v2_target(method, bucket, object, expires:, headers: {}, query: {}, virtual_host: false, key: KEY, email: EMAIL, raw_path: nil)
    path = raw_path || "#{bucket}/#{object}".b.gsub(/([^a-zA-Z0-9_.\-~]+)/) { |m| "%" + m.unpack("H2" * m.bytesize).join("%").upcase }.gsub("%2F", "/")
    extension = headers.select { |name, _| name.start_with?("x-goog-") }.sort.map { |name, value| "#{name}:#{value}\n" }.join
    string_to_sign = "#{method}\n#{headers['Content-MD5']}\n#{headers['Content-Type']}\n#{expires}\n#{extension}/#{path}"
    signature = Base64.encode64(key.sign(OpenSSL::Digest.new("SHA256"), string_to_sign)).chomp
    params = query.map { |name, value| "#{name}=#{value.gsub(/[^a-zA-Z0-9_.-]/) { |c| c.unpack('H2' * c.bytesize).map { |h| "%#{h.upcase}" }.join }}" }
    params += ["GoogleAccessId=#{email}", "Signature=#{CGI.escape(signature)}", "Expires=#{expires}"]
    resource = virtual_host ? path.delete_prefix("#{bucket}/") : path
    "/#{resource}?#{params.join('&')}"
  end
end

RSpec.configure do |config|
  config.include EmulatorHelper, file_path: %r{spec/emulator/}
  config.before(:each, file_path: %r{spec/emulator/}) { emulator.reset! }
end
