# frozen_string_literal: true

require "optparse"
require_relative "version"

module GitlabGcsSigner
  # `gitlab-gcs-signer COMMAND [options]` (exe/gitlab-gcs-signer). One class
  # per command under cli/; each has #parser (its OptionParser) and #run.
  #
  # Exit codes follow sysexits(3): 0 success, 1 a check or the signing
  # failed, 64 (EX_USAGE) a bad command line.
  module CLI
    EX_OK = 0
    EX_FAILURE = 1
    EX_USAGE = 64
    PROGRAM = "gitlab-gcs-signer"

    # A bad command line: the message goes to stderr with a hint, exit 64.
    class UsageError < StandardError; end

    # A command whose gem is not installed: the message goes to stderr, exit 1.
    class Unavailable < StandardError; end

    COMMANDS = {
      "doctor" => ["cli/doctor", :Doctor, "check this pod's keyless signing setup; a fix for each failure"],
      "sign" => ["cli/sign", :Sign, "print a signed URL for gs://BUCKET/OBJECT"],
      "bench" => ["cli/bench", :Bench, "run the benchmarks (bench/*.rb) against a local emulator [testing gem]"],
      "emulator" => ["cli/emulator", :Emulator, "run the loopback emulator (as gitlab-gcs-emulator) [testing gem]"]
    }.freeze

    # Commands that live in the gitlab-gcs-signer-testing gem (with the
    # emulator), not in this runtime gem; found on the load path.
    TESTING_GEM = "gitlab-gcs-signer-testing"
    TESTING_COMMANDS = %w[bench emulator].freeze

    # Base class of the commands: option parsing, --help, usage errors.
    class Command
      attr_reader :out, :err, :env

      def initialize(out:, err:, env:)
        @out = out
        @err = err
        @env = env
        @options = {}
      end

      def name
        self.class::NAME
      end

      # Parses +argv+ (options may follow operands) and runs the command.
      def call(argv)
        parser = self.parser
        parser.on_tail("-h", "--help", "show this help") do
          out.puts parser.help
          return EX_OK
        end
        parser.on_tail("--version", "print the version") do
          out.puts "#{PROGRAM} #{VERSION}"
          return EX_OK
        end
        operands = parser.parse(argv)
        run(operands)
      rescue OptionParser::ParseError => e
        raise UsageError, e.message
      end

      private

      def new_parser(banner, summary)
        OptionParser.new do |parser|
          parser.program_name = "#{PROGRAM} #{name}"
          parser.banner = "Usage: #{PROGRAM} #{name} #{banner}"
          parser.separator ""
          summary.each_line { |line| parser.separator(line.chomp) }
          parser.separator ""
          parser.separator "Options:"
        end
      end

      def no_operands!(operands)
        raise UsageError, "unexpected argument: #{operands.first}" unless operands.empty?
      end
    end

    module_function

    # Runs a command line; returns the exit status.
    def start(argv, out: $stdout, err: $stderr, env: ENV)
      argv = argv.dup
      first = argv.first
      case first
      when nil then usage_error(err, "no command given")
      when "-h", "--help", "help"
        return help_for(argv[1], out, err) if first == "help" && argv[1]

        out.puts usage
        EX_OK
      when "-v", "--version"
        out.puts "#{PROGRAM} #{VERSION}"
        EX_OK
      when /\A-/ then usage_error(err, "invalid option: #{first}")
      else run_command(argv, out, err, env)
      end
    end

    def run_command(argv, out, err, env)
      name = argv.shift
      command = command(name, out, err, env)
      return usage_error(err, "unknown command '#{name}'") unless command

      command.call(argv)
    rescue UsageError => e
      usage_error(err, e.message, name)
    rescue Unavailable => e
      err.puts "#{PROGRAM} #{name}: #{e.message}"
      EX_FAILURE
    end

    def help_for(name, out, err)
      run_command([name, "--help"], out, err, ENV)
    end

    def command(name, out, err, env)
      path, const, = COMMANDS[name]
      return nil unless path

      if TESTING_COMMANDS.include?(name)
        feature = "gitlab_gcs_signer/#{path}"
        begin
          require feature
        rescue LoadError => e
          raise unless e.path == feature # the gem is there, something it needs is not: say that

          raise Unavailable, "the #{name} command is in the #{TESTING_GEM} gem, which is not installed " \
                             "(gem install #{TESTING_GEM}, or run it from a source checkout)"
        end
      else
        require_relative path
      end
      CLI.const_get(const).new(out: out, err: err, env: env)
    end

    def usage
      width = COMMANDS.keys.map(&:size).max
      <<~USAGE
        Usage: #{PROGRAM} COMMAND [options]

        Signed Google Cloud Storage URLs without a key (GKE Workload Identity, IAM signBlob).

        Commands:
        #{COMMANDS.map { |name, (_, _, text)| "  #{name.ljust(width)}  #{text}" }.join("\n")}

        Options:
          -h, --help     show this help
          -v, --version  print the version

        Run '#{PROGRAM} COMMAND --help' for a command's options.
      USAGE
    end

    def usage_error(err, message, command = nil)
      program = [PROGRAM, command].compact.join(" ")
      err.puts "#{program}: #{message}"
      err.puts "Run '#{program} --help' for usage."
      EX_USAGE
    end
  end
end
