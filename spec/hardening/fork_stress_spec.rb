# frozen_string_literal: true

require_relative "../spec_helper"
require_relative "../../bench/fork_stress"

# Issue 15 S1, bounded for CI: a parent whose 8 threads sign without pause
# (hits and misses) forks 50 times per signer kind; each child must sign
# every hot URL (cache hits) and a miss. A child still running after 5 s is
# hung: ForkStress kills it (SIGKILL) and reports it here. Children slower
# than 2 s are printed, not failed: on a shared CI machine the parent's 8
# signing threads can starve a child of CPU without it waiting on anything.
# `ruby bench/fork_stress.rb` is the full 400-fork run (README, Reliability).
RSpec.describe "fork stress (bounded)", :emulator do
  let(:forks) { 50 }

  def expect_clean(result)
    expect(result.forks).to eq(forks)
    expect(result.hangs).to eq(0), "hung children:\n#{result.messages.join("\n")}"
    expect(result.errors).to eq(0), "failed children:\n#{result.messages.join("\n")}"
    warn "#{result.mode}: #{result.slow} of #{forks} children took over 2 s" if result.slow.positive?
  end

  it "a key-file signer: no child hangs or fails" do
    expect_clean(ForkStress.run(key_signer(cache: ForkStress::CACHE), mode: "keyed", forks: forks))
  end

  it "a keyless signer: no child hangs or fails" do
    signer = keyless_signer(cache: ForkStress::CACHE, max_sign_blob_per_minute: 1_000_000)
    expect_clean(ForkStress.run(signer, mode: "keyless", forks: forks))
  end
end
