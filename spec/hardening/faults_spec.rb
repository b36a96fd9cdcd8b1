# frozen_string_literal: true

require "json"
require "open3"
require "rbconfig"

# The fault matrix (bench/faults.rb), run in its own process with its own
# emulator: every row forks a fresh "worker" with no token, injects one
# metadata-server or signBlob fault, and records what the caller got, how
# long it took against the signer's deadline, and whether the same signer
# recovered once the fault cleared. The matrix is printed for the README.
RSpec.describe "faults: metadata server and IAM signBlob failures" do
  rows = begin
    require_relative "../../bench/faults"
    GitlabGcsSigner::Bench::Faults::ROWS.map { |r| "#{r.service}: #{r.fault}" }
  end

  before(:all) do
    script = File.expand_path("../../bench/faults.rb", __dir__)
    out, status = Open3.capture2e(RbConfig.ruby, "-w", script, "--json")
    json = out.lines.reverse.find { |l| l.start_with?("[") } or raise "no JSON from bench/faults.rb:\n#{out}"
    @rows = JSON.parse(json).to_h { |r| ["#{r['service']}: #{r['fault']}", r] }
    @output = out.lines.reject { |l| l.start_with?("[") }.join
    @status = status
    puts "\n#{@output}"
  end

  it "runs warning-free" do
    expect(@output).not_to match(/warning:/)
  end

  rows.each do |name|
    it name do
      row = @rows.fetch(name)
      expect(row["error"]).to be_nil
      expect(row["expected_outcomes"]).to include(row["observed"])
      expect(row["within_deadline"]).to be(true), "#{row['elapsed_s']} s against a #{row['deadline_s']} s deadline"
      expect(row["recovered"]).to be(true), "the same signer did not sign again after the fault cleared"
      expect(row["pass"]).to be(true), row.inspect
    end
  end

  it "never lets more signBlob calls run than the in-flight bound" do
    @rows.each_value do |row|
      next unless row["fault"].include?("in-flight bound 8")

      expect(row["emulator_max_in_flight"]).to be_between(1, 8)
    end
  end
end
