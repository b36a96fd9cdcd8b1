# frozen_string_literal: true

# Fog.install! patches fog-google's storage class at once (the class is
# autoloaded: naming it loads it) and leaves no TracePoint or other
# process-wide hook enabled, whether fog-google was required before or not.
# Each case runs in a fresh process (FOG_GOOGLE_LIB selects the fog-google).
RSpec.describe "GitlabGcsSigner::Fog.install!", :emulator, :fog do
  def run(script)
    IO.popen([RbConfig.ruby, *fog_lib_args, "-I", File.expand_path("../../lib", __dir__), "-e", script],
             err: File::NULL, &:read)
  end

  # Prints: enabled TracePoints after install!, whether the class is patched
  # before any connection, and the signer's calls after the first URL.
  def script(fog_first:)
    <<~RUBY
      require "fog/core"
      Fog::Logger[:deprecation] = nil
      #{'require "fog/google"' if fog_first}
      require "gitlab_gcs_signer/fog"
      signer = GitlabGcsSigner::Signer.new(metadata_host: #{emulator.host.inspect}, iam_endpoint: #{emulator.url.inspect})
      GitlabGcsSigner::Fog.install!(signer: signer)
      enabled = ObjectSpace.each_object(TracePoint).count(&:enabled?)
      real = Gem::Version.new(Fog::Google::VERSION) >= Gem::Version.new("1.25") ? Fog::Google::StorageJSON::Real : Fog::Storage::GoogleJSON::Real
      patched = real.ancestors.include?(GitlabGcsSigner::Fog::Patch)
      require "googleauth"
      Fog::Storage.new(provider: "Google", google_project: "p", google_auth: Google::Auth::GCECredentials.new)
                  .get_object_https_url("b", "o", Time.now + 600)
      print enabled, " ", patched, " ", signer.stats[:misses], " ", ObjectSpace.each_object(TracePoint).count(&:enabled?)
    RUBY
  end

  it "with fog-google required first: no enabled TracePoint, the shim signs the first connection" do
    expect(run(script(fog_first: true))).to eq("0 true 1 0")
  end

  it "before fog-google is required: install! loads and patches it, no enabled TracePoint" do
    expect(run(script(fog_first: false))).to eq("0 true 1 0")
  end
end
