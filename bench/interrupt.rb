#!/usr/bin/env ruby
# frozen_string_literal: true

# How long Ctrl-C (SIGINT), SIGTERM and Thread#raise take to reach a main
# thread that waits in a slow signBlob call, with 1, 2 and 4 threads waiting
# in the gem, and 1 waiting next to an idle Ruby thread (a Puma worker's
# other threads). Loopback only: IAM is the bundled emulator, answering
# after 15 s.
#
#   ruby bench/interrupt.rb           # the table (median / max of TRIALS runs)
#   ruby bench/interrupt.rb --json    # also one JSON line (spec/hardening/interrupt_spec.rb)
#   ruby bench/interrupt.rb --no-baseline
#
# Each run is a process forked from this one (which never signs into IAM's
# slow answer): it starts the other waiting threads, tells the parent it is
# ready, and its main thread signs. The parent waits until the emulator has
# every one of the child's signBlob calls (so the main thread is inside its
# call, whatever the machine's load), notes CLOCK_MONOTONIC (shared by the
# processes of one machine), sends the signal (or tells the child's raising
# thread to go), and the child reports when the exception arrived. The
# baseline rows run the same with the signal watcher
# (lib/gitlab_gcs_signer/signal_watch.rb) switched off in the child, as the
# gem was before it: the signal then waits for the calls' deadline
# (timeout: DEADLINE).

require_relative "support"
require "json"

module Bench
  # One interrupt-latency scenario.
  class Interrupt
    DEADLINE = 4.0
    TRIALS = Bench.size(10, 1)
    CASES = [
      # [label, how, threads in the gem, idle Ruby threads]
      ["SIGINT, 1 thread in the gem", "INT", 1, 0],
      ["SIGINT, 1 in the gem + 1 idle Ruby thread", "INT", 1, 1],
      ["SIGINT, 2 threads in the gem", "INT", 2, 0],
      ["SIGINT, 4 threads in the gem", "INT", 4, 0],
      ["SIGTERM, 2 threads in the gem", "TERM", 2, 0],
      ["Thread#raise, 2 threads in the gem", "raise", 2, 0]
    ].freeze
    BASELINE = [
      ["SIGINT, 2 threads in the gem", "INT", 2, 0],
      ["SIGINT, 1 in the gem + 1 idle Ruby thread", "INT", 1, 1]
    ].freeze

    def initialize
      # Quiet: the children exit without closing their connections, which
      # WEBrick logs as resets.
      @emulator = GitlabGcsSigner::Emulator::Process.start(err: File::NULL)
      @signer = GitlabGcsSigner::Signer.new(metadata_host: @emulator.host, iam_endpoint: @emulator.url,
                                            timeout: DEADLINE)
      @signer.email # token and email in hand: the runs wait in signBlob only
      @emulator.configure("iam" => { "latency_ms" => 15_000 })
      @object = 0
    end

    def run(json: false, baseline: true)
      rows = CASES.map { |c| measure(*c, watcher: true) }
      rows += BASELINE.map { |c| measure(*c, watcher: false, trials: 1) } if baseline
      Bench.title("Interrupt latency: signal sent -> exception raised in the waiting main thread")
      rows.each do |r|
        puts format("  %-58s median %8.1f ms   max %8.1f ms", "#{r[:label]}#{r[:watcher] ? '' : ' (baseline)'}",
                    r[:median_ms], r[:max_ms])
      end
      puts JSON.generate(rows) if json
      rows
    end

    private

    def measure(label, how, in_gem, idle, watcher:, trials: TRIALS)
      samples = Array.new(trials) { trial(how, in_gem, idle, watcher) }.sort
      { label: label, how: how, threads_in_gem: in_gem, idle_threads: idle, watcher: watcher,
        median_ms: samples[samples.size / 2] * 1000, max_ms: samples.max * 1000, trials: trials }
    end

    # Seconds from the signal to the exception in the child's main thread.
    def trial(how, in_gem, idle, watcher)
      base = (@object += 10)
      ready_r, ready_w = IO.pipe
      done_r, done_w = IO.pipe
      go_r, go_w = IO.pipe
      calls = sign_blob_calls
      pid = fork do
        ready_r.close
        done_r.close
        go_w.close
        child(how, in_gem, idle, watcher, base, ready_w, done_w, go_r)
      end
      [ready_w, done_w, go_r].each(&:close)
      raise "child did not get ready" unless ready_r.wait_readable(10) && ready_r.gets

      until_on_the_wire(calls + in_gem) # the main thread is inside its call
      sent = Bench.monotonic
      if how == "raise"
        go_w.puts("go")
        go_w.flush
      else
        Process.kill(how, pid)
      end
      note = done_r.wait_readable(DEADLINE + 10) && done_r.gets
      Process.kill("KILL", pid) unless note
      Process.wait(pid)
      raise "no answer from the child (#{how}, #{in_gem} threads)" unless note

      caught, raised_at = note.split.map(&:to_f)
      raise "the call ended without the interrupt (#{how}, #{in_gem} threads)" if caught.negative?

      caught - (how == "raise" ? raised_at : sent)
    ensure
      [ready_r, done_r, go_w].each { |io| io&.close unless io&.closed? }
    end

    def sign_blob_calls
      @emulator.client.stats["sign_blob_calls"]
    end

    # Waits until the emulator has received +count+ signBlob calls in all.
    def until_on_the_wire(count)
      deadline = Bench.monotonic + 10
      sleep 0.005 until sign_blob_calls >= count || Bench.monotonic > deadline
      raise "the child's #{count} signBlob calls did not reach the emulator within 10 s" if sign_blob_calls < count
    end

    def child(how, in_gem, idle, watcher, base, ready, done, go)
      unless watcher
        watch = GitlabGcsSigner::SignalWatch.singleton_class
        watch.send(:remove_method, :start)
        watch.define_method(:start) { |_id| nil }
      end
      sign = ->(n) { @signer.signed_url(bucket: "b", object: "interrupt/#{base + n}", expires_in: 600) }
      idle.times { Thread.new { sleep } }
      (in_gem - 1).times { |n| Thread.new { sign.call(n + 1) rescue nil } } # rubocop:disable Style/RescueModifier
      sleep 0.2 # the other threads settle (idle ones asleep) as in a running worker
      main = Thread.current
      raised_at = nil
      if how == "raise"
        Thread.new do
          go.gets # the parent saw the main thread's call at the emulator
          raised_at = Bench.monotonic
          main.raise(::Interrupt)
        end
      end
      ready.puts("ready")
      ready.flush
      begin
        sign.call(0)
        caught = -1.0
      rescue ::Interrupt, SignalException
        caught = Bench.monotonic
      end
      done.puts("#{caught} #{raised_at || 0}")
      done.flush
      exit!(0)
    end
  end
end

Bench::Interrupt.new.run(json: ARGV.include?("--json"), baseline: !ARGV.include?("--no-baseline")) if $PROGRAM_NAME == __FILE__
