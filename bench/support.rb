# frozen_string_literal: true

# Shared by the bench/*.rb scripts: loads the gem from lib/ (run `rake compile`
# first), starts the bundled emulator on 127.0.0.1 when a script needs
# signBlob, and prints figures. Nothing here talks to anything but loopback.
#
# BENCH_SMOKE=1 shrinks every script to a few seconds (spec/bench_smoke_spec.rb
# runs them so in CI to keep them working); the figures are then meaningless.

$LOAD_PATH.unshift File.expand_path("../lib", __dir__)
$LOAD_PATH.unshift File.expand_path("../testing/lib", __dir__) # the emulator (test support)
require "gitlab_gcs_signer"
require "gitlab_gcs_signer/emulator"

module Bench
  ROOT = File.expand_path("..", __dir__)
  KEY_FILE = File.join(ROOT, "spec/fixtures/conformance/test_service_account.not-a-test.json")
  SMOKE = ENV["BENCH_SMOKE"] == "1"

  module_function

  # The full-size figure, or the smoke-mode one.
  def size(full, smoke)
    SMOKE ? smoke : full
  end

  # One emulator per script run (stopped at exit by Emulator::Process).
  def emulator
    @emulator ||= GitlabGcsSigner::Emulator::Process.start
  end

  # A signer as on GKE Workload Identity, pointed at the emulator.
  def keyless_signer(**options)
    GitlabGcsSigner::Signer.new(metadata_host: emulator.host, iam_endpoint: emulator.url, **options)
  end

  # A signer with the emulator's own key: signs locally, no network.
  def key_signer(**options)
    GitlabGcsSigner::Signer.new(credentials: KEY_FILE, **options)
  end

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  def monotonic_ns
    Process.clock_gettime(Process::CLOCK_MONOTONIC, :nanosecond)
  end

  # Nanoseconds per call of the block, one sample per call.
  def samples_ns(count)
    Array.new(count) do
      t = monotonic_ns
      yield
      monotonic_ns - t
    end.sort
  end

  def percentile(sorted, pct)
    sorted[[((pct / 100.0) * sorted.size).ceil - 1, 0].max]
  end

  # Resident set size of this process in KiB (Linux).
  def rss_kib
    File.read("/proc/self/status")[/^VmRSS:\s+(\d+) kB/, 1].to_i
  end

  def title(text)
    puts
    puts text
    puts "-" * text.size
  end

  def row(label, value)
    puts format("  %-46s %s", label, value)
  end

  def micros(ns)
    format("%.2f us", ns / 1000.0)
  end
end

# Figures appear as they are measured, also when the output is piped.
$stdout.sync = true
puts "bench smoke mode (BENCH_SMOKE=1): tiny sizes, figures not meaningful" if Bench::SMOKE
