# frozen_string_literal: true

# Simulated time for specs and benchmarks: test support, never part of the
# gem's public API. A signer on a ManualClock reads it for its cache and its
# signing dates (token lifetimes always use real time).
module GitlabGcsSigner
  module Testing
    ManualClock = Native::Testing::ManualClock

    # GitlabGcsSigner::Signer.new(**options), on +clock+ when one is given.
    def self.signer(clock: nil, **options)
      return Signer.new(**options) if clock.nil?

      Signer.send(:on_clock, clock, **options)
    end
  end
end
