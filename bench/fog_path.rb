# frozen_string_literal: true

# GitLab's call path: a cache hit through fog-google's
# get_object_https_url (the call CarrierWave and GitLab's direct uploads
# make) against the same hit through Signer#signed_url, and an OpenSSL
# RSA-2048 signature, all in one run (target: fog path within 1.5x of the
# direct hit, keyless and with a key-file connection).
#
#   rake compile && ruby -w bench/fog_path.rb
#   FOG_GOOGLE_LIB=/tmp/fg-v1.29.4/lib ruby -w bench/fog_path.rb   (another fog-google, see the README)
#
# Then a TracePoint check: the time to define 5,000 classes in a process
# with fog-google loaded, (a) without the gem, (b) after
# GitlabGcsSigner::Fog.install!, (c) with a TracePoint(:end) like the one
# earlier releases left enabled. Each in its own child process, the three
# interleaved over 9 rounds, best of the rounds (the machine is shared).

$LOAD_PATH.unshift(ENV["FOG_GOOGLE_LIB"]) if ENV["FOG_GOOGLE_LIB"]
require "openssl"
require "json"
require_relative "support"

CLASSES = Bench.size(5_000, 200)

# The child's script: load fog-google (and the gem as the variant says),
# then time defining CLASSES classes with the `class` keyword in a fresh
# namespace (compiled beforehand: the timing is the class definitions).
CLASS_BENCH = <<~'RUBY'
  require "fog/core"
  Fog::Logger[:deprecation] = nil
  require "fog/google"
  variant = ARGV.fetch(0)
  if variant != "without"
    require "gitlab_gcs_signer/fog"
    GitlabGcsSigner::Fog.install!(signer: GitlabGcsSigner::Signer.new(credentials: ARGV.fetch(2)))
  end
  if variant == "old_hook" # what earlier releases left enabled on every fog-google
    TracePoint.new(:end) { |tp| tp.self.is_a?(Module) && tp.self.name&.end_with?("StorageJSON::Real", "GoogleJSON::Real") }.enable
  end
  source = "module BenchClasses\n" + Array.new(Integer(ARGV.fetch(1))) { |i| "class C#{i}; X = 1; end" }.join("\n") + "\nend"
  code = RubyVM::InstructionSequence.compile(source) # parsed and compiled outside the timing
  GC.start
  t = Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
  code.eval
  print Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond) - t, " ", ObjectSpace.each_object(TracePoint).count(&:enabled?)
RUBY

def class_bench(variant)
  lib = File.expand_path("../lib", __dir__)
  args = [RbConfig.ruby, *(ENV["FOG_GOOGLE_LIB"] ? ["-I", ENV["FOG_GOOGLE_LIB"]] : []), "-I", lib, "-e", CLASS_BENCH,
          variant, CLASSES.to_s, Bench::KEY_FILE]
  IO.popen(args, err: File::NULL, &:read).split.map { |v| Integer(v) }
end

require "fog/core"
Fog::Logger[:deprecation] = nil
require "fog/google"
require "googleauth"
require "gitlab_gcs_signer/fog"

HITS = Bench.size(100_000, 1_000)
ROUNDS = Bench.size(20, 2)
BUCKET = "gitlab-uploads"
OBJECT = "@hashed/6b/86/6b86b273ff34fce19b6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b/1234/screenshot.png"
QUERY = { "response-content-disposition" => "inline; filename=\"screenshot.png\"" }.freeze

def report(label, samples)
  median = Bench.percentile(samples, 50)
  Bench.row(label, format("median %10s   p99 %10s", Bench.micros(median), Bench.micros(Bench.percentile(samples, 99))))
  median
end

keyless = Bench.keyless_signer
GitlabGcsSigner.default_signer = keyless
GitlabGcsSigner::Fog.install!(version: :v2)

Bench.title("Cache hit through fog-google #{Fog::Google::VERSION} (Ruby #{RUBY_VERSION}, #{HITS} hits each, " \
            "#{ROUNDS} interleaved rounds)")
expires = Time.now + 3600
keyless_fog = Fog::Storage.new(provider: "Google", google_project: "p", google_auth: Google::Auth::GCECredentials.new)
url = keyless_fog.get_object_https_url(BUCKET, OBJECT, expires, query: QUERY)
keyed_fog = Fog::Storage.new(provider: "Google", google_project: "p", google_json_key_string: File.read(Bench::KEY_FILE))
keyed_fog.get_object_https_url(BUCKET, OBJECT, expires, query: QUERY)

direct = { version: :v2, method: "GET", bucket: BUCKET, object: OBJECT, expires_at: expires, query: QUERY,
           v2_path: GitlabGcsSigner::Fog.v2_path_encoding }
raise "direct and fog URLs differ" unless keyless.signed_url(**direct) == url

# The three variants in interleaved rounds (direct, keyless, keyed, direct,
# ...), so that a change in the machine's load falls on all of them alike.
variants = {
  direct: -> { keyless.signed_url(**direct) },
  keyless: -> { keyless_fog.get_object_https_url(BUCKET, OBJECT, expires, query: QUERY) },
  keyed: -> { keyed_fog.get_object_https_url(BUCKET, OBJECT, expires, query: QUERY) }
}
samples = variants.transform_values { [] }
ROUNDS.times do
  variants.each { |name, call| samples[name].concat(Bench.samples_ns(HITS / ROUNDS, &call)) }
end
samples.each_value(&:sort!)
direct_hit = report("direct hit, Signer#signed_url (keyless)", samples[:direct])
keyless_hit = report("fog path hit, keyless connection", samples[:keyless])
keyed_hit = report("fog path hit, key-file connection", samples[:keyed])
key = OpenSSL::PKey::RSA.new(JSON.parse(File.read(Bench::KEY_FILE))["private_key"])
digest = OpenSSL::Digest.new("SHA256")
openssl = report("OpenSSL::PKey::RSA#sign SHA256 (2048-bit)",
                 Bench.samples_ns(Bench.size(2_000, 50)) { key.sign(digest, url) })

puts
worst = [keyless_hit, keyed_hit].max.to_f / direct_hit
Bench.row("fog path / direct hit (worst of keyless, keyed)",
          format("%.2fx (target <= 1.5x: %s)", worst, worst <= 1.5 ? "met" : "NOT met"))
Bench.row("OpenSSL signature / fog path hit", format("%.0fx", openssl.to_f / [keyless_hit, keyed_hit].max))

Bench.title("Defining #{CLASSES} classes (child processes, best of 9 interleaved rounds)")
rounds = Array.new(Bench.size(9, 1)) { %w[without installed old_hook].to_h { |v| [v, class_bench(v)] } }
best = %w[without installed old_hook].to_h { |v| [v, rounds.map { |r| r[v][0] }.min] }
Bench.row("without the gem", Bench.micros(best["without"]))
Bench.row("after install!", format("%s (%.2fx), enabled TracePoints: %d", Bench.micros(best["installed"]),
                                   best["installed"].to_f / best["without"], rounds.map { |r| r["installed"][1] }.max))
Bench.row("with the earlier releases' TracePoint(:end)", format("%s (%.2fx)", Bench.micros(best["old_hook"]),
                                                                best["old_hook"].to_f / best["without"]))
