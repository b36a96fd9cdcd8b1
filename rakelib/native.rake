# frozen_string_literal: true

# Platform gems with prebuilt extensions (RELEASING.md): no Rust toolchain and
# no C compiler at install time.
#
#   rake native:tools       zig (PyPI's ziglang) and cargo-zigbuild, cached
#                           outside the clone (NATIVE_TOOLS, default
#                           /var/cache/gitlab-gcs-signer)
#   rake native:gem         pkg/gitlab-gcs-signer-VERSION-x86_64-linux.gem
#
# Every extension is built on this machine by the same rustc, linked by zig
# against glibc 2.28 (cargo-zigbuild's "x86_64-unknown-linux-gnu.2.28" target),
# so it loads on RHEL 8 / Debian 10 and newer. rb-sys needs each target Ruby's
# RbConfig and headers, not the Ruby itself: NativeGem.rbconfig runs that Ruby
# once (on the host, or in a root such as script/sid's) to dump its RbConfig,
# with the header directories made host paths, and rb-sys reads the dump
# through a stand-in `ruby` (the RUBY variable).
#
# Which Rubies: NATIVE_RUBIES, space-separated, each "host" (this Ruby), "sid"
# (script/sid's root, when script/sid exists) or the path of a ruby
# executable; default "host sid". "RUBY+PATH/rbconfig.rb" reads another
# architecture's rbconfig.rb (from its Debian libruby package, headers from
# its ruby-dev, unpacked side by side) with RUBY, which must be the same Ruby
# version: how aarch64-linux is built on x86_64 (RELEASING.md). A gem whose Ruby minors have a gap (3.1 and
# 3.3 without 3.2) would install on the missing one and fail to load, so it
# is refused unless NATIVE_ALLOW_GAPS=1 (test builds on a machine without
# that Ruby).

require "digest"
require "fileutils"
require "rbconfig"
require "rubygems/package"

module NativeGem
  ROOT = File.expand_path("..", __dir__)
  WORK = File.join(ROOT, "tmp", "native")
  PKG = File.join(ROOT, "pkg")
  TOOLS = ENV.fetch("NATIVE_TOOLS", "/var/cache/gitlab-gcs-signer")
  # Versions of the build tools, pinned (cargo install --locked).
  ZIGLANG_VERSION = "0.17.1"
  CARGO_ZIGBUILD_VERSION = "0.24.1"
  # The glibc zig links against: the oldest one the .so files load on
  # (RHEL 8, Debian 10); script/native-gem-check enforces it.
  GLIBC = "2.28"
  # Gem platform => cargo-zigbuild target (the suffix selects the glibc).
  TARGETS = {
    "x86_64-linux" => "x86_64-unknown-linux-gnu.#{GLIBC}",
    "aarch64-linux" => "aarch64-unknown-linux-gnu.#{GLIBC}"
  }.freeze
  SO = "gitlab_gcs_signer.so"

  # Prints RbConfig::CONFIG in rb-sys's format (key \x1F value, \x1E between
  # pairs), header directories prefixed with the root the Ruby runs in, and
  # writes it to ARGV[1]; prints the Ruby's minor version.
  # With a third argument, the RbConfig is that rbconfig.rb's (another
  # architecture's, of the same Ruby version: its paths follow its location).
  DUMP = <<~'RUBY'
    root, out, foreign = ARGV
    foreign.to_s.empty? ? require("rbconfig") : load(foreign)
    config = RbConfig::CONFIG.dup
    %w[rubyhdrdir rubyarchhdrdir].each { |key| config[key] = File.join(root, config[key]) unless root.empty? }
    File.write(out, config.map { |pair| pair.join("\x1F") }.join("\x1E"))
    print "#{config["MAJOR"]}.#{config["MINOR"]}"
  RUBY

  module_function

  def env
    path = [File.join(TOOLS, "cargo-zigbuild", "bin"), File.join(TOOLS, "ziglang", "ziglang"), ENV.fetch("PATH")]
    { "PATH" => path.join(File::PATH_SEPARATOR) }
  end

  # One cargo target directory per platform and Ruby minor: a rebuild after
  # a change recompiles the crates that changed, nothing when nothing did
  # (one directory for all would rebuild rb-sys, magnus and the binding for
  # each Ruby on every run). NATIVE_TARGET_DIR keeps them outside the clone.
  def target_dir(platform, minor)
    base = ENV.fetch("NATIVE_TARGET_DIR") { File.join(ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target")), "native") }
    File.join(base, "#{platform}-#{minor}")
  end

  def rubies
    names = ENV.fetch("NATIVE_RUBIES") { File.exist?(File.join(ROOT, "script", "sid")) ? "host sid" : "host" }.split
    names.map do |name|
      runner, foreign = name.split("+", 2)
      ruby = case runner
             when "host" then { name: name, run: [RbConfig.ruby], root: "" }
             when "sid" then { name: name, run: [File.join(ROOT, "script", "sid"), "ruby"], root: sid_root }
             else { name: name, run: [File.expand_path(runner)], root: "" }
             end
      foreign ? ruby.merge(root: "", rbconfig: File.expand_path(foreign)) : ruby
    end
  end

  def sid_root
    script = File.join(ROOT, "script", "sid")
    system(script, "--build", out: $stderr, exception: true)
    IO.popen([script, "--path"], &:read).strip
  end

  # Dumps +ruby+'s RbConfig under tmp/native/PLATFORM/MINOR/ and writes the
  # stand-in `ruby` that rb-sys runs. Returns [minor, stand-in path].
  def rbconfig(ruby, platform)
    FileUtils.mkdir_p(WORK)
    dump = File.join(WORK, "rbconfig-#{ruby[:name].tr('/+', '__')}.dump")
    # The repository is mounted at the same path in script/sid's root.
    minor = IO.popen([*ruby[:run], "--disable-gems", "-e", DUMP, ruby[:root], dump, ruby[:rbconfig].to_s], &:read)
    raise "#{ruby[:run].join(' ')} could not dump its RbConfig" unless $?.success? && minor.match?(/\A\d+\.\d+\z/)

    dir = File.join(WORK, platform, minor)
    FileUtils.mkdir_p(dir)
    FileUtils.mv(dump, File.join(dir, "rbconfig.dump"))
    # Named after the dump: cargo reruns rb-sys's build script when RUBY
    # changes, so another Ruby (even the same minor) means a rebuild.
    stand_in = File.join(dir, "ruby-#{Digest::SHA256.file(File.join(dir, 'rbconfig.dump')).hexdigest[0, 12]}")
    File.write(stand_in, "#!/bin/sh\n# rb-sys asks `$RUBY -e ...` for RbConfig: answer with #{ruby[:name]}'s.\n" \
                         "exec cat \"$(dirname \"$0\")/rbconfig.dump\"\n")
    File.chmod(0o755, stand_in)
    [minor, stand_in]
  end

  # Builds the extension for +ruby+ and +platform+; returns the .so's path.
  def build(ruby, platform)
    minor, stand_in = rbconfig(ruby, platform)
    target = TARGETS.fetch(platform)
    puts "==> #{platform} Ruby #{minor} (#{ruby[:name]}): cargo zigbuild --target #{target}"
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    cargo_dir = target_dir(platform, minor)
    Dir.chdir(ROOT) do
      system(env.merge("RUBY" => stand_in), "cargo", "zigbuild", "--release", "--locked", "-p", "gitlab-gcs-signer-ext",
             "--target", target, "--target-dir", cargo_dir, exception: true)
    end
    built = File.join(cargo_dir, target.sub(/\.\d+\.\d+\z/, ""), "release", "libgitlab_gcs_signer.so")
    so = File.join(WORK, platform, minor, SO)
    FileUtils.cp(built, so)
    puts format("    %s (%d KiB) in %.0f s", so.delete_prefix("#{ROOT}/"), File.size(so) / 1024,
                Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
    so
  end

  # The runtime gemspec as a platform gem: prebuilt .so files instead of the
  # Rust sources and extconf.rb.
  def platform_spec(platform, minors)
    spec = Gem::Specification.load(File.join(ROOT, "gitlab-gcs-signer.gemspec"))
    spec.platform = Gem::Platform.new(platform)
    spec.extensions = []
    spec.files = spec.files.reject { |f| f.start_with?("src/", "ext/", "Cargo.") } +
                 minors.map { |minor| "lib/gitlab_gcs_signer/#{minor}/#{SO}" }
    lowest, highest = minors.minmax_by { |m| Gem::Version.new(m) }
    major, minor = highest.split(".").map(&:to_i)
    spec.required_ruby_version = [">= #{lowest}", "< #{major}.#{minor + 1}.dev"]
    spec
  end

  def check_gaps!(minors)
    versions = minors.map { |m| Gem::Version.new(m) }.sort
    # 3.3 -> 4.0 is no gap; 3.1 -> 3.3 is.
    gaps = versions.each_cons(2).reject do |a, b|
      b.segments[0] == a.segments[0] ? b.segments[1] == a.segments[1] + 1 : b.segments[1].zero?
    end
    return if gaps.empty?

    message = "Ruby minors #{minors.join(', ')} have a gap: the gem would install on the missing one and not load"
    raise "#{message} (NATIVE_ALLOW_GAPS=1 for a test build)" unless ENV["NATIVE_ALLOW_GAPS"] == "1"

    warn "WARNING: #{message} (NATIVE_ALLOW_GAPS=1)"
  end

  # Packs the built .so files of +platform+ (WORK/PLATFORM/MINOR/) into
  # +pkg+; returns the gem's path.
  def package(platform, work: WORK, pkg: PKG)
    sos = Dir[File.join(work, platform, "*", SO)].sort
    raise "no extensions built for #{platform} under #{work}" if sos.empty?

    minors = sos.map { |so| File.basename(File.dirname(so)) }
    check_gaps!(minors)
    spec = platform_spec(platform, minors)
    stage = File.join(work, "stage-#{platform}")
    FileUtils.rm_rf(stage)
    (spec.files - minors.map { |m| "lib/gitlab_gcs_signer/#{m}/#{SO}" }).each do |file|
      FileUtils.mkdir_p(File.join(stage, File.dirname(file)))
      FileUtils.cp(File.join(ROOT, file), File.join(stage, file), preserve: true)
    end
    sos.zip(minors).each do |so, minor|
      FileUtils.mkdir_p(File.join(stage, "lib/gitlab_gcs_signer", minor))
      FileUtils.cp(so, File.join(stage, "lib/gitlab_gcs_signer", minor, SO))
    end
    FileUtils.mkdir_p(pkg)
    file = Dir.chdir(stage) { Gem::Package.build(spec) }
    FileUtils.mv(File.join(stage, file), File.join(pkg, file))
    File.join(pkg, file)
  end
end

namespace :native do
  desc "Install zig (PyPI ziglang) and cargo-zigbuild under NATIVE_TOOLS (cached; once per machine)"
  task :tools do
    tools = NativeGem::TOOLS
    unless File.executable?(File.join(tools, "ziglang", "ziglang", "zig"))
      # --target installs beside nothing else; PIP_BREAK_SYSTEM_PACKAGES lets
      # Debian's own pip (PEP 668) do that too.
      sh({ "PIP_BREAK_SYSTEM_PACKAGES" => "1" }, "python3", "-m", "pip", "install", "--quiet", "--target",
         File.join(tools, "ziglang"),
         "ziglang==#{NativeGem::ZIGLANG_VERSION}"
    end
    unless File.executable?(File.join(tools, "cargo-zigbuild", "bin", "cargo-zigbuild"))
      sh({ "CARGO_TARGET_DIR" => File.join(tools, "cargo-zigbuild-target") }, "cargo", "install", "--locked",
         "cargo-zigbuild", "--version", NativeGem::CARGO_ZIGBUILD_VERSION, "--root", File.join(tools, "cargo-zigbuild"))
    end
  end

  NativeGem::TARGETS.each_key do |platform|
    desc "Build the #{platform} extension for each of NATIVE_RUBIES (default: host, sid) into tmp/native/"
    task "so:#{platform}" => :tools do
      FileUtils.rm_rf(File.join(NativeGem::WORK, platform))
      NativeGem.rubies.each { |ruby| NativeGem.build(ruby, platform) }
    end

    desc "Pack the extensions already in tmp/native/#{platform}/ into pkg/ (no build)"
    task "pack:#{platform}" do
      puts "==> #{NativeGem.package(platform).delete_prefix("#{NativeGem::ROOT}/")}"
    end

    desc "Build pkg/gitlab-gcs-signer-VERSION-#{platform}.gem (prebuilt extensions, no Rust at install)"
    task "gem:#{platform}" => ["so:#{platform}", "pack:#{platform}"]
  end

  desc "Build the x86_64-linux platform gem (see native:gem:PLATFORM for the others)"
  task gem: "gem:x86_64-linux"
end
