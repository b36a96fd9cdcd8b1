# frozen_string_literal: true

require "fileutils"
require "open3"
require "rbconfig"
require "tmpdir"

# lib/gitlab_gcs_signer/extension.rb: a platform gem's prebuilt extension for
# this Ruby's minor version first, then `rake compile`'s, then the one a
# source install compiled; a prebuilt file that fails to load is reported,
# never hidden by a fallback. Each case is a copy of lib/ in a temporary
# directory (the extension this Ruby loaded placed as the case needs) loaded
# by a fresh Ruby.
RSpec.describe GitlabGcsSigner::Extension do
  lib = File.expand_path("../../lib", __dir__)
  so_name = "gitlab_gcs_signer.#{RbConfig::CONFIG['DLEXT']}"
  # The build this Ruby loaded (rake compile's; on sid, script/suite's under RUBYLIB).
  compiled = $LOADED_FEATURES.grep(/gitlab_gcs_signer\.#{RbConfig::CONFIG['DLEXT']}\z/).first
  minor = RUBY_VERSION[/\A\d+\.\d+/]

  around do |example|
    Dir.mktmpdir("loader") do |dir|
      @lib = File.join(dir, "lib")
      Dir.glob("**/*.rb", base: lib).each do |file|
        FileUtils.mkdir_p(File.join(@lib, File.dirname(file)))
        FileUtils.cp(File.join(lib, file), File.join(@lib, file))
      end
      example.run
    end
  end

  def place(dir)
    FileUtils.mkdir_p(File.join(@lib, "gitlab_gcs_signer", dir))
    File.join(@lib, "gitlab_gcs_signer", dir)
  end

  # Loads the copy in a fresh Ruby; returns [loaded extension path or nil, stderr, success].
  def load_copy(rubylib: nil)
    script = 'require "gitlab_gcs_signer"; print $LOADED_FEATURES.grep(/gitlab_gcs_signer\.so\z/).first'
    out, err, status = Open3.capture3({ "RUBYOPT" => nil, "RUBYLIB" => rubylib }, RbConfig.ruby, "-I", @lib, "-e", script,
                                      chdir: Dir.tmpdir)
    [out.empty? ? nil : out, err, status.success?]
  end

  it "picks the platform gem's extension for this Ruby's minor version" do
    FileUtils.cp(compiled, place(minor))
    FileUtils.cp(compiled, place("9.9"))
    loaded, err, ok = load_copy
    expect(ok).to be(true), err
    expect(loaded).to eq(File.join(@lib, "gitlab_gcs_signer", minor, so_name))
  end

  it "prefers it to a `rake compile` build next to it" do
    FileUtils.cp(compiled, place(minor))
    FileUtils.cp(compiled, place("."))
    expect(load_copy.first).to eq(File.join(@lib, "gitlab_gcs_signer", minor, so_name))
  end

  it "finds one for this minor version in another load path directory first (a build installed under RUBYLIB)" do
    other = File.join(File.dirname(@lib), "other")
    FileUtils.mkdir_p(File.join(other, "gitlab_gcs_signer", minor))
    FileUtils.cp(compiled, File.join(other, "gitlab_gcs_signer", minor))
    FileUtils.cp(compiled, place("."))
    expect(load_copy(rubylib: other).first).to eq(File.join(other, "gitlab_gcs_signer", minor, so_name))
  end

  it "falls back to the compiled extension of a source checkout or install" do
    FileUtils.cp(compiled, place("."))
    expect(load_copy.first).to eq(File.join(@lib, "gitlab_gcs_signer", so_name))
  end

  it "names the Rubies a platform gem was built for when this one is missing" do
    FileUtils.cp(compiled, place("9.8"))
    FileUtils.cp(compiled, place("9.9"))
    loaded, err, ok = load_copy
    expect([loaded, ok]).to eq([nil, false])
    expect(err).to include("prebuilt extensions for Ruby 9.8, 9.9, not #{minor}",
                           "gem install gitlab-gcs-signer --platform ruby")
  end

  it "reports a prebuilt extension that does not load instead of falling back" do
    File.write(File.join(place(minor), so_name), "not an ELF file")
    FileUtils.cp(compiled, place("."))
    loaded, err, ok = load_copy
    expect([loaded, ok]).to eq([nil, false])
    expect(err).to include(File.join(@lib, "gitlab_gcs_signer", minor, so_name))
    expect(err).not_to include("--platform ruby")
  end

  it "says how to build it when there is none" do
    loaded, err, ok = load_copy
    expect([loaded, ok]).to eq([nil, false])
    expect(err).to include("the native extension is not built", "rake compile")
  end
end
