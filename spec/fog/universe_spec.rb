# frozen_string_literal: true

require "json"
require "openssl"
require "socket"
require "tmpdir"

# Universe domains: the universe (universe_domain:, GOOGLE_CLOUD_UNIVERSE_DOMAIN,
# the key file's universe_domain) sets the default storage host
# (storage.UNIVERSE) and the IAM endpoint (https://iamcredentials.UNIVERSE)
# together, and a fog connection is signed in its own universe or not at all.
#
# The end-to-end examples run a child process in its own mount namespace
# whose /etc/hosts maps the test universe's hosts to 127.0.0.1, and trusts a
# test CA (SSL_CERT_FILE): the signer's signBlob goes to
# https://iamcredentials.example.test:443, which is a TLS front on 127.0.0.1
# for the emulator. Loopback only, no DNS. Needs root (as script/test runs).
RSpec.describe "Universe domains", :emulator, :fog do
  universe = "example.test"
  let(:universe) { universe }

  describe "configuration" do
    it "derives the storage host from the universe_domain: option and reports it" do
      signer = GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, universe_domain: "Example.Test.")
      expect(signer.universe_domain).to eq(universe)
      url = signer.signed_url(bucket: "b", object: "o", expires_in: 60)
      expect(url).to start_with("https://storage.example.test/b/o?")
      expect(gcs(url).code).to eq("404") # verified (the object does not exist), not refused
      # An explicit host still wins.
      expect(signer.signed_url(bucket: "b", object: "o", expires_in: 60, host: "h.test")).to start_with("https://h.test/")
    end

    it "reads GOOGLE_CLOUD_UNIVERSE_DOMAIN, then the key file's universe_domain field, else googleapis.com" do
      key = JSON.parse(File.read(CONFORMANCE_KEY)).merge("universe_domain" => "file.test")
      expect(GitlabGcsSigner::Signer.new(credentials: key).universe_domain).to eq("file.test")
      expect(GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY).universe_domain).to eq("googleapis.com")
      begin
        ENV["GOOGLE_CLOUD_UNIVERSE_DOMAIN"] = "env.test"
        expect(GitlabGcsSigner::Signer.new(credentials: key).universe_domain).to eq("env.test")
        expect(GitlabGcsSigner::Signer.new(credentials: key, universe_domain: "opt.test").universe_domain).to eq("opt.test")
      ensure
        ENV.delete("GOOGLE_CLOUD_UNIVERSE_DOMAIN")
      end
    end

    it "asks the metadata server only when told to (universe_domain_from_metadata:), a 404 meaning googleapis.com" do
      emulator.client.configure(universe_domain: "md.test")
      expect(keyless_signer.universe_domain).to eq("googleapis.com") # off by default: no lookup
      expect(emulator.stats["metadata_requests"].to_i).to eq(0)
      expect(keyless_signer(universe_domain_from_metadata: true).universe_domain).to eq("md.test")
      # The option and the variable still come first (and then there is no lookup).
      expect(keyless_signer(universe_domain_from_metadata: true, universe_domain: universe).universe_domain).to eq(universe)
      emulator.client.configure(universe_domain: nil)
      expect(keyless_signer(universe_domain_from_metadata: true).universe_domain).to eq("googleapis.com")
      expect(emulator.stats["metadata_requests"].to_i).to eq(2)
    end

    it "refuses a universe that is not a domain name" do
      ["localhost", "evil.test/x", "a.test:443", "a..test"].each do |bad|
        expect { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY, universe_domain: bad) }
          .to raise_error(ArgumentError, /not a domain name/)
      end
    end
  end

  describe "fog connections" do
    it "refuses to sign a connection whose universe is not the signer's (a clear error, no URL)" do
      GitlabGcsSigner.default_signer = keyless_signer(universe_domain: universe)
      expect { keyless_storage.get_object_https_url("b", "o", Time.now + 60) }
        .to raise_error(GitlabGcsSigner::UniverseMismatchError,
                        /universe domain "googleapis.com" but its signer .* signs in "example.test"/)
      expect(emulator.stats["sign_blob_calls"]).to eq(0)
    end

    it "signs a key-file connection in the connection's universe (fog-google >= 1.29)" do
      skip no_universe_domains if no_universe_domains

      storage = Fog::Storage.new(provider: "Google", google_project: "spec", universe_domain: universe,
                                 google_json_key_string: File.read(CONFORMANCE_KEY))
      url = storage.get_object_https_url("b", "k.txt", Time.now + 600)
      expect(url).to start_with("https://storage.example.test/b/k.txt?")
      expect(url).to eq(without_shim { storage.get_object_https_url("b", "k.txt", Integer(url[/Expires=(\d+)/, 1])) })
    end

    it "refuses a fog-google >= 1.29 connection in another universe than the signer's" do
      skip no_universe_domains if no_universe_domains

      GitlabGcsSigner.default_signer = keyless_signer(universe_domain: universe)
      storage = Fog::Storage.new(provider: "Google", google_project: "spec", universe_domain: "other.test",
                                 google_auth: Google::Auth::GCECredentials.new)
      expect { storage.put_object_url("b", "o", Time.now + 60) }.to raise_error(GitlabGcsSigner::UniverseMismatchError)
    end
  end

  describe "signBlob at iamcredentials.#{universe}" do
    before do
      skip "needs root to give a child process its own /etc/hosts" unless Process.uid.zero? && system("unshare -m true")
      @dir = Dir.mktmpdir("universe")
      @front = UniverseTlsFront.new(@dir, %W[iamcredentials.#{universe} storage.#{universe}], emulator.port)
      File.write(File.join(@dir, "hosts"), "127.0.0.1 localhost iamcredentials.#{universe} storage.#{universe}\n")
    end

    after do
      @front&.stop
      FileUtils.rm_rf(@dir) if @dir
    end

    # Runs Ruby code in a child that sees the test /etc/hosts (bind-mounted
    # over /etc/hosts in its own mount namespace, by mount(2) through Fiddle:
    # no mount binary needed) and trusts the test CA.
    def child(code, env = {})
      lib = File.expand_path("../../lib", __dir__)
      # A root without /etc/hosts (the sid test root) gets an empty one to mount over.
      prelude = <<~RUBY
        File.write("/etc/hosts", "") unless File.exist?("/etc/hosts")
        require "fiddle"
        mount = Fiddle::Function.new(Fiddle.dlopen(nil)["mount"], [Fiddle::TYPE_VOIDP] * 3 + [Fiddle::TYPE_LONG, Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT)
        raise "bind-mounting the test /etc/hosts failed" unless mount.call(#{File.join(@dir, 'hosts').inspect}, "/etc/hosts", nil, 4096, nil).zero?
      RUBY
      env = { "SSL_CERT_FILE" => @front.ca_file, "GCS_SIGNER_IAM_ENDPOINT" => nil }.merge(env)
      out = IO.popen(env, ["unshare", "-m", RbConfig.ruby, *fog_lib_args, "-I", lib, "-e", prelude + code],
                     err: %i[child out], &:read)
      JSON.parse(out.lines.last.to_s)
    rescue JSON::ParserError
      raise "child failed: #{out}"
    end

    def sign_code(signer_args)
      <<~RUBY
        require "json"
        require "gitlab_gcs_signer"
        s = GitlabGcsSigner::Signer.new(metadata_host: #{emulator.host.inspect}#{signer_args})
        urls = %i[v2 v4].map { |v| s.signed_url(version: v, bucket: "b", object: "u.txt", expires_in: 600) }
        puts JSON.generate("universe" => s.universe_domain, "urls" => urls, "sign_blob_calls" => s.stats[:sign_blob_calls])
      RUBY
    end

    def expect_signed_in_universe(result)
      expect(result["universe"]).to eq(universe)
      expect(result["sign_blob_calls"]).to eq(2)
      expect(@front.names).to all(eq("iamcredentials.#{universe}")) # TLS SNI: the host the signer called
      expect(@front.names.size).to be >= 1
      emulator.client.put_object("b", "u.txt", "U")
      result["urls"].each do |url|
        expect(url).to start_with("https://storage.#{universe}/b/u.txt?")
        expect(gcs(url).code).to eq("200")
      end
    end

    it "from the universe_domain: option" do
      expect_signed_in_universe(child(sign_code(", universe_domain: #{universe.inspect}")))
    end

    it "from GOOGLE_CLOUD_UNIVERSE_DOMAIN" do
      expect_signed_in_universe(child(sign_code(""), "GOOGLE_CLOUD_UNIVERSE_DOMAIN" => universe))
    end

    it "from a fog-google 1.29 connection with universe_domain:" do
      skip no_universe_domains if no_universe_domains

      result = child(<<~RUBY)
        require "json"
        require "fog/core"
        Fog::Logger[:deprecation] = nil
        require "gitlab_gcs_signer/fog"
        require "googleauth"
        signer = GitlabGcsSigner::Signer.new(metadata_host: #{emulator.host.inspect}, universe_domain: #{universe.inspect})
        GitlabGcsSigner::Fog.install!(signer: signer)
        storage = Fog::Storage.new(provider: "Google", google_project: "p", universe_domain: #{universe.inspect},
                                   google_auth: Google::Auth::GCECredentials.new)
        urls = [storage.get_object_https_url("b", "u.txt", Time.now + 600), storage.get_object_https_url("b", "u.txt", Time.now + 601)]
        puts JSON.generate("universe" => signer.universe_domain, "urls" => urls.uniq + [storage.get_object_https_url("b", "u.txt", Time.now + 900_000)],
                           "sign_blob_calls" => signer.stats[:sign_blob_calls])
      RUBY
      expect_signed_in_universe(result)
    end
  end

  # A TLS front on 127.0.0.1:443 for the emulator, with a certificate from
  # a throwaway CA; records the server names (SNI) clients asked for.
  class UniverseTlsFront
    attr_reader :ca_file

    def initialize(dir, hosts, backend_port)
      @names = Queue.new
      @ca_file = File.join(dir, "ca.pem")
      ca_key, ca = certificate("gitlab-gcs-signer test CA", nil, nil, ca: true)
      key, cert = certificate(hosts.first, ca_key, ca, hosts: hosts)
      File.write(@ca_file, ca.to_pem)
      context = OpenSSL::SSL::SSLContext.new
      context.cert = cert
      context.key = key
      context.servername_cb = lambda { |(_socket, name)|
        @names << name
        nil
      }
      @server = OpenSSL::SSL::SSLServer.new(TCPServer.new("127.0.0.1", 443), context)
      @thread = Thread.new { serve(backend_port) }
    end

    def names
      list = []
      list << @names.pop until @names.empty?
      list.each { |n| @names << n }
      list
    end

    def stop
      @thread.kill
      @server.close
    end

    private

    def serve(backend_port)
      loop do
        client = @server.accept
        Thread.new { pipe(client, TCPSocket.new("127.0.0.1", backend_port)) }
      rescue OpenSSL::SSL::SSLError, IOError, Errno::ECONNRESET
        next
      end
    end

    def pipe(client, backend)
      up = Thread.new { IO.copy_stream(client, backend) rescue nil; backend.close_write rescue nil } # rubocop:disable Style/RescueModifier
      IO.copy_stream(backend, client) rescue nil # rubocop:disable Style/RescueModifier
      up.join
    ensure
      client.close rescue nil # rubocop:disable Style/RescueModifier
      backend.close rescue nil # rubocop:disable Style/RescueModifier
    end

    def certificate(name, issuer_key, issuer, ca: false, hosts: [])
      key = OpenSSL::PKey::EC.generate("prime256v1")
      cert = OpenSSL::X509::Certificate.new
      cert.version = 2
      cert.serial = rand(1 << 64)
      cert.subject = OpenSSL::X509::Name.parse("/CN=#{name}")
      cert.issuer = issuer ? issuer.subject : cert.subject
      cert.public_key = key
      cert.not_before = Time.now - 60
      cert.not_after = Time.now + 3600
      ext = OpenSSL::X509::ExtensionFactory.new(issuer || cert, cert)
      if ca
        cert.add_extension(ext.create_extension("basicConstraints", "CA:TRUE", true))
        cert.add_extension(ext.create_extension("keyUsage", "keyCertSign,cRLSign", true))
      else
        cert.add_extension(ext.create_extension("basicConstraints", "CA:FALSE", true))
        cert.add_extension(ext.create_extension("keyUsage", "digitalSignature", true))
        cert.add_extension(ext.create_extension("extendedKeyUsage", "serverAuth"))
        cert.add_extension(ext.create_extension("subjectAltName", hosts.map { |h| "DNS:#{h}" }.join(",")))
      end
      cert.sign(issuer_key || key, OpenSSL::Digest.new("SHA256"))
      [key, cert]
    end
  end
end
