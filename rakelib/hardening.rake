# frozen_string_literal: true

# Longer runs of the hardening checks than CI does (spec/hardening runs them
# at CI size). Everything talks to the bundled emulator on 127.0.0.1 only.
namespace :hardening do
  desc "Puma/Sidekiq load: 60 s + 30 s (GCS_SIGNER_LOAD_SECONDS changes it), every URL verified"
  task :load do
    sh({ "GCS_SIGNER_LOAD_SECONDS" => ENV.fetch("GCS_SIGNER_LOAD_SECONDS", "60") }, "ruby", "bench/load.rb")
  end

  desc "The fault matrix, printed as a markdown table"
  task :faults do
    sh "ruby", "bench/faults.rb"
  end

  desc "URL property tests over 1M random requests (GCS_SIGNER_PROPTEST_SEED to vary)"
  task :proptest do
    sh({ "GCS_SIGNER_PROPTEST_CASES" => ENV.fetch("GCS_SIGNER_PROPTEST_CASES", "1000000") },
       "cargo", "test", "--release", "--locked", "-p", "gitlab-gcs-signer-core", "--test", "url_properties")
  end
end
