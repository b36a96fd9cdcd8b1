# frozen_string_literal: true

# Fork stress: a parent whose 8 threads sign without pause (cache hits and
# misses) forks again and again, as Puma and Sidekiq fork from a busy booted
# parent; each child must sign a cache hit and a miss within 2 s. A child
# still running after 5 s is hung: it is killed (SIGKILL) and counted.
#
#   ruby bench/fork_stress.rb [--forks 400] [--mode keyed|keyless|both]
#
# Prints, per signer kind: forks, hangs, errors (a child that raised or
# reported nothing), children slower than 2 s, and the slowest child. It
# exits 1 on any hang or error. A slow child finished, so it is no hang: on
# a loaded machine the parent's 8 signing threads can starve it of CPU.
# The README's reliability section quotes this script's full run;
# spec/hardening/fork_stress_spec.rb runs a bounded form (100 forks) in CI
# through the same ForkStress class.

require_relative "support"
require "json"

module ForkStress
  THREADS = 8
  HOT = 16
  MISSES_PER_HIT = 4
  # Small enough that the parent's misses evict all the time.
  CACHE = { max_entries: 1000 }.freeze
  CHILD_BUDGET = 2.0 # seconds for the child's hit and miss
  WATCHDOG = 5.0 # seconds before a child counts as hung and is killed

  Result = Struct.new(:mode, :forks, :hangs, :errors, :slow, :slowest, :messages, keyword_init: true)

  module_function

  def request(object)
    { bucket: "stress", object: object, expires_in: 600 }
  end

  # Runs +forks+ forks of a parent signing with +signer+ on THREADS threads.
  def run(signer, mode:, forks:)
    HOT.times { |i| signer.signed_url(**request("hot-#{i}")) }
    stop = false
    workers = Array.new(THREADS) do |t|
      Thread.new do
        n = 0
        until stop
          n += 1
          begin
            signer.signed_url(**request("hot-#{n % HOT}"))
            # Misses: a new object name every time; with the small cache
            # below each one also evicts, so the cache's locks are busy.
            MISSES_PER_HIT.times { |m| signer.signed_url(**request("parent-#{t}-#{n}-#{m}")) }
          rescue GitlabGcsSigner::Error
            # The parent's own failures are not what is measured here.
          end
        end
      end
    end
    sleep 0.05
    result = Result.new(mode: mode, forks: 0, hangs: 0, errors: 0, slow: 0, slowest: 0.0, messages: [])
    forks.times { |i| one_fork(signer, i, result) }
    result
  ensure
    stop = true
    workers&.each(&:join)
  end

  def one_fork(signer, index, result)
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      report = begin
        # Every hot URL (cache hits, in every shard of the cache), then a miss.
        HOT.times { |i| signer.signed_url(**request("hot-#{i}")) }
        signer.signed_url(**request("child-#{Process.pid}-#{index}"))
        { "seconds" => Process.clock_gettime(Process::CLOCK_MONOTONIC) - started }
      rescue Exception => e # rubocop:disable Lint/RescueException -- report anything to the parent
        { "error" => "#{e.class}: #{e.message}"[0, 300] }
      end
      writer.write(JSON.generate(report))
      writer.close
      exit!(0)
    end
    writer.close
    result.forks += 1
    status = wait_or_kill(pid)
    if status.nil?
      result.hangs += 1
      result.messages << "fork #{index}: child #{pid} hung (killed after #{WATCHDOG} s)"
      return
    end
    report = JSON.parse(reader.read.then { |s| s.empty? ? "{}" : s })
    seconds = report["seconds"]
    result.slowest = [result.slowest, seconds].max if seconds
    error = report["error"] || ("no report (#{status.inspect})" unless seconds)
    if error
      result.errors += 1
      result.messages << "fork #{index}: #{error}"
    elsif seconds > CHILD_BUDGET
      result.slow += 1
      result.messages << format("fork %d: took %.2f s (budget %.1f s)", index, seconds, CHILD_BUDGET)
    end
  ensure
    reader&.close
  end

  # The child's status, or nil when it was still running after WATCHDOG
  # seconds and had to be killed.
  def wait_or_kill(pid)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + WATCHDOG
    loop do
      _, status = Process.wait2(pid, Process::WNOHANG)
      return status if status
      break if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep 0.002
    end
    Process.kill(:KILL, pid)
    Process.wait(pid)
    nil
  end
end

if $PROGRAM_NAME == __FILE__
  forks = Bench.size(400, 10)
  modes = %w[keyed keyless]
  args = ARGV.dup
  while (arg = args.shift)
    case arg
    when "--forks" then forks = Integer(args.shift)
    when "--mode"
      mode = args.shift
      modes = [mode] unless mode == "both"
    else abort "usage: #{$PROGRAM_NAME} [--forks N] [--mode keyed|keyless|both]"
    end
  end
  Bench.title("Fork stress: #{forks} forks per signer while #{ForkStress::THREADS} threads sign (hits and misses)")
  results = modes.map do |mode|
    signer = if mode == "keyed"
               Bench.key_signer(cache: ForkStress::CACHE)
             else
               # The client-side quota guard would slow the parent's misses;
               # it is not what is measured here.
               Bench.keyless_signer(cache: ForkStress::CACHE, max_sign_blob_per_minute: 1_000_000)
             end
    ForkStress.run(signer, mode: mode, forks: forks)
  end
  results.each do |r|
    Bench.row("#{r.mode}: forks / hangs / errors / over 2 s",
              format("%d / %d / %d / %d (slowest child %.3f s)", r.forks, r.hangs, r.errors, r.slow, r.slowest))
    r.messages.first(5).each { |m| puts "      #{m}" }
  end
  exit(results.all? { |r| r.hangs.zero? && r.errors.zero? } ? 0 : 1)
end
