# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"
require "socket"
require "tmpdir"

# Runs exe/gitlab-gcs-signer as a subprocess (this Ruby, -w, -Ilib), as an
# operator would, with a clean environment: none of the variables the gem
# reads are inherited, so nothing can reach 169.254.169.254 or Google.
module CliHelpers
  EXE = File.expand_path("../../exe/gitlab-gcs-signer", __dir__)
  LIB = File.expand_path("../../lib", __dir__)
  GEM_VARIABLES = %w[GCE_METADATA_HOST GCS_SIGNER_IAM_ENDPOINT GITLAB_GCS_SIGNER_SERVICE_ACCOUNT
                     GOOGLE_APPLICATION_CREDENTIALS].freeze

  Run = Struct.new(:out, :err, :status) do
    def json
      JSON.parse(out)
    end
  end

  def cli(*args, env: {})
    clean = GEM_VARIABLES.to_h { |name| [name, nil] }
    # No ~/.config/gcloud/application_default_credentials.json either.
    clean["HOME"] = Dir.tmpdir
    out, err, status = Open3.capture3(clean.merge(env), RbConfig.ruby, "-w", "-I", LIB, EXE, *args.map(&:to_s))
    own_warnings = err.lines.grep(/#{Regexp.escape(LIB)}.*warning:/)
    raise "Ruby warnings from lib/:\n#{own_warnings.join}" unless own_warnings.empty?

    Run.new(out, err, status.exitstatus)
  end

  # A loopback port nothing listens on.
  def closed_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end
end

RSpec.configure do |config|
  config.include CliHelpers, :cli
end
