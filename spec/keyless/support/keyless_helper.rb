# frozen_string_literal: true

require "json"
require "rbconfig"
require "timeout"

# Helpers for the keyless end-to-end specs. The gem keeps one access token
# per credential and process (keyed by the metadata host), and that token
# outlives EmulatorHelpers' reset!, so a spec that counts token fetches or
# needs the metadata server's very first answer uses an emulator of its own
# (a new port is a new credential identity) or a fresh child process.
module KeylessHelpers
  LIB = File.expand_path("../../../lib", __dir__)

  def monotonic
    Process.clock_gettime(Process::CLOCK_MONOTONIC)
  end

  # [block's value, seconds it took]
  def timed
    started = monotonic
    result = yield
    [result, monotonic - started]
  end

  # A separate emulator, stopped after the block.
  def with_own_emulator(**options)
    own = GitlabGcsSigner::Emulator::Process.start(**options)
    yield own
  ensure
    own&.stop
  end

  # A keyless signer pointed at +emu+ (never at 169.254.169.254).
  def signer_on(emu, **options)
    GitlabGcsSigner::Signer.new(metadata_host: emu.host, iam_endpoint: emu.url, **options)
  end

  # Runs +script+ in a fresh Ruby with the gem on the load path, killed after
  # +timeout+ seconds. Returns [Process::Status, stdout, stderr].
  def run_ruby(script, timeout: 60, env: {})
    out_r, out_w = IO.pipe
    err_r, err_w = IO.pipe
    pid = Process.spawn(env, RbConfig.ruby, "-w", "-I", LIB, "-e", script, out: out_w, err: err_w, in: File::NULL)
    [out_w, err_w].each(&:close)
    readers = [out_r, err_r].map { |io| Thread.new { io.read } }
    status = wait_or_kill(pid, timeout)
    [status, *readers.map(&:value)]
  ensure
    [out_r, err_r].each { |io| io&.close }
  end

  # Waits for +pid+ at most +timeout+ seconds; a child still running then is
  # killed and the spec fails (a hang is the bug being looked for).
  def wait_or_kill(pid, timeout)
    deadline = monotonic + timeout
    loop do
      _, status = Process.wait2(pid, Process::WNOHANG)
      return status if status

      if monotonic > deadline
        Process.kill("KILL", pid)
        Process.wait(pid)
        raise "child #{pid} still running after #{timeout} s: killed"
      end
      sleep 0.02
    end
  end

  # Emulator counters after the block minus before (the emulator is shared).
  def emulator_delta(emu, *names)
    before = emu.stats.values_at(*names)
    yield
    emu.stats.values_at(*names).zip(before).map { |after, was| after - was }
  end

  # Strings that look like an OAuth access token or a bearer header.
  SECRET_LOOKING = /ya29\.|bearer\s+\S{8,}/i.freeze
end

RSpec.configure do |config|
  config.include KeylessHelpers, :emulator
end
