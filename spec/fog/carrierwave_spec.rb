# frozen_string_literal: true

require "carrierwave"

# GitLab's call patterns through real CarrierWave 1.3 and fog-google 1.15,
# keyless, with the gem's initializer: every URL is checked by the
# emulator's GCS endpoint.
RSpec.describe "CarrierWave on Workload Identity", :emulator, :fog do
  let(:uploader_class) do
    Class.new(CarrierWave::Uploader::Base) do
      storage :fog

      def store_dir = "uploads/-/system/user/avatar/7"
    end
  end

  before do
    CarrierWave.configure do |config|
      config.fog_provider = "fog/google"
      config.fog_credentials = { provider: "Google", google_project: "spec",
                                 google_auth: Google::Auth::GCECredentials.new }
      config.fog_directory = "gitlab-uploads"
      config.fog_public = false
      config.fog_authenticated_url_expiration = 600
    end
    emulator.client.put_object("gitlab-uploads", path, "avatar bytes", content_type: "image/png")
  end

  let(:path) { "uploads/-/system/user/avatar/7/my avatar+1.png" }
  let(:file) do
    uploader = uploader_class.new
    CarrierWave::Storage::Fog::File.new(uploader, CarrierWave::Storage::Fog.new(uploader), path)
  end

  it "signs authenticated_url with the default 600 s lifetime" do
    before = Time.now.to_i
    url = file.url
    expires = Integer(url[/Expires=(\d+)/, 1])
    expect(expires).to be_between(before + 600, Time.now.to_i + 600 + 60 + 1)
    response = gcs(url)
    expect([response.code, response.body]).to eq(["200", "avatar bytes"])
  end

  it "signs download redirects with response-content-disposition and -type (send_upload)" do
    url = file.url(query: { "response-content-disposition" => "attachment; filename=\"my avatar+1.png\"",
                            "response-content-type" => "image/png" })
    response = gcs(url)
    expect(response.code).to eq("200")
    expect(response["Content-Disposition"]).to eq("attachment; filename=\"my avatar+1.png\"")
    expect(response["Content-Type"]).to eq("image/png")
  end

  it "signs with an explicit expire_at, as GitLab's patched authenticated_url does" do
    expire_at = Time.now + 3600
    # CarrierWave's authenticated_url with GitLab's expire_at option.
    connection = CarrierWave::Storage::Fog.connection_cache.values.last || keyless_storage
    fog_file = connection.directories.new(key: "gitlab-uploads").files.new(key: path)
    url = fog_file.url(expire_at, query: { "response-content-type" => "image/png" })
    expect(Integer(url[/Expires=(\d+)/, 1])).to be >= expire_at.to_i
    expect(gcs(url).code).to eq("200")
  end

  it "answers a Sidekiq-style burst from one signBlob call" do
    # CarrierWave asks for Fog::Time.now + 600 per call. One instant for all
    # 25 threads: a thread that read the clock just before a second boundary
    # but reached the signer after one that read it just after needs a URL
    # no signature in flight may serve (it would outlive the request by more
    # than the cache's extension), so it gets its own signature by design
    # (src/signer.rs, an_earlier_expiry_in_a_burst_is_signed_on_its_own).
    now = Fog::Time.now
    allow(Fog::Time).to receive(:now).and_return(now)
    urls = Array.new(25) { Thread.new { file.url } }.map(&:value)
    expect(urls.uniq.size).to eq(1)
    expect(emulator.stats["sign_blob_calls"]).to eq(1)
    expect(gcs(urls.first).code).to eq("200")
  end

  it "stores through CarrierWave with fog and downloads through the signed URL" do
    uploader = uploader_class.new
    Tempfile.create(["upload", ".txt"]) do |f|
      f.write("stored by carrierwave")
      f.flush
      # fog's own upload goes through the Google API client, not a signed
      # URL; put the object as Workhorse would, through a signed PUT.
      put = uploader_class.new.send(:storage).connection
                          .put_object_url("gitlab-uploads", "#{uploader.store_dir}/note.txt", Time.now + 900)
      expect(gcs(put, method: "PUT", body: File.read(f.path)).code).to eq("200")
    end
    note = CarrierWave::Storage::Fog::File.new(uploader, CarrierWave::Storage::Fog.new(uploader),
                                               "#{uploader.store_dir}/note.txt")
    expect(gcs(note.url).body).to eq("stored by carrierwave")
  end
end
