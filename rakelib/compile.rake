# frozen_string_literal: true

require "rbconfig"

ROOT = File.expand_path("..", __dir__)
SO_NAME = "gitlab_gcs_signer.#{RbConfig::CONFIG['DLEXT']}".freeze

desc "Build the Rust extension (release) into lib/gitlab_gcs_signer/"
task :compile do
  target_dir = ENV.fetch("CARGO_TARGET_DIR", File.join(ROOT, "target"))
  sh "cargo", "build", "--release", "--locked", "-p", "gitlab-gcs-signer-ext", "--target-dir", target_dir
  cp File.join(target_dir, "release", "libgitlab_gcs_signer.so"), File.join(ROOT, "lib", "gitlab_gcs_signer", SO_NAME)
end

desc "Remove the built extension and cargo's target directory"
task :clean do
  rm_f File.join(ROOT, "lib", "gitlab_gcs_signer", SO_NAME)
  rm_rf File.join(ROOT, "target")
end
