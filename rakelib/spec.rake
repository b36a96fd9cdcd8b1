# frozen_string_literal: true

desc "Run the RSpec suite (needs `rake compile` first)"
task :spec do
  sh "rspec", "--format", "progress"
end

desc "Run the Rust core's unit and conformance tests"
task :cargo_test do
  sh "cargo", "test", "--locked", "-p", "gitlab-gcs-signer-core"
end
