# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "support/cache_helper"

# The cache key is the whole request except time: a URL is never served for
# a request that differs in method, bucket, object, headers, query, host,
# scheme, URL style or version. Each variant below differs from the base in
# one thing (some only in what V2 leaves unsigned, such as
# response-content-disposition); every URL must be signed for its own
# variant, served again only to it, and verify at the emulator only for it.
RSpec.describe "signed-URL cache key", :cache, :emulator do
  let(:clock) { manual_clock(Time.now.to_i) }

  def variants
    localhost = emulator.host.sub("127.0.0.1", "localhost")
    base = { bucket: "bkt", object: "dir/a b.txt", method: "GET", version: :v4, scheme: "http",
             host: emulator.host, headers: {}, query: {} }
    changes = [
      {}, { method: "PUT" }, { method: "DELETE" }, { method: "HEAD" },
      { bucket: "bkt2" }, { object: "dir/a b.TXT" }, { object: "dir/a%20b.txt" }, { object: nil },
      { headers: { "x-goog-meta-a" => "1" } }, { headers: { "x-goog-meta-a" => "2" } },
      { headers: { "X-Goog-Meta-A" => "1", "x-goog-meta-b" => "1" } }, { headers: { "Content-Type" => "text/plain" } },
      { query: { "response-content-disposition" => "attachment" } },
      { query: { "response-content-disposition" => "inline" } }, { query: { "generation" => "1" } },
      { host: localhost }, { scheme: "https" }, { url_style: :virtual_hosted },
      { version: :v2 }, { version: :v2, method: "PUT" }, { version: :v2, scheme: "https" },
      { version: :v2, query: { "response-content-disposition" => "attachment" } },
      { version: :v2, query: { "response-content-disposition" => "inline" } },
      { version: :v2, query: { "response-content-type" => "text/plain" } },
      { version: :v2, headers: { "x-goog-meta-a" => "1" } }, { version: :v2, headers: { "Content-Type" => "text/plain" } },
      { version: :v2, object: "dir/a%20b.txt" }, { version: :v2, host: localhost }
    ]
    changes.map { |change| base.merge(change) }
  end

  def lower(headers)
    headers.to_h { |k, v| [k.downcase, v] }
  end

  # Whether GCS accepts URL i sent with request j's method and headers: the
  # signature covers the method; V4 covers the headers it lists (extra
  # headers are not its business), V2 covers Content-Type and every x-goog-*
  # header the request carries.
  def accepts?(signed, sent)
    return false unless signed[:method] == sent[:method]

    mine = lower(signed[:headers])
    theirs = lower(sent[:headers])
    if signed[:version] == :v4
      mine <= theirs
    else
      relevant = ->(h) { h.select { |k, _| k.start_with?("x-goog-") || k == "content-type" } }
      relevant.call(mine) == relevant.call(theirs)
    end
  end

  def expected_location(v)
    path = v[:object] ? "/#{v[:object]}" : "/"
    case v[:url_style]
    when :virtual_hosted then ["#{v[:bucket]}.#{v[:host]}", path]
    else [v[:host], v[:object] ? "/#{v[:bucket]}#{path}" : "/#{v[:bucket]}"]
    end
  end

  it "serves each URL only to its own request" do
    signer = keyless_signer(clock: clock, cache: { extension_ratio: 0.1, max_extension: 300 })
    all = variants
    urls = all.map { |v| signer.signed_url(**v, expires_in: 600) }
    expect(signer.stats).to include(misses: all.size, hits: 0)
    expect(urls.uniq.size).to eq(all.size)
    expect(emulator.stats["sign_blob_calls"]).to eq(all.size)

    clock.advance(30)
    again = all.reverse.map { |v| signer.signed_url(**v, expires_in: 600) }.reverse
    expect(again).to eq(urls)
    expect(signer.stats).to include(misses: all.size, hits: all.size)

    all.zip(urls).each do |v, url|
      facts = url_facts(url)
      host, path = expected_location(v)
      expect(facts).to include(version: v[:version], scheme: v[:scheme], host: host)
      expect(CGI.unescape(facts[:path].gsub("+", "%2B"))).to eq(path)
      expect(facts[:query].to_h).to eq(v[:query])
    end

    mismatches = []
    refused = Hash.new(0)
    all.each_with_index do |signed, i|
      all.each_with_index do |sent, j|
        body = sent[:method] == "PUT" ? "x" : nil
        response = gcs(urls[i], method: sent[:method], headers: sent[:headers], body: body)
        accepted = response.code != "403"
        refused[i] += 1 unless accepted
        mismatches << [i, j, response.code] if accepted != accepts?(signed, sent)
        mismatches << [i, j, :not_own] if i == j && !accepted
      end
    end
    expect(mismatches).to eq([])
    # Every URL is refused for some other request (at least the other methods).
    expect(refused.keys.sort).to eq((0...all.size).to_a)
  end
end
