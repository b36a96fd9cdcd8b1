# frozen_string_literal: true

# Waiting for a condition instead of sleeping a guessed time: a spec that
# needs background work to have reached a point (a request on the wire, a
# thread waiting in the gem) polls for it with a generous deadline, so a
# slow or loaded machine only makes it wait longer, never fail.
module Waiting
  # Returns once the block is truthy (its value); raises after +timeout+
  # seconds, naming +what+ was waited for.
  def wait_until(what, timeout: 10, every: 0.01)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      value = yield
      return value if value
      raise "still waiting after #{timeout} s for #{what}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep every
    end
  end
end

RSpec.configure do |config|
  config.include Waiting
end
