# frozen_string_literal: true

module GitlabGcsSigner
  module CLI
    # `gitlab-gcs-signer emulator`: the bundled loopback emulator, with the
    # same flags as exe/gitlab-gcs-emulator (one OptionParser for both).
    class Emulator < Command
      NAME = "emulator"

      def initialize(**)
        super
        require_relative "../emulator"
        @options = GitlabGcsSigner::Emulator::Options.defaults
      end

      def parser
        GitlabGcsSigner::Emulator::Options.parser(@options, program: "#{PROGRAM} #{NAME}")
      end

      def run(operands)
        no_operands!(operands)
        GitlabGcsSigner::Emulator::Options.serve(@options, out: out)
        EX_OK
      end
    end
  end
end
