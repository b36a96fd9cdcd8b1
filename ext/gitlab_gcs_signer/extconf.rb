# frozen_string_literal: true

# Builds the Rust extension. With the rb_sys gem installed, its mkmf helper
# does the work; without it (RubyGems unreachable, Debian has no package,
# field notes s.7), a plain Makefile runs cargo and installs the .so.
require "mkmf"
require "rbconfig"

begin
  require "rb_sys/mkmf"
  # --locked: build exactly the dependency versions Cargo.lock pins (as the
  # fallback below does), never a newer resolution.
  create_rust_makefile("gitlab_gcs_signer/gitlab_gcs_signer") { |r| r.extra_cargo_args += ["--locked"] }
rescue LoadError
  root = File.expand_path("../..", __dir__)
  dlext = RbConfig::CONFIG["DLEXT"]
  cargo = ENV.fetch("CARGO", "cargo")
  own_target = !ENV.key?("CARGO_TARGET_DIR")
  target_dir = ENV.fetch("CARGO_TARGET_DIR", File.join(Dir.pwd, "target"))
  built = File.join(target_dir, "release", "libgitlab_gcs_signer.so")
  File.write("Makefile", <<~MAKE)
    # Written by extconf.rb (no rb_sys gem): cargo builds, make installs.
    sitearchdir ?= #{RbConfig::CONFIG['sitearchdir']}
    RUBYARCHDIR ?= $(sitearchdir)
    SO = gitlab_gcs_signer.#{dlext}

    all: $(SO)

    $(SO):
    \tcd #{root} && #{cargo} build --release --locked -p gitlab-gcs-signer-ext --target-dir #{target_dir}
    \tcp #{built} $(SO)

    install: $(SO)
    \tmkdir -p $(RUBYARCHDIR)/gitlab_gcs_signer
    \tcp $(SO) $(RUBYARCHDIR)/gitlab_gcs_signer/$(SO)
    #{own_target ? "\t# cargo's build tree (~350 MB) is not needed once the .so is installed\n\trm -rf #{target_dir}" : ''}

    clean:
    \trm -rf $(SO) #{target_dir}

    .PHONY: all install clean $(SO)
  MAKE
end
