# frozen_string_literal: true

require "rbconfig"

module GitlabGcsSigner
  module CLI
    # `gitlab-gcs-signer bench` (gitlab-gcs-signer-testing gem; the scripts
    # live in the source checkout's bench/, never packaged): runs each
    # bench/*.rb with this Ruby against one locally started emulator, one progress line per script, the
    # script's own figures in between. Scripts find the emulator through the
    # same variables the gem reads (GCE_METADATA_HOST, GCS_SIGNER_IAM_ENDPOINT)
    # plus GITLAB_GCS_EMULATOR_URL for its control API; the emulator is reset
    # between scripts.
    class Bench < Command
      NAME = "bench"
      # The repository root (testing/lib/gitlab_gcs_signer/cli/ is four levels down).
      ROOT = File.expand_path("../../../..", __dir__)

      def parser
        @options[:dir] = File.join(ROOT, "bench")
        new_parser("[options] [NAME...]", <<~TEXT).tap do |p|
          Runs the benchmark scripts (bench/*.rb, or only the NAMEs given, e.g. "cache_hits")
          against a bundled emulator on 127.0.0.1 and prints their figures.
        TEXT
          p.on("--dir DIR", "where the scripts are (default: the source checkout's bench/)") { |v| @options[:dir] = File.expand_path(v) }
          p.on("--list", "list the scripts and exit") { @options[:list] = true }
        end
      end

      def run(names)
        scripts = select(Dir[File.join(@options[:dir], "*.rb")].sort, names)
        if scripts.empty?
          out.puts "no benchmark scripts in #{@options[:dir]} yet (bench/*.rb)"
          return EX_OK
        end
        return list(scripts) if @options[:list]

        run_all(scripts)
      end

      private

      def select(scripts, names)
        return scripts if names.empty?

        wanted = names.map { |n| File.basename(n, ".rb") }
        unknown = wanted - scripts.map { |s| File.basename(s, ".rb") }
        raise UsageError, "no such benchmark: #{unknown.join(', ')} (see --list)" unless unknown.empty?

        scripts.select { |s| wanted.include?(File.basename(s, ".rb")) }
      end

      def list(scripts)
        scripts.each { |s| out.puts File.basename(s, ".rb") }
        EX_OK
      end

      def run_all(scripts)
        require_relative "../emulator"
        emulator = GitlabGcsSigner::Emulator::Process.start(err: File::NULL)
        out.puts "emulator: #{emulator.url} (pid #{emulator.pid})"
        failures = scripts.each_with_index.count do |script, i|
          emulator.reset!
          !run_one(script, i + 1, scripts.size, emulator)
        end
        out.puts(failures.zero? ? "#{scripts.size} benchmark(s) done." : "#{failures} of #{scripts.size} benchmark(s) failed.")
        failures.zero? ? EX_OK : EX_FAILURE
      ensure
        emulator&.stop
      end

      def run_one(script, number, total, emulator)
        name = File.basename(script, ".rb")
        out.puts "[#{number}/#{total}] #{name} ..."
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        env = { "GCE_METADATA_HOST" => emulator.host, "GCS_SIGNER_IAM_ENDPOINT" => emulator.url,
                "GITLAB_GCS_EMULATOR_URL" => emulator.url }
        pid = Process.spawn(env, RbConfig.ruby, "-I", File.join(ROOT, "lib"), "-I", File.join(ROOT, "testing", "lib"), script, chdir: ROOT, out: out_fd, err: err_fd)
        _, status = Process.wait2(pid)
        seconds = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
        out.puts format("[%d/%d] %s %s in %.1f s", number, total, name, status.success? ? "done" : "FAILED (#{status.exitstatus || status.termsig})", seconds)
        status.success?
      end

      # The script writes straight to our stdout/stderr (figures as they come).
      def out_fd
        out.respond_to?(:fileno) ? out : $stdout
      end

      def err_fd
        err.respond_to?(:fileno) ? err : $stderr
      end
    end
  end
end
