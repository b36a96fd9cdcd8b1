# frozen_string_literal: true

require "fileutils"
require "open3"
require "rbconfig"
require "tmpdir"

# `gitlab-gcs-signer bench|emulator` live in the gitlab-gcs-signer-testing
# gem: the runtime gem's CLI finds them on the load path, and without that gem
# says where they are instead of failing with a LoadError.
RSpec.describe "gitlab-gcs-signer bench/emulator without the testing gem" do
  lib = File.expand_path("../../lib", __dir__)
  testing_lib = File.expand_path("../../testing/lib", __dir__)
  cli = 'require "gitlab_gcs_signer/cli"; exit GitlabGcsSigner::CLI.start(ARGV)'

  def run(*load_path, args, script)
    includes = load_path.flat_map { |dir| ["-I", dir] }
    Open3.capture3({ "RUBYOPT" => nil, "RUBYLIB" => nil }, RbConfig.ruby, "-w", *includes, "-e", script, "--", *args,
                   chdir: Dir.tmpdir)
  end

  %w[emulator bench].each do |name|
    it "#{name}: exit 1 and names the gem to install when only the runtime gem is there" do
      out, err, status = run(lib, [name, "--help"], cli)
      expect(status.exitstatus).to eq(1)
      expect(out).to eq("")
      expect(err).to eq("gitlab-gcs-signer #{name}: the #{name} command is in the gitlab-gcs-signer-testing gem, which is " \
                        "not installed (gem install gitlab-gcs-signer-testing, or run it from a source checkout)\n")
    end

    it "#{name}: runs with the testing gem's files on the load path" do
      out, err, status = run(lib, testing_lib, [name, "--help"], cli)
      expect(status.exitstatus).to eq(0), err
      expect(out).to start_with("Usage: gitlab-gcs-signer #{name} ")
    end
  end

  it "reports what the testing gem itself cannot load (not as a missing testing gem)" do
    broken = Dir.mktmpdir("testing-lib")
    FileUtils.mkdir_p(File.join(broken, "gitlab_gcs_signer", "cli"))
    File.write(File.join(broken, "gitlab_gcs_signer", "cli", "emulator.rb"), 'require "no_such_dependency_of_the_emulator"')
    _out, err, status = run(lib, broken, %w[emulator --help], cli)
    expect(status.exitstatus).to eq(1)
    expect(err).to include("cannot load such file -- no_such_dependency_of_the_emulator")
    expect(err).not_to include("is not installed")
  ensure
    FileUtils.rm_rf(broken)
  end

  it "lists the two commands as the testing gem's in the help" do
    out, = run(lib, ["--help"], cli)
    expect(out.lines.grep(/\A  (bench|emulator) /).map { |l| l.strip.end_with?("[testing gem]") }).to eq([true, true])
  end
end
