# frozen_string_literal: true

# What the shared level costs per call: a local hit with and without a
# shared cache configured (the hit path must not change), and a miss served
# from Redis (another process signed) versus a miss signed through signBlob.
#
#   ruby -Ilib -Itesting/lib bench/shared_hit.rb [--iam-latency-ms 50] [--calls 200000]

require "optparse"
require "gitlab_gcs_signer"
require "gitlab_gcs_signer/emulator"
require_relative "../spec/support/redis"

opts = { iam_latency_ms: 50, calls: 200_000, misses: 300 }
OptionParser.new do |o|
  o.on("--iam-latency-ms MS", Integer) { |v| opts[:iam_latency_ms] = v }
  o.on("--calls N", Integer) { |v| opts[:calls] = v }
  o.on("--misses N", Integer) { |v| opts[:misses] = v }
end.parse!

emulator = GitlabGcsSigner::Emulator::Process.start(config: { "iam" => { "latency_ms" => opts[:iam_latency_ms] } })
redis = RedisServer.new.start

def signer(emulator, redis = nil)
  shared = redis && GitlabGcsSigner::SharedCache.new(redis.cache_store)
  GitlabGcsSigner::Signer.new(metadata_host: emulator.host, iam_endpoint: emulator.url, shared_cache: shared)
end

def per_call(count)
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  count.times { |i| yield i }
  (Process.clock_gettime(Process::CLOCK_MONOTONIC) - started) / count
end

request = { bucket: "gitlab", object: "uploads/hot.png", expires_in: 600,
            query: { "response-content-disposition" => "inline" } }
plain = signer(emulator)
shared = signer(emulator, redis)
[plain, shared].each { |s| s.signed_url(**request) }
3.times do
  hit_plain = per_call(opts[:calls]) { plain.signed_url(**request) }
  hit_shared = per_call(opts[:calls]) { shared.signed_url(**request) }
  puts format("local hit: %<p>.2f us without a shared cache, %<s>.2f us with one", p: hit_plain * 1e6, s: hit_shared * 1e6)
end

# Misses: process A signs N objects; process B (fresh local cache) then
# gets them from Redis; process C (no shared level) signs them itself.
names = Array.new(opts[:misses]) { |i| "uploads/#{i}.png" }
writer = signer(emulator, redis)
signed = per_call(names.size) { |i| writer.signed_url(**request, object: names[i]) }
reader = signer(emulator, redis)
from_redis = per_call(names.size) { |i| reader.signed_url(**request, object: names[i]) }
alone = signer(emulator)
sign_blob = per_call(names.size) { |i| alone.signed_url(**request, object: names[i]) }
puts format("miss, signed and shared (signBlob + Redis writes): %<a>.2f ms", a: signed * 1e3)
puts format("miss served from Redis:                            %<b>.2f ms (signBlob calls: %<c>d)",
            b: from_redis * 1e3, c: reader.stats[:sign_blob_calls])
puts format("miss signed through signBlob, no shared level:     %<d>.2f ms (iam latency %<l>d ms)",
            d: sign_blob * 1e3, l: opts[:iam_latency_ms])
emulator.stop
redis.stop
