# frozen_string_literal: true

# `gitlab-gcs-signer sign`: the printed URL is accepted by the emulator's GCS
# endpoint, which verifies it with its own code.
RSpec.describe "gitlab-gcs-signer sign", :cli, :emulator do
  def sign(*args, env: {})
    cli("sign", "--metadata-host", emulator.host, "--iam-endpoint", emulator.url, *args, env: env)
  end

  def url_of(run)
    expect(run.status).to eq(0), run.err
    expect(run.out.lines.size).to eq(1)
    run.out.chomp
  end

  it "prints a V4 URL that downloads the object (keyless: metadata server + signBlob)" do
    emulator.client.put_object("uploads", "dir/a file+1.txt", "hello")
    url = url_of(sign("gs://uploads/dir/a file+1.txt"))
    expect(url).to start_with("https://storage.googleapis.com/uploads/dir/a%20file%2B1.txt?X-Goog-Algorithm=GOOG4-RSA-SHA256&")
    # At least the 900 s asked for: the expiry is rounded up to a whole second.
    expect(url).to match(/&X-Goog-Expires=90[01]&/).and include("X-Goog-Credential=#{CGI.escape(emulator_email)}")
    response = gcs(url)
    expect(response.code).to eq("200")
    expect(response.body).to eq("hello")
    expect(emulator.stats["sign_blob_ok"]).to eq(1)
  end

  it "signs the method, headers and query given" do
    url = url_of(sign("gs://uploads/new.txt", "-X", "put", "--header", "Content-Type: text/plain",
                      "--expires", "60", "--query", "x-goog-meta-owner=ci"))
    expect(url).to match(/&X-Goog-Expires=6[01]&/)
    expect(url).to include("X-Goog-SignedHeaders=content-type%3Bhost", "x-goog-meta-owner=ci")
    expect(gcs(url, method: "PUT", body: "data", headers: { "Content-Type" => "text/plain" }).code).to eq("200")
    # The header is signed: another content type is refused.
    expect(gcs(url, method: "PUT", body: "data", headers: { "Content-Type" => "image/png" }).code).to eq("403")
    expect(emulator.client.objects.map { |o| o["name"] }).to eq(["new.txt"])
  end

  it "prints a V2 URL with --v2, and a response override in the query" do
    emulator.client.put_object("uploads", "report.pdf", "%PDF")
    url = url_of(sign("gs://uploads/report.pdf", "--v2", "--query", "response-content-disposition=attachment"))
    expect(url).to match(/\?response-content-disposition=attachment&GoogleAccessId=[^&]+&Signature=[^&]+&Expires=\d+\z/)
    response = gcs(url)
    expect(response.code).to eq("200")
    expect(response["Content-Disposition"]).to eq("attachment")
  end

  it "prints a V4 bucket-level URL for gs://BUCKET" do
    emulator.client.put_object("uploads", "one", "1")
    url = url_of(sign("gs://uploads"))
    expect(url).to start_with("https://storage.googleapis.com/uploads?")
    expect(gcs(url).body).to include("<Key>one</Key>")
  end

  it "signs locally with --credentials FILE (no metadata server, no signBlob)" do
    url = url_of(cli("sign", "gs://uploads/k.txt", "--credentials", CONFORMANCE_KEY))
    emulator.client.put_object("uploads", "k.txt", "key")
    expect(gcs(url).body).to eq("key")
    expect(emulator.stats).to include("metadata_requests" => 0, "sign_blob_calls" => 0)
  end

  it "reads the hosts from the environment, like the gem" do
    url = url_of(cli("sign", "gs://uploads/e.txt",
                     env: { "GCE_METADATA_HOST" => emulator.host, "GCS_SIGNER_IAM_ENDPOINT" => emulator.url }))
    expect(gcs(url).code).to eq("404") # verified, then not found
  end

  it "exits 1 with the gem's error and the fix for this account" do
    emulator.configure("deny_sign_blob" => true)
    run = sign("gs://uploads/x")
    expect(run.status).to eq(1)
    expect(run.out).to eq("")
    expect(run.err).to start_with("gitlab-gcs-signer sign: GitlabGcsSigner::PermissionDeniedError: signBlob as #{emulator_email} was denied")
    expect(run.err).to include("fix: gcloud iam service-accounts add-iam-policy-binding #{emulator_email} ")
    expect(run.err).not_to include("ya29")
  end

  it "rejects bad command lines with exit 64" do
    [[], ["x"], ["gs://b/o", "gs://b/p"], ["gs://b", "--v2"], ["gs://b/o", "--header", "novalue"],
     ["gs://b/o", "--expires", "0"], ["gs://b/o", "--expires", "soon"], ["gs://b/o", "--expires", "999999999"],
     ["gs://b/o", "--nope"]].each do |args|
      run = cli("sign", *args)
      expect(run.status).to eq(64), "#{args.inspect}: #{run.out}#{run.err}"
      expect(run.err).to include("gitlab-gcs-signer sign: ").and end_with("Run 'gitlab-gcs-signer sign --help' for usage.\n")
    end
  end
end
