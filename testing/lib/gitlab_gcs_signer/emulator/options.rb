# frozen_string_literal: true

require "optparse"

module GitlabGcsSigner
  module Emulator
    # Command-line options of exe/gitlab-gcs-emulator, shared with `gitlab-gcs-signer emulator`.
    module Options
      BANNER = "Usage: %s [--port N] [--bind ADDR] [--key FILE] [--token-lifetime S] [--cold-start-ms MS]"

      module_function

      def defaults
        { port: 0, bind: "127.0.0.1", key_file: DEFAULT_KEY_FILE, token_lifetime: 3599, cold_start_ms: 0 }
      end

      # A parser that fills +options+ (Server.new keywords).
      def parser(options, program: "gitlab-gcs-emulator")
        OptionParser.new do |parser|
          parser.program_name = program
          parser.banner = format(BANNER, program)
          parser.separator ""
          parser.separator "Loopback emulator of the GKE metadata server, IAM Credentials signBlob and the GCS"
          parser.separator "object endpoint. Prints \"listening http://HOST:PORT\" once ready; stops on TERM/INT."
          parser.separator ""
          parser.on("--port N", Integer, "port to listen on (0: any free port; default 0)") { |v| options[:port] = v }
          parser.on("--bind ADDR", "address to bind (default 127.0.0.1)") { |v| options[:bind] = v }
          parser.on("--key FILE", "service-account key file to sign and verify with") { |v| options[:key_file] = File.expand_path(v) }
          parser.on("--token-lifetime S", Integer, "expires_in of issued tokens (default 3599)") { |v| options[:token_lifetime] = v }
          parser.on("--cold-start-ms MS", Integer, "metadata server silent for MS ms after start") { |v| options[:cold_start_ms] = v }
        end
      end

      # Runs the server in this process until TERM or INT; prints the URL on +out+ once listening.
      def serve(options, out: $stdout)
        server = Server.new(**options)
        %w[TERM INT].each { |signal| trap(signal) { server.shutdown } }
        out.puts "listening #{server.url}"
        out.flush
        server.start
      end
    end
  end
end
