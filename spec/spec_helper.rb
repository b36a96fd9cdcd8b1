# frozen_string_literal: true

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
# The emulator is test support (the gitlab-gcs-signer-testing gem), not in the runtime gem's lib/.
$LOAD_PATH.unshift File.expand_path("../testing/lib", __dir__)

# Our own code must be warning-free under `ruby -w`; third-party gems (fog,
# CarrierWave) are not ours to fix, so only warnings from lib/ and
# testing/lib/ are collected and fail the run.
module OwnWarnings
  LIBS = [File.expand_path("../lib", __dir__), File.expand_path("../testing/lib", __dir__)].freeze
  @seen = []
  class << self
    attr_reader :seen
  end

  def warn(message, *args, **kwargs)
    own = LIBS.any? { |lib| message.include?(lib) }
    OwnWarnings.seen << message if own
    super if own
  end
end
Warning.singleton_class.prepend(OwnWarnings)

require "gitlab_gcs_signer"
Dir[File.join(__dir__, "support", "**", "*.rb")].sort.each { |f| require f }

RSpec.configure do |config|
  config.expect_with(:rspec) { |c| c.syntax = :expect }
  config.disable_monkey_patching!
  config.order = :random
  config.example_status_persistence_file_path = ".rspec_status" unless ENV["CI"]

  config.after(:suite) do
    unless OwnWarnings.seen.empty?
      warn "Ruby warnings from lib/:\n#{OwnWarnings.seen.join}"
      exit 1
    end
  end
end

FIXTURES = File.expand_path("fixtures", __dir__)
CONFORMANCE_KEY = File.join(FIXTURES, "conformance", "test_service_account.not-a-test.json")
