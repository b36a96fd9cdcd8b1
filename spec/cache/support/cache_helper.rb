# frozen_string_literal: true

require "cgi"
require "json"
require "time"
require "uri"
require "gitlab_gcs_signer/emulator"

# Simulated time starts here (2023-11-14T22:13:20Z) unless a spec needs real time.
CACHE_EPOCH = 1_700_000_000

# Reading signed URLs back: what a URL grants (scheme, host, path, the
# caller's query, its expiry) parsed from its text, and whether it verifies
# for a given method and headers, checked in-process with the emulator's
# own verifiers (written from Google's documents, independent of the gem)
# and the conformance key's public half, the key the emulator signs with.
module CacheHelper
  # Whatever a signature and its time window add to a URL.
  SECURITY = {
    v2: %w[GoogleAccessId Signature Expires],
    v4: %w[X-Goog-Algorithm X-Goog-Credential X-Goog-Date X-Goog-Expires X-Goog-SignedHeaders X-Goog-Signature]
  }.freeze

  def self.account
    @account ||= GitlabGcsSigner::Emulator::ServiceAccount.load(CONFORMANCE_KEY)
  end

  def self.verifiers
    @verifiers ||= {
      v2: GitlabGcsSigner::Emulator::VerifierV2.new(public_key: account.public_key, email: account.email),
      v4: GitlabGcsSigner::Emulator::VerifierV4.new(public_key: account.public_key, email: account.email)
    }
  end

  # Everything a URL says about the request it allows, except the
  # signature: { version:, scheme:, host:, path:, query: [[k, v], ...]
  # (the caller's, raw, in URL order), expires_at:, signed_at: (V4 only) }.
  def url_facts(url)
    uri = URI.parse(url)
    pairs = uri.query.to_s.split("&").map { |p| p.split("=", 2).map { |s| CGI.unescape(s.to_s) } }
    params = pairs.to_h
    version = params.key?("X-Goog-Signature") ? :v4 : :v2
    facts = { version: version, scheme: uri.scheme, host: uri.port == uri.default_port ? uri.host : "#{uri.host}:#{uri.port}",
              path: uri.path, query: pairs.reject { |k, _| SECURITY[version].include?(k) } }
    if version == :v4
      signed_at = Time.strptime("#{params.fetch('X-Goog-Date')} UTC", "%Y%m%dT%H%M%SZ %Z").to_i
      facts.merge(signed_at: signed_at, expires_at: signed_at + Integer(params.fetch("X-Goog-Expires"), 10),
                  credential: params.fetch("X-Goog-Credential"), signed_headers: params.fetch("X-Goog-SignedHeaders"))
    else
      facts.merge(expires_at: Integer(params.fetch("Expires"), 10), access_id: params.fetch("GoogleAccessId"))
    end
  end

  def url_expiry(url)
    url_facts(url)[:expires_at]
  end

  # True when the URL lets a client send +method+ with +headers+ at +now+.
  def verifies?(url, method:, now:, headers: {})
    uri = URI.parse(url)
    host = uri.port == uri.default_port ? uri.host : "#{uri.host}:#{uri.port}"
    version = url.include?("X-Goog-Signature=") ? :v4 : :v2
    target = uri.query ? "#{uri.path}?#{uri.query}" : uri.path
    headers = { "host" => host }.merge(headers.to_h { |k, v| [k.to_s.downcase, v.to_s] })
    CacheHelper.verifiers[version].verify(method: method, host: host, target: target, headers: headers, now: now).ok?
  end

  # X = ceil(now + lifetime) and E = min(floor(ratio * (X - floor(now))), max): the window the
  # README documents, computed here independently of the gem.
  def window(now, lifetime, ratio: 0.1, max_extension: 300)
    at_least = (now + lifetime).ceil
    e = [(ratio * (at_least - now.floor)).floor, max_extension].min
    [at_least, at_least + e]
  end

  def manual_clock(at = CACHE_EPOCH)
    GitlabGcsSigner::Testing::ManualClock.new(at)
  end
end

RSpec.configure do |config|
  config.include CacheHelper, :cache
end
