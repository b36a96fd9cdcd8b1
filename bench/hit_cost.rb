# frozen_string_literal: true

# What a cache hit costs from Ruby, against a local RSA-2048 signature with
# OpenSSL in the same process (target: a hit at least 100x cheaper), and
# what the gem's own misses cost (local key, and signBlob at the emulator).
#
#   rake compile && ruby -w bench/hit_cost.rb       (about 15 s; BENCH_SMOKE=1 for a quick run)
#
# Each figure is the median and 99th percentile of one-call samples
# (CLOCK_MONOTONIC around each call, so a sample includes ~0.1 us of timer
# overhead). The request is GitLab's download shape: a V4 GET with a
# response-content-disposition, 600 s.

require "openssl"
require "json"
require_relative "support"

HITS = Bench.size(200_000, 2_000)
SIGNATURES = Bench.size(3_000, 50)
REQUEST = { bucket: "gitlab-uploads", object: "uploads/1234/screenshot.png", expires_in: 600,
            query: { "response-content-disposition" => "inline; filename=\"screenshot.png\"" } }.freeze

def report(label, samples)
  Bench.row(label, format("median %10s   p99 %10s", Bench.micros(Bench.percentile(samples, 50)),
                          Bench.micros(Bench.percentile(samples, 99))))
  Bench.percentile(samples, 50)
end

Bench.title("Cost per call from Ruby #{RUBY_VERSION} (#{HITS} hits, #{SIGNATURES} signatures)")

key_signer = Bench.key_signer
key_signer.signed_url(**REQUEST)
hit = report("cache hit, key signer", Bench.samples_ns(HITS) { key_signer.signed_url(**REQUEST) })

keyless = Bench.keyless_signer
keyless.signed_url(**REQUEST)
keyless_hit = report("cache hit, keyless signer", Bench.samples_ns(HITS) { keyless.signed_url(**REQUEST) })

key = OpenSSL::PKey::RSA.new(JSON.parse(File.read(Bench::KEY_FILE))["private_key"])
payload = key_signer.string_to_sign(**REQUEST)
digest = OpenSSL::Digest.new("SHA256")
openssl = report("OpenSSL::PKey::RSA#sign SHA256 (2048-bit)", Bench.samples_ns(SIGNATURES) { key.sign(digest, payload) })

uncached = Bench.key_signer(cache: false)
report("gem miss, local key (cache: false)", Bench.samples_ns(SIGNATURES) { uncached.signed_url(**REQUEST) })

keyless_uncached = Bench.keyless_signer(cache: false, max_sign_blob_per_minute: 1_000_000)
keyless_uncached.signed_url(**REQUEST)
report("gem miss, signBlob at the emulator (0 ms)",
       Bench.samples_ns(Bench.size(SIGNATURES / 3, 20)) { keyless_uncached.signed_url(**REQUEST) })

ratio = openssl.to_f / [hit, keyless_hit].max
puts
Bench.row("OpenSSL signature / cache hit (medians)", format("%.0fx (target >= 100x: %s)", ratio, ratio >= 100 ? "met" : "NOT met"))
