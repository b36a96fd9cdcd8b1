# frozen_string_literal: true

# bench/fog_path.rb's comparison counted in CPU instructions (valgrind's
# callgrind) instead of time, so that a busy machine does not blur it: a
# cache hit through fog-google's get_object_https_url (keyless and key-file
# connections) against the same hit through Signer#signed_url. Each figure is
# the instruction count of a child process that makes HITS calls minus that of
# the same child making none, divided by HITS.
#
#   rake compile && ruby -w bench/fog_path_instructions.rb     (needs valgrind)
#   FOG_GOOGLE_LIB=/tmp/fg-v1.29.4/lib ruby -w bench/fog_path_instructions.rb
#
# Instructions are not time (Ruby's VM and the native code do not run the
# same number of instructions per cycle), so this complements the timed
# figures rather than replacing them.

require "rbconfig"
require_relative "support"

HITS = Bench.size(20_000, 200)

# The child: fog-google and the gem loaded, three connections' worth of
# set-up (so every mode does the same work before its loop), one warm-up call
# each, then HITS calls of one kind.
CHILD = <<~'RUBY'
  require "fog/core"
  Fog::Logger[:deprecation] = nil
  require "fog/google"
  require "googleauth"
  require "gitlab_gcs_signer/fog"
  mode, hits, key_file, metadata_host, iam_endpoint = ARGV
  bucket = "gitlab-uploads"
  object = "@hashed/6b/86/6b86b273ff34fce19b6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b/1234/screenshot.png"
  query = { "response-content-disposition" => "inline; filename=\"screenshot.png\"" }.freeze
  keyless = GitlabGcsSigner::Signer.new(metadata_host: metadata_host, iam_endpoint: iam_endpoint)
  GitlabGcsSigner.default_signer = keyless
  GitlabGcsSigner::Fog.install!(version: :v2)
  expires = Time.now + 3600
  keyless_fog = Fog::Storage.new(provider: "Google", google_project: "p", google_auth: Google::Auth::GCECredentials.new)
  keyed_fog = Fog::Storage.new(provider: "Google", google_project: "p", google_json_key_string: File.read(key_file))
  direct = { version: :v2, method: "GET", bucket: bucket, object: object, expires_at: expires, query: query,
             v2_path: GitlabGcsSigner::Fog.v2_path_encoding }
  url = keyless_fog.get_object_https_url(bucket, object, expires, query: query)
  keyed_fog.get_object_https_url(bucket, object, expires, query: query)
  abort "direct and fog URLs differ" unless keyless.signed_url(**direct) == url
  GC.disable # no collection inside the loop (a full one costs millions of instructions)
  case mode
  when "none" then nil
  when "direct" then Integer(hits).times { keyless.signed_url(**direct) }
  when "keyless" then Integer(hits).times { keyless_fog.get_object_https_url(bucket, object, expires, query: query) }
  when "keyed" then Integer(hits).times { keyed_fog.get_object_https_url(bucket, object, expires, query: query) }
  end
RUBY

def instructions(mode, hits)
  lib = File.expand_path("../lib", __dir__)
  args = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", RbConfig.ruby,
          *(ENV["FOG_GOOGLE_LIB"] ? ["-I", ENV["FOG_GOOGLE_LIB"]] : []), "-I", lib, "-e", CHILD,
          mode, hits.to_s, Bench::KEY_FILE, Bench.emulator.host, Bench.emulator.url]
  log = IO.popen(args, err: %i[child out], &:read)
  raise "valgrind failed for #{mode}:\n#{log}" unless $?.success?

  Integer(log[/Collected : (\d+)/, 1] || raise("no callgrind total for #{mode}:\n#{log}"))
end

unless system("valgrind --version", out: File::NULL, err: File::NULL)
  abort "bench/fog_path_instructions.rb needs valgrind (apt-get install valgrind)"
end

baseline = instructions("none", 0)
per_hit = %w[direct keyless keyed].to_h { |mode| [mode, (instructions(mode, HITS) - baseline).fdiv(HITS)] }
fog_version = IO.popen([RbConfig.ruby, *(ENV["FOG_GOOGLE_LIB"] ? ["-I", ENV["FOG_GOOGLE_LIB"]] : []), "-e",
                        "require 'fog/google'; print Fog::Google::VERSION"], err: File::NULL, &:read)
Bench.title("Instructions per cache hit, fog-google #{fog_version} (Ruby #{RUBY_VERSION}, #{HITS} hits, callgrind)")
Bench.row("direct hit, Signer#signed_url (keyless)", format("%8.0f", per_hit["direct"]))
Bench.row("fog path hit, keyless connection", format("%8.0f", per_hit["keyless"]))
Bench.row("fog path hit, key-file connection", format("%8.0f", per_hit["keyed"]))
worst = [per_hit["keyless"], per_hit["keyed"]].max / per_hit["direct"]
Bench.row("fog path / direct hit (worst of keyless, keyed)", format("%.2fx", worst))
