# frozen_string_literal: true

require "open3"
require "rbconfig"
require "rubygems/package"
require "tmpdir"

# rakelib/native.rake's packing step (NativeGem.package), without a build:
# stand-in .so files under WORK/PLATFORM/MINOR/ become a platform gem with
# one extension per Ruby minor, no Rust sources and no extconf.rb, and a
# required_ruby_version that spans the minors; a gap between minors is refused.
RSpec.describe "rake native:pack (NativeGem.package)" do
  let(:root) { File.expand_path("../..", __dir__) }

  around do |example|
    Dir.mktmpdir("native") do |dir|
      @dir = dir
      example.run
    end
  end

  # Packs stand-in extensions for +minors+ in a fresh Ruby; returns [gem path or nil, output].
  def pack(minors, env: {})
    minors.each do |minor|
      FileUtils.mkdir_p(File.join(@dir, "work", "x86_64-linux", minor))
      File.write(File.join(@dir, "work", "x86_64-linux", minor, "gitlab_gcs_signer.so"), "stand-in for #{minor}")
    end
    script = 'require "rake"; load ARGV[0]; ' \
             'print NativeGem.package("x86_64-linux", work: ARGV[1], pkg: ARGV[2])'
    out, err, status = Open3.capture3({ "NATIVE_ALLOW_GAPS" => nil }.merge(env), RbConfig.ruby, "-e", script,
                                      File.join(root, "rakelib", "native.rake"), File.join(@dir, "work"),
                                      File.join(@dir, "pkg"), chdir: root)
    [status.success? ? out.lines.last : nil, out + err]
  end

  it "packs one extension per minor, no Rust sources, for the Rubies it has" do
    gem, output = pack(%w[3.1 3.2 3.3])
    expect(gem).to eq(File.join(@dir, "pkg", "gitlab-gcs-signer-#{GitlabGcsSigner::VERSION}-x86_64-linux.gem")), output
    spec = Gem::Package.new(gem).spec
    expect(spec.platform.to_s).to eq("x86_64-linux")
    expect(spec.extensions).to eq([])
    expect(spec.required_ruby_version.to_s).to eq(">= 3.1, < 3.4.dev")
    expect(spec.files.grep(/\.so\z/)).to eq(%w[3.1 3.2 3.3].map { |m| "lib/gitlab_gcs_signer/#{m}/gitlab_gcs_signer.so" })
    expect(spec.files.grep(%r{\A(src|ext|spec|bench|testing)/|\ACargo\.})).to eq([])
    source = Gem::Specification.load(File.join(root, "gitlab-gcs-signer.gemspec"))
    expect(spec.files - spec.files.grep(/\.so\z/)).to eq(source.files.reject { |f| f.start_with?("src/", "ext/", "Cargo.") })
    expect(spec.executables).to eq(["gitlab-gcs-signer"])
  end

  it "refuses a gap between minors (it would install on the missing Ruby and not load)" do
    gem, output = pack(%w[3.1 3.3])
    expect(gem).to be_nil
    expect(output).to include("Ruby minors 3.1, 3.3 have a gap", "NATIVE_ALLOW_GAPS=1")
  end

  it "packs one with a gap for a test build when asked, and says so" do
    gem, output = pack(%w[3.1 3.3], env: { "NATIVE_ALLOW_GAPS" => "1" })
    expect(gem).not_to be_nil
    expect(output).to include("WARNING: Ruby minors 3.1, 3.3 have a gap")
    expect(Gem::Package.new(gem).spec.required_ruby_version.to_s).to eq(">= 3.1, < 3.4.dev")
  end

  it "spans a single minor" do
    gem, output = pack(%w[3.3])
    expect(gem).not_to be_nil, output
    expect(Gem::Package.new(gem).spec.required_ruby_version.to_s).to eq(">= 3.3, < 3.4.dev")
  end
end
