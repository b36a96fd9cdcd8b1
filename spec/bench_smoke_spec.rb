# frozen_string_literal: true

require_relative "spec_helper"
require "open3"
require "rbconfig"

# Keeps bench/*.rb from rotting: each script runs in smoke mode (tiny sizes,
# a few seconds) and must exit 0; the trace must still report that the gem
# makes exactly as many signBlob calls as the lower bound. The figures
# themselves are not checked (performance claims come from full runs).
RSpec.describe "bench scripts (BENCH_SMOKE=1)" do
  def smoke(name)
    script = File.expand_path("../bench/#{name}.rb", __dir__)
    output, status = Open3.capture2e({ "BENCH_SMOKE" => "1" }, RbConfig.ruby, "-w", script)
    expect(status).to be_success, "bench/#{name}.rb failed:\n#{output}"
    expect(output).not_to match(/warning:/), "bench/#{name}.rb printed Ruby warnings:\n#{output}"
    output
  end

  it "trace.rb: the gem equals the lower bound for every setting" do
    output = smoke("trace")
    rows = output.lines.grep(/\A\s+ratio /)
    expect(rows.size).to be >= 2
    rows.each do |row|
      _label, gem, bound = row.match(/\A\s+(ratio .*? s\s*\*?)\s+([\d.]+)\s+([\d.]+)\s+gem==bound/).to_a.drop(1)
      expect(gem).not_to be_nil, "row without gem==bound: #{row}"
      expect(gem).to eq(bound)
    end
    expect(output).to include("gem == bound for every setting")
  end

  %w[hit_cost concurrency memory fork_stress outage].each do |name|
    it "#{name}.rb runs" do
      expect(smoke(name)).to match(/\d/)
    end
  end
end
