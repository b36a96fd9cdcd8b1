# frozen_string_literal: true

# Prints the V2 URLs fog-google itself builds, for tests/v2_fog.rs.
#
# Usage: ruby fog_v2.rb KEY_JSON_PATH < cases.json > urls.json
#
# Each case is {"method", "bucket", "object", "headers": [[k, v], ...],
# "query": [[k, v], ...], "expires", "scheme", "host"}. Pairs become Ruby
# Hashes exactly as a caller's would. The output is a JSON array in case
# order of {"url": fog's URL, "v2_path": the path encoding the gem passes
# for this fog version (null: fog-google 1.15's, which the core implements)}.
# Exit status 3 means fog-google is not installed.
#
# No network: the connection is built with `allocate`, so neither
# Real#initialize (API clients) nor the metadata server is touched; the
# authorization object only exposes what Real#signature and
# #google_access_id read (`signing_key`, `issuer`).

require "json"
begin
  require "fog/google"
  require "googleauth"
rescue LoadError => e
  warn "fog-google unavailable: #{e.message}"
  exit 3
end

# fog and its dependencies print deprecations on $stdout in places; keep
# stdout for the JSON answer only.
answer = $stdout.dup
$stdout.reopen($stderr)

key = JSON.parse(File.read(ARGV.fetch(0)))

# Error messages inspect the receiver; never print the key.
Authorization = Struct.new(:signing_key, :issuer) do
  def inspect
    "#<Authorization issuer=#{issuer.inspect} signing_key=[hidden]>"
  end
  alias_method :to_s, :inspect
end
StorageJson = Struct.new(:authorization)

# fog-google's storage class: Fog::Storage::GoogleJSON up to 1.24,
# Fog::Google::StorageJSON from 1.25 (as GitlabGcsSigner::Fog::REAL_CLASSES).
storage = if Fog::Google.const_defined?(:StorageJSON, false)
            Fog::Google::StorageJSON
          else
            Fog::Storage::GoogleJSON
          end
# What Fog::Service.new does before it builds Real: load the request
# modules (get_object_https_url, put_object_url, ...) into Real.
storage.setup_requirements

# The path encoding lib/gitlab_gcs_signer/fog.rb (Fog.v2_path_encoding) names to the
# core: fog-google's own escaping up to 1.20 (the core's default), Addressable's
# path encoding from 1.21 (fog-google v1.21.0, storage_json/utils.rb). The
# same rule, restated here because this script must not need the native
# extension; spec/fog checks the shim's own v2_path against fog's URLs.
addressable = Gem::Version.new(Fog::Google::VERSION) >= Gem::Version.new("1.21.0")
require "addressable/uri" if addressable
v2_path = lambda do |bucket, object|
  next nil unless addressable

  Addressable::URI.encode_component("#{bucket}/#{object}", Addressable::URI::CharacterClasses::PATH)
end

real = storage::Real.allocate
real.instance_variable_set(
  :@storage_json,
  StorageJson.new(Authorization.new(key.fetch("private_key"), key.fetch("client_email")))
)

cases = JSON.parse($stdin.read)
urls = cases.map do |c|
  headers = c.fetch("headers").to_h
  query = c.fetch("query").to_h
  expires = c.fetch("expires")
  bucket = c.fetch("bucket")
  object = c.fetch("object")
  real.instance_variable_set(:@host, c.fetch("host"))
  https = c.fetch("scheme") == "https"
  method = c.fetch("method")

  # The public entry points CarrierWave and GitLab call, where they can
  # express the case; Utils#https_url/#http_url (what they all call) otherwise.
  url = if method == "GET" && headers.empty?
          opts = query.empty? ? {} : { query: query }
          if https
            real.get_object_https_url(bucket, object, Time.at(expires), opts)
          else
            real.get_object_http_url(bucket, object, expires, opts)
          end
        elsif method == "PUT" && https && query.empty?
          real.put_object_url(bucket, object, expires, headers)
        elsif method == "DELETE" && https && query.empty? && headers.empty?
          real.delete_object_url(bucket, object, expires)
        else
          params = { headers: headers, host: c.fetch("host"), method: method, path: "#{bucket}/#{object}" }
          params[:query] = query unless query.empty?
          https ? real.https_url(params, expires) : real.http_url(params, expires)
        end
  { "url" => url, "v2_path" => v2_path.call(bucket, object) }
end

answer.write(JSON.generate(urls))
answer.flush
