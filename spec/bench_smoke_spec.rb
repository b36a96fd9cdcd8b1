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
    # Ruby warnings from the repository's files (Debian's fog-google and its
    # dependencies warn under -w on their own; those are not ours to fix).
    root = File.expand_path("..", __dir__)
    ours = output.lines.grep(/warning:/).select { |line| line.start_with?(root) }
    expect(ours).to be_empty, "bench/#{name}.rb printed Ruby warnings:\n#{ours.join}"
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

  %w[hit_cost fog_path concurrency memory fork_stress outage].each do |name|
    it "#{name}.rb runs" do
      expect(smoke(name)).to match(/\d/)
    end
  end

  # script/setup installs valgrind on Debian 12; the sid root has none (its
  # platform runs the timed fog_path.rb above).
  it "fog_path_instructions.rb runs", if: system("valgrind --version", out: File::NULL, err: File::NULL) do
    expect(smoke("fog_path_instructions")).to match(%r{fog path / direct hit .* \d+\.\d+x})
  end
end
