# frozen_string_literal: true

require "open3"
require "rbconfig"
require "rubygems/package"
require "tmpdir"

# The two gems the repository builds (issue 14): the runtime gem holds what a
# GitLab pod runs, never the test key, the emulator or the benchmarks; the
# testing gem holds the emulator, its key and the bench/emulator commands, and
# runs on its own with its declared dependencies.
RSpec.describe "the gems built from this repository" do
  root = File.expand_path("../..", __dir__)

  before(:all) do
    @dir = Dir.mktmpdir("gems")
    @gems = %w[gitlab-gcs-signer gitlab-gcs-signer-testing].to_h do |name|
      out, status = Open3.capture2e("gem", "build", "#{name}.gemspec", "-o", File.join(@dir, "#{name}.gem"), chdir: root)
      raise "gem build #{name} failed:\n#{out}" unless status.success?

      [name, Gem::Package.new(File.join(@dir, "#{name}.gem"))]
    end
  end

  after(:all) { FileUtils.rm_rf(@dir) if @dir }

  # Every file's name and content, as packed in the .gem.
  def packed(name)
    entries = {}
    @gems.fetch(name).contents # raises on a corrupt package
    File.open(File.join(@dir, "#{name}.gem"), "rb") do |io|
      Gem::Package::TarReader.new(io).each do |entry|
        next unless entry.full_name == "data.tar.gz"

        Zlib::GzipReader.wrap(entry) do |gz|
          Gem::Package::TarReader.new(gz).each { |file| entries[file.full_name] = file.read.to_s if file.file? }
        end
      end
    end
    entries
  end

  it "has one version: the gems' (lib/gitlab_gcs_signer/version.rb) is the Cargo workspace's" do
    cargo = File.read(File.join(root, "Cargo.toml"))[/^\[workspace\.package\]\n(?:.*\n)*?version = "([^"]+)"/, 1]
    expect(cargo).to eq(GitlabGcsSigner::VERSION)
    expect(@gems.values.map { |gem| gem.spec.version.to_s }).to eq([GitlabGcsSigner::VERSION] * 2)
    expect(File.read(File.join(root, "CHANGELOG.md"))).to match(/^## #{Regexp.escape(GitlabGcsSigner::VERSION)} /)
  end

  describe "gitlab-gcs-signer (runtime)" do
    let(:files) { packed("gitlab-gcs-signer") }

    it "has the core, the binding, the Ruby layer and the operator CLI" do
      expect(files.keys).to include("src/lib.rs", "ext/gitlab_gcs_signer/src/lib.rs", "ext/gitlab_gcs_signer/extconf.rb",
                                    "Cargo.toml", "Cargo.lock", "lib/gitlab_gcs_signer.rb",
                                    "lib/gitlab_gcs_signer/extension.rb", "lib/gitlab_gcs_signer/fog.rb",
                                    "lib/gitlab_gcs_signer/shared_cache.rb", "lib/gitlab_gcs_signer/observability.rb",
                                    "lib/gitlab_gcs_signer/cli/doctor.rb", "lib/gitlab_gcs_signer/cli/sign.rb",
                                    "exe/gitlab-gcs-signer")
    end

    it "has no test support: no bench/, spec/, testing/, emulator, fixtures or HttpRoute" do
      expect(files.keys.grep(%r{\A(bench|spec|testing|tests|examples)/})).to eq([])
      expect(files.keys.grep(/emulator|fixture|http_route|\.json\z|\.pem\z/)).to eq([])
      expect(files.keys.grep(/\.so\z/)).to eq([]) # built at install, never a stale local build
    end

    it "contains no private key anywhere" do
      # A PEM key body, raw or JSON-escaped (the parser's own labels and
      # its tests' malformed keys are not keys).
      key = %r{-----BEGIN (?:RSA )?PRIVATE KEY-----(?:\\n|\n)[A-Za-z0-9+/]{60}}
      expect(files.select { |_, body| body.match?(key) }.keys).to eq([])
      expect(packed("gitlab-gcs-signer-testing").values.grep(key).size).to eq(1) # the pattern finds the test key
    end

    it "declares no runtime dependencies and no bench/emulator executable" do
      spec = @gems.fetch("gitlab-gcs-signer").spec
      expect(spec.runtime_dependencies).to eq([])
      expect(spec.executables).to eq(["gitlab-gcs-signer"])
    end
  end

  describe "gitlab-gcs-signer-testing" do
    let(:spec) { @gems.fetch("gitlab-gcs-signer-testing").spec }

    it "has the emulator, its key and the bench/emulator commands, and declares webrick" do
      expect(spec.files).to include("testing/lib/gitlab_gcs_signer/emulator.rb", "testing/lib/gitlab_gcs_signer/emulator/server.rb",
                                    "testing/lib/gitlab_gcs_signer/cli/emulator.rb", "testing/lib/gitlab_gcs_signer/cli/bench.rb",
                                    "spec/fixtures/conformance/test_service_account.not-a-test.json")
      expect(spec.runtime_dependencies.map(&:name)).to eq(["webrick"])
      expect(spec.executables).to eq(["gitlab-gcs-emulator"])
    end

    it "installs and runs the emulator on its own (no checkout, no runtime gem on the load path)" do
      home = File.join(@dir, "home")
      # webrick comes from the system's gems (Debian's ruby-webrick), the declared dependency.
      env = { "GEM_HOME" => home, "GEM_PATH" => [home, *Gem.path].join(File::PATH_SEPARATOR), "RUBYOPT" => nil, "RUBYLIB" => nil }
      # GEM_HOME, not --install-dir: that one would ignore GEM_PATH's webrick.
      out, status = Open3.capture2e(env, "gem", "install", "--local", "--no-document",
                                    File.join(@dir, "gitlab-gcs-signer-testing.gem"), chdir: Dir.tmpdir)
      expect(status).to be_success, out
      reader, writer = IO.pipe
      pid = Process.spawn(env, RbConfig.ruby, File.join(home, "bin", "gitlab-gcs-emulator"), "--port", "0", "--token-lifetime", "42",
                          out: writer, err: File::NULL, chdir: Dir.tmpdir)
      writer.close
      expect(reader.wait_readable(15)).to be_truthy
      url = reader.gets.to_s[%r{\Alistening (http://127\.0\.0\.1:\d+)\n\z}, 1]
      expect(url).not_to be_nil
      token = Net::HTTP.get(URI("#{url}/computeMetadata/v1/instance/service-accounts/default/token"), "Metadata-Flavor" => "Google")
      expect(JSON.parse(token)["expires_in"]).to eq(42)
    ensure
      if pid
        Process.kill("TERM", pid)
        Process.wait(pid)
      end
      reader&.close
    end
  end
end
