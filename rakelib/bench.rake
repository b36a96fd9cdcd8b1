# frozen_string_literal: true

require "rbconfig"

BENCH_SCRIPTS = %w[trace hit_cost fog_path fog_path_instructions concurrency memory outage].freeze

desc "Run the main benchmarks in bench/ (needs `rake compile`; several minutes, see each script's header). " \
     "BENCH_SMOKE=1 for a quick run that only checks the scripts work"
task :bench do
  BENCH_SCRIPTS.each do |name|
    sh RbConfig.ruby, "-w", File.join(__dir__, "..", "bench", "#{name}.rb")
  end
end

namespace :bench do
  BENCH_SCRIPTS.each do |name|
    desc "Run bench/#{name}.rb"
    task name do
      sh RbConfig.ruby, "-w", File.join(__dir__, "..", "bench", "#{name}.rb")
    end
  end
end
