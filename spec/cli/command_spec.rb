# frozen_string_literal: true

require "net/http"
require "tmpdir"

# The command line itself: help, version, usage errors (exit 64), and the
# bench and emulator commands.
RSpec.describe "gitlab-gcs-signer", :cli do
  let(:commands) { %w[doctor sign bench emulator] }

  it "prints its usage with --help, listing every command" do
    %w[--help -h help].each do |flag|
      run = cli(flag)
      expect(run.status).to eq(0)
      expect(run.out).to start_with("Usage: gitlab-gcs-signer COMMAND [options]\n")
      commands.each { |name| expect(run.out).to match(/^  #{name}\s+\S/) }
    end
  end

  it "prints the version" do
    %w[--version -v].each do |flag|
      expect(cli(flag).out).to eq("gitlab-gcs-signer #{GitlabGcsSigner::VERSION}\n")
    end
    expect(cli("doctor", "--version").out).to eq("gitlab-gcs-signer #{GitlabGcsSigner::VERSION}\n")
  end

  it "prints each command's options with --help and `help COMMAND`" do
    commands.each do |name|
      [cli(name, "--help"), cli("help", name)].each do |run|
        expect(run.status).to eq(0), run.err
        expect(run.out).to start_with("Usage: gitlab-gcs-signer #{name}")
        expect(run.out).to include("-h, --help")
      end
    end
    expect(cli("doctor", "--help").out).to include("--metadata-host HOST", "--bucket BUCKET", "--json")
    expect(cli("sign", "--help").out).to include("--v2", "--header NAME:VALUE", "--credentials FILE")
  end

  it "exits 64 (EX_USAGE) on a missing or unknown command or flag" do
    [[], ["frob"], ["--frob"], *commands.map { |name| [name, "--frob"] }].each do |args|
      run = cli(*args)
      expect(run.status).to eq(64), "#{args.inspect}: #{run.err}"
      expect(run.out).to eq("")
      expect(run.err.lines.last).to match(/\ARun 'gitlab-gcs-signer( \w+)? --help' for usage\.\n\z/)
    end
    expect(cli("frob").err).to start_with("gitlab-gcs-signer: unknown command 'frob'\n")
    expect(cli("sign", "--frob").err).to start_with("gitlab-gcs-signer sign: invalid option: --frob\n")
  end

  describe "bench" do
    let(:dir) { Dir.mktmpdir("bench") }

    after { FileUtils.rm_rf(dir) }

    it "says so when there are no benchmark scripts" do
      run = cli("bench", "--dir", dir)
      expect(run.status).to eq(0)
      expect(run.out).to eq("no benchmark scripts in #{dir} yet (bench/*.rb)\n")
    end

    it "runs each script against a fresh emulator, one progress line per script" do
      File.write(File.join(dir, "a_first.rb"), <<~RUBY)
        require "net/http"
        require "gitlab_gcs_signer"
        signer = GitlabGcsSigner::Signer.new
        signer.signed_url(bucket: "b", object: "o", expires_in: 60)
        stats = Net::HTTP.get(URI(ENV.fetch("GITLAB_GCS_EMULATOR_URL") + "/_emulator/stats"))
        puts "figure: sign_blob_ok=\#{JSON.parse(stats)['sign_blob_ok']} host=\#{ENV['GCE_METADATA_HOST']}"
      RUBY
      File.write(File.join(dir, "b_second.rb"), %(puts "figure: second"\n))
      run = cli("bench", "--dir", dir)
      expect(run.status).to eq(0), run.out + run.err
      lines = run.out.lines.map(&:chomp)
      expect(lines[0]).to match(%r{\Aemulator: http://127\.0\.0\.1:\d+ \(pid \d+\)\z})
      expect(lines[1]).to eq("[1/2] a_first ...")
      expect(lines[2]).to match(/\Afigure: sign_blob_ok=1 host=127\.0\.0\.1:\d+\z/)
      expect(lines[3]).to match(/\A\[1\/2\] a_first done in \d+\.\d s\z/)
      expect(lines[4..]).to match([eq("[2/2] b_second ..."), eq("figure: second"),
                                   match(/\A\[2\/2\] b_second done in/), eq("2 benchmark(s) done.")])
    end

    it "lists, selects, and reports a failing script with exit 1" do
      File.write(File.join(dir, "ok.rb"), "puts 1\n")
      File.write(File.join(dir, "broken.rb"), "exit 3\n")
      expect(cli("bench", "--dir", dir, "--list").out).to eq("broken\nok\n")
      run = cli("bench", "--dir", dir, "broken")
      expect(run.status).to eq(1)
      expect(run.out).to include("[1/1] broken FAILED (3) in", "1 of 1 benchmark(s) failed.")
      expect(run.out).not_to include("[1/1] ok")
      expect(cli("bench", "--dir", dir, "nosuch").status).to eq(64)
    end
  end

  it "runs the emulator with the same flags as gitlab-gcs-emulator, until TERM" do
    out, writer = IO.pipe
    status = nil
    pid = Process.spawn({ "HOME" => Dir.tmpdir }, RbConfig.ruby, "-I", CliHelpers::LIB, CliHelpers::EXE,
                        "emulator", "--port", "0", "--token-lifetime", "77", out: writer, err: File::NULL)
    writer.close
    expect(out.wait_readable(15)).to be_truthy
    url = out.gets[%r{\Alistening (http://127\.0\.0\.1:\d+)\n\z}, 1]
    expect(url).not_to be_nil
    token = Net::HTTP.get(URI("#{url}/computeMetadata/v1/instance/service-accounts/default/token"), "Metadata-Flavor" => "Google")
    expect(JSON.parse(token)["expires_in"]).to eq(77)
    Process.kill("TERM", pid)
    _, status = Process.wait2(pid)
    expect(status.success?).to be(true)
  ensure
    out&.close
    GitlabGcsSigner::Emulator::Process.reap(pid) if pid && !status
  end
end
