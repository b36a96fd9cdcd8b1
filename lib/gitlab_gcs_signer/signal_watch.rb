# frozen_string_literal: true

module GitlabGcsSigner
  # Keeps Ctrl-C and SIGTERM prompt while Ruby threads wait in the native
  # extension without the GVL (ext/gitlab_gcs_signer/src/nogvl.rs).
  #
  # Ruby (3.1) acts on a signal from a Ruby thread that runs or sleeps with a
  # timeout. When every thread waits in a native call, or sleeps for good (a
  # Puma worker's idle threads), it does so only once one of the waits ends:
  # Ruby's own helper covers a lone thread, not two. While any thread waits
  # in the gem this watcher sleeps in POLL steps, so Ctrl-C reaches the main
  # thread within milliseconds; it stops after LINGER idle seconds.
  # bench/interrupt.rb measures the latency.
  module SignalWatch
    POLL = 0.02
    LINGER = 1.0

    # Called by the extension, GVL held, when the first thread starts waiting:
    # the watcher thread, or nil when none can start (the VM is exiting).
    def self.start(id)
      Thread.new do
        Thread.current.name = "gcs-signer-signals"
        Thread.current.report_on_exception = false
        run(id)
      ensure
        Native.signal_watch_gone(id)
      end
    rescue ThreadError
      nil
    end

    def self.run(id)
      idle = 0.0
      loop do
        sleep POLL
        waiting = Native.signal_watch_waiting(id) or return
        if waiting.positive?
          idle = 0.0
        elsif (idle += POLL) >= LINGER && Native.signal_watch_retire(id)
          return
        end
      end
    end
    private_class_method :run
  end
end
