# frozen_string_literal: true

require "json"
require "net/http"
require "time"
require "uri"
require_relative "fixes"
require_relative "../errors"
require_relative "../../gitlab_gcs_signer" # GitlabGcsSigner::DEFAULTS

module GitlabGcsSigner
  module CLI
    # `gitlab-gcs-signer doctor`: checks, in order, everything keyless signing
    # on GKE Workload Identity / GCE depends on (field notes s.2-3), each PASS,
    # FAIL (with the exact fix) or SKIP (an earlier check failed).
    #
    # The raw probes (metadata server, Date headers) use Net::HTTP against
    # the configured hosts only; signing goes through the gem's own Signer,
    # so a failure shows the error class and message the application would
    # get.
    class Doctor < Command
      NAME = "doctor"
      # The core's endpoints (src/config.rs), never repeated here; another
      # universe (--universe-domain) gives https://iamcredentials.UNIVERSE
      # and https://storage.UNIVERSE.
      DEFAULT_METADATA_HOST = GitlabGcsSigner::DEFAULTS[:endpoints][:metadata_host]
      DEFAULT_IAM_ENDPOINT = GitlabGcsSigner::DEFAULTS[:endpoints][:iam_endpoint]
      DEFAULT_GCS_ENDPOINT = "https://#{GitlabGcsSigner::DEFAULTS[:endpoints][:storage_host]}"
      PROBE_OBJECT = "gitlab-gcs-signer-doctor-probe"
      ACCOUNT = "/computeMetadata/v1/instance/service-accounts/default"
      SIGN_SCOPES = %w[https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/iam].freeze
      # V4 URLs carry the signing time; GCS refuses one dated in the future,
      # and a clock behind shortens every URL's life. Date headers have a
      # one-second resolution, so anything below a few seconds is noise.
      MAX_SKEW = 30
      NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

      Check = Struct.new(:name, :title, :status, :message, :fix, :details, keyword_init: true) do
        def to_h
          { "name" => name, "title" => title, "status" => status.to_s, "message" => message,
            "fix" => fix, "details" => details || {} }
        end
      end

      # A raw answer: status, headers we care about, body, when it was sent/received.
      Probe = Struct.new(:status, :flavor, :date, :body, :sent, :received, :error, keyword_init: true)

      def parser
        new_parser("[options]", <<~TEXT).tap do |p|
          Checks the metadata server, the service account, the token's scopes, signBlob,
          the clock and (with --bucket) a signed request to the bucket. Prints PASS/FAIL
          with the exact fix for each; exits 1 if any check fails.
        TEXT
          p.on("--metadata-host HOST", "metadata server host[:port] (default: GCE_METADATA_HOST, else #{DEFAULT_METADATA_HOST})") { |v| @options[:metadata_host] = v }
          p.on("--universe-domain DOMAIN", "universe domain (default: GOOGLE_CLOUD_UNIVERSE_DOMAIN, else googleapis.com)") { |v| @options[:universe_domain] = v }
          p.on("--iam-endpoint URL", "IAM Credentials base URL (default: GCS_SIGNER_IAM_ENDPOINT, else https://iamcredentials.UNIVERSE)") { |v| @options[:iam_endpoint] = v }
          p.on("--service-account EMAIL", "sign as this account (default: GITLAB_GCS_SIGNER_SERVICE_ACCOUNT, else the pod's)") { |v| @options[:service_account] = v }
          p.on("--bucket BUCKET", "also send a signed HEAD for a probe object in BUCKET") { |v| @options[:bucket] = v }
          p.on("--object NAME", "the object --bucket probes (default: #{PROBE_OBJECT}; 404 is a pass)") { |v| @options[:object] = v }
          p.on("--gcs-endpoint URL", "where --bucket sends the request (default: https://storage.UNIVERSE)") { |v| @options[:gcs_endpoint] = v }
          p.on("--json", "print one JSON document instead of text") { @options[:json] = true }
        end
      end

      def run(operands)
        no_operands!(operands)
        @metadata_host = pick(:metadata_host, "GCE_METADATA_HOST", DEFAULT_METADATA_HOST)
        @universe = pick(:universe_domain, "GOOGLE_CLOUD_UNIVERSE_DOMAIN", "googleapis.com").strip.downcase.chomp(".")
        @iam_endpoint = pick(:iam_endpoint, "GCS_SIGNER_IAM_ENDPOINT", "https://iamcredentials.#{@universe}")
        @service_account = pick(:service_account, "GITLAB_GCS_SIGNER_SERVICE_ACCOUNT", nil)
        validate_urls!
        checks = run_checks
        @options[:json] ? print_json(checks) : print_text(checks)
        checks.any? { |c| c.status == :fail } ? EX_FAILURE : EX_OK
      end

      private

      def pick(option, variable, default)
        value = @options[option] || env[variable]
        value.nil? || value.empty? ? default : value
      end

      def validate_urls!
        [[@iam_endpoint, "--iam-endpoint"], [@options[:gcs_endpoint], "--gcs-endpoint"]].each do |url, flag|
          next if url.nil?

          uri = URI.parse(url)
          raise UsageError, "#{flag} must be an http(s) URL, got #{url.inspect}" unless uri.is_a?(URI::HTTP) && uri.host
        rescue URI::InvalidURIError
          raise UsageError, "#{flag} must be an http(s) URL, got #{url.inspect}"
        end
        raise UsageError, "--object needs --bucket" if @options[:object] && !@options[:bucket]
        raise UsageError, "--gcs-endpoint needs --bucket" if @options[:gcs_endpoint] && !@options[:bucket]
      end

      def run_checks
        metadata = check_metadata
        identity = check_identity(metadata)
        sign_blob, signer = check_sign_blob(metadata, identity)
        scopes = check_scopes(metadata, sign_blob)
        checks = [metadata, identity, scopes, sign_blob, check_clock(metadata)]
        checks << check_bucket(signer, sign_blob) if @options[:bucket]
        checks
      end

      # 1. Reachable, and genuine: a real metadata server sets
      # Metadata-Flavor: Google on every answer; a proxy or captive portal
      # does not, and its "token" must not be trusted.
      def check_metadata
        @email_probe = metadata_get("#{ACCOUNT}/email")
        probe = @email_probe
        check = Check.new(name: "metadata", title: "metadata server", details: { "host" => @metadata_host })
        if probe.error
          check.status = :fail
          check.message = "cannot reach the metadata server at #{@metadata_host}: #{probe.error}"
          check.fix = "on GKE/GCE leave GCE_METADATA_HOST unset and allow egress to 169.254.169.254:80 " \
                      "(NetworkPolicy); elsewhere point --metadata-host/GCE_METADATA_HOST at the metadata " \
                      "server or use a credentials file (GOOGLE_APPLICATION_CREDENTIALS)"
        elsif !probe.flavor
          check.status = :fail
          check.message = "#{@metadata_host} answered HTTP #{probe.status} without the Metadata-Flavor: Google " \
                          "header: it is not a genuine metadata server"
          check.fix = "check GCE_METADATA_HOST / --metadata-host, and that no HTTP proxy intercepts it " \
                      "(NO_PROXY=169.254.169.254,metadata.google.internal)"
        elsif probe.status == 404
          check.status = :fail
          check.message = "the metadata server at #{@metadata_host} has no default service account (HTTP 404)"
          check.fix = "enable Workload Identity on the GKE node pool (--workload-metadata=GKE_METADATA), " \
                      "or attach a service account to the GCE instance"
        elsif probe.status != 200
          check.status = :fail
          check.message = "the metadata server at #{@metadata_host} answered HTTP #{probe.status} to #{ACCOUNT}/email"
          check.fix = "retry in a few seconds (the GKE metadata server needs a moment after pod start); " \
                      "if it persists, check the node's gke-metadata-server pods"
        else
          check.status = :pass
          check.message = "#{@metadata_host} answered with Metadata-Flavor: Google (#{ms(probe)} ms)"
        end
        check
      end

      # 2. A Google service account, not the workload pool PROJECT.svc.id.goog
      # (Kubernetes service account not annotated, field notes s.3).
      def check_identity(metadata)
        check = Check.new(name: "identity", title: "service account")
        reported = metadata.status == :pass ? @email_probe.body.to_s.strip : nil
        check.details = { "metadata_email" => reported, "service_account" => @service_account }.compact
        if reported&.end_with?(".svc.id.goog") && !@service_account
          check.status = :fail
          check.message = "the metadata server reports #{reported}: the pod's Kubernetes service account is " \
                          "not mapped to a Google service account, and that identity cannot sign"
          check.fix = Fixes.for("WorkloadIdentityError", email: reported).gsub("NAMESPACE", namespace)
        elsif @service_account
          check.status = :pass
          check.message = "signing as #{@service_account} (given)" +
                          (reported ? "; the metadata server reports #{reported}" : "")
        elsif reported.nil?
          check.status = :skip
          check.message = "needs the metadata server"
        elsif !reported.match?(/\A[^@\s]+@[^@\s]+\z/)
          check.status = :fail
          check.message = "the metadata server answered #{reported[0, 80].inspect} for the email, which is not one"
          check.fix = Fixes.for("ProtocolError")
        else
          check.status = :pass
          check.message = "#{reported} (a Google service account)"
        end
        check
      end

      # 4. The gem's own Signer signs a test blob: proves the token, the
      # scopes, the IAM API and roles/iam.serviceAccountTokenCreator at once.
      def check_sign_blob(metadata, identity)
        check = Check.new(name: "sign_blob", title: "signBlob")
        if metadata.status != :pass && !@service_account
          check.status = :skip
          check.message = "needs the metadata server"
          return [check, nil]
        end

        signer = nil
        started = now
        begin
          require_relative "../../gitlab_gcs_signer"
          signer = GitlabGcsSigner::Signer.new(metadata_host: @metadata_host, iam_endpoint: @iam_endpoint,
                                               service_account_email: @service_account, cache: false, timeout: 15,
                                               universe_domain: @universe)
          signature = signer.sign_blob("gitlab-gcs-signer doctor #{Time.now.to_i}")
          email = signer.email
          check.status = :pass
          check.message = "signed a test blob as #{email} (#{signature.bytesize * 8}-bit RSA signature, " \
                          "#{((now - started) * 1000).round} ms)"
          check.details = { "email" => email, "identity" => signer.identity }
        rescue GitlabGcsSigner::Error => e
          email = @service_account || identity.details["metadata_email"]
          check.status = :fail
          check.message = "#{e.class.name}: #{e.message}"
          check.fix = Fixes.for(e, email: email)
          check.details = { "error" => e.class.name, "email" => email }.compact
        end
        [check, signer]
      end

      # 3. The token's scopes. GCE (and GKE without Workload Identity) ignores
      # the scopes a client asks for and issues the instance's scopes; the GKE
      # metadata server honours the cloud-platform scope the gem asks for. So
      # default scopes without cloud-platform/iam only matter if the metadata
      # server ignores the request, which the signBlob result tells.
      def check_scopes(metadata, sign_blob)
        check = Check.new(name: "scopes", title: "token scopes")
        unless metadata.status == :pass
          check.status = :skip
          check.message = "needs the metadata server"
          return check
        end

        probe = metadata_get("#{ACCOUNT}/scopes")
        unless probe.error.nil? && probe.status == 200
          check.status = :fail
          check.message = "could not read #{ACCOUNT}/scopes: #{probe.error || "HTTP #{probe.status}"}"
          check.fix = Fixes.for("MetadataError")
          return check
        end

        scopes = probe.body.to_s.split
        check.details = { "default_scopes" => scopes }
        allowing = scopes & SIGN_SCOPES
        insufficient = sign_blob.details.to_h["error"] == "GitlabGcsSigner::InsufficientScopeError"
        if allowing.any? && !insufficient
          check.status = :pass
          check.message = "#{allowing.first} allows signBlob"
        elsif sign_blob.status == :pass
          check.status = :pass
          check.message = "the default scopes (#{short(scopes)}) lack cloud-platform, but this metadata server " \
                          "issues the cloud-platform token the gem asks for (GKE); a GCE VM would not"
        else
          check.status = :fail
          check.message =
            if insufficient
              "signBlob refused the token for its scopes; the default scopes are #{short(scopes)}"
            else
              "the default scopes (#{short(scopes)}) do not include cloud-platform, which signBlob needs"
            end
          check.fix = Fixes.for("InsufficientScopeError", email: sign_blob.details.to_h["email"])
        end
        check
      end

      # 5. Clock skew against the Date of the metadata server (if genuine)
      # and of the IAM endpoint (an unauthenticated GET: only Date is read).
      def check_clock(metadata)
        check = Check.new(name: "clock", title: "clock skew")
        samples = {}
        samples["the metadata server"] = @email_probe if metadata.status == :pass
        samples["IAM"] = date_probe(@iam_endpoint)
        skews = samples.filter_map { |source, probe| [source, skew(probe).round] if probe&.date }.to_h
        check.details = skews.transform_keys { |source| source.delete_prefix("the ").tr(" ", "_").downcase }
        if skews.empty?
          check.status = :skip
          check.message = "no server answered with a Date header"
          return check
        end

        source, worst = skews.max_by { |_, s| s.abs }
        if worst.abs > MAX_SKEW
          check.status = :fail
          check.message = "this machine's clock is #{worst.abs} s #{worst.positive? ? 'behind' : 'ahead of'} #{source} " \
                          "(limit #{MAX_SKEW} s): " +
                          (worst.positive? ? "V4 URLs would expire early" : "GCS would refuse new V4 URLs as not yet valid")
          check.fix = "synchronise the clock with NTP (GKE/GCE: metadata.google.internal; `chronyc tracking` " \
                      "shows the offset); in a container, fix the node's clock"
        else
          check.status = :pass
          check.message = "#{skews.map { |s, v| "#{v.zero? ? '0' : format('%+d', v)} s against #{s}" }.join(', ')} " \
                          "(limit #{MAX_SKEW} s)"
        end
        check
      end

      # 6. A signed HEAD for a probe object: the signature, the host and the
      # account's access to the bucket, as GCS itself judges them.
      def check_bucket(signer, sign_blob)
        bucket = @options[:bucket]
        object = @options[:object] || PROBE_OBJECT
        endpoint = URI.parse(@options[:gcs_endpoint] || "https://storage.#{@universe}")
        check = Check.new(name: "bucket", title: "bucket access",
                          details: { "bucket" => bucket, "object" => object, "endpoint" => endpoint.to_s })
        unless sign_blob.status == :pass
          check.status = :skip
          check.message = "needs a working signBlob"
          return check
        end

        host = endpoint.port == endpoint.default_port ? endpoint.host : "#{endpoint.host}:#{endpoint.port}"
        url_for = ->(verb) { signer.signed_url(bucket: bucket, object: object, method: verb, expires_in: 300, scheme: endpoint.scheme, host: host) }
        head = gcs_request("HEAD", url_for.call("HEAD"))
        check.details["status"] = head.status
        case head.status
        when 200
          check.status = :pass
          check.message = "signed HEAD gs://#{bucket}/#{object}: 200 (the object exists)"
        when 404
          check.status = :pass
          check.message = "signed HEAD gs://#{bucket}/#{object}: 404, the signature was accepted and the object " \
                          "does not exist (expected for the probe)"
        else
          bucket_failure(check, head, url_for, bucket, sign_blob.details["email"])
        end
        check
      rescue GitlabGcsSigner::Error => e
        check.status = :fail
        check.message = "#{e.class.name}: #{e.message}"
        check.fix = Fixes.for(e, email: sign_blob.details.to_h["email"])
        check
      end

      # A HEAD answer has no body: ask again with GET to learn GCS's error code.
      def bucket_failure(check, head, url_for, bucket, email)
        check.status = :fail
        if head.error
          check.message = "could not reach #{check.details['endpoint']}: #{head.error}"
          check.fix = "check --gcs-endpoint and egress to storage.googleapis.com:443"
          return
        end
        get = gcs_request("GET", url_for.call("GET"))
        # Only an answer like the HEAD's explains it (a transient 503 may be gone by now).
        body = get.status == head.status ? get.body.to_s : ""
        code = body[%r{<Code>([^<]*)</Code>}, 1]
        detail = body[%r{<Message>([^<]*)</Message>}, 1]
        check.details["code"] = code if code
        check.message = "signed HEAD answered HTTP #{head.status}#{code ? " #{code}" : ''}#{detail ? ": #{detail}" : ''}"
        check.fix =
          case code
          when "SignatureDoesNotMatch"
            "the URL's signature did not verify: compare the StringToSign in GCS's answer with " \
            "Signer#string_to_sign; check that --gcs-endpoint is the host the URLs are used with"
          when "ExpiredToken" then "the URL expired before it arrived: fix the clock (see the clock check)"
          when "AccessDenied"
            if detail.to_s.include?("not valid yet")
              "the URL is dated in the future for GCS: fix this machine's clock (see the clock check)"
            else
              "give #{email || 'the service account'} access to the bucket: gcloud storage buckets " \
                "add-iam-policy-binding gs://#{bucket} --member=serviceAccount:#{email || 'EMAIL'} " \
                "--role=roles/storage.objectAdmin"
            end
          when "NoSuchBucket" then "the bucket gs://#{bucket} does not exist: check --bucket and GitLab's object storage settings"
          else "GCS answered HTTP #{head.status}: retry; if it persists, check the bucket and --gcs-endpoint"
          end
      end

      def metadata_get(path)
        host, port = split_host(@metadata_host)
        # Never through a proxy: the metadata server is link-local.
        http = Net::HTTP.new(host, port, nil)
        http.open_timeout = 3
        http.read_timeout = 5
        request = Net::HTTP::Get.new(path, "Metadata-Flavor" => "Google")
        timed { http.start { |h| h.request(request) } }
      end

      def date_probe(url)
        uri = URI.parse(url)
        http = Net::HTTP.new(uri.host, uri.port)
        http.use_ssl = uri.scheme == "https"
        http.open_timeout = 3
        http.read_timeout = 5
        # Unauthenticated on purpose: only the Date header is wanted.
        timed { http.start { |h| h.request(Net::HTTP::Get.new("/")) } }
      end

      def gcs_request(verb, url)
        uri = URI.parse(url)
        http = Net::HTTP.new(uri.host, uri.port)
        http.use_ssl = uri.scheme == "https"
        http.open_timeout = 5
        http.read_timeout = 10
        request = Net::HTTPGenericRequest.new(verb, false, verb != "HEAD", uri.request_uri)
        timed { http.start { |h| h.request(request) } }
      end

      def timed
        sent = now
        sent_wall = Time.now.to_f
        response = yield
        Probe.new(status: response.code.to_i, flavor: response["Metadata-Flavor"]&.casecmp?("Google"),
                  date: parse_date(response["Date"]), body: response.body, sent: sent_wall,
                  received: sent_wall + (now - sent))
      rescue SystemCallError, IOError, SocketError, Timeout::Error, OpenSSL::SSL::SSLError => e
        Probe.new(error: "#{e.class.name.split('::').last}: #{e.message}")
      end

      def parse_date(value)
        value && Time.httpdate(value).to_f
      rescue ArgumentError
        nil
      end

      # Server time minus ours at the middle of the exchange; the Date
      # header is truncated to the second, hence the half-second.
      def skew(probe)
        probe.date + 0.5 - ((probe.sent + probe.received) / 2)
      end

      def ms(probe)
        ((probe.received - probe.sent) * 1000).round
      end

      def split_host(host_port)
        if (m = host_port.match(/\A\[(?<host>.+)\](?::(?<port>\d+))?\z/) || host_port.match(/\A(?<host>[^:]+)(?::(?<port>\d+))?\z/))
          [m[:host], (m[:port] || 80).to_i]
        else
          raise UsageError, "--metadata-host must be HOST or HOST:PORT, got #{host_port.inspect}"
        end
      end

      def namespace
        File.exist?(NAMESPACE_FILE) ? File.read(NAMESPACE_FILE).strip : "NAMESPACE"
      rescue SystemCallError
        "NAMESPACE"
      end

      def short(scopes)
        scopes.empty? ? "none" : scopes.map { |s| s.delete_prefix("https://www.googleapis.com/auth/") }.join(", ")
      end

      def now
        Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      def print_text(checks)
        out.puts "gitlab-gcs-signer #{VERSION} doctor"
        out.puts "  metadata host: #{@metadata_host}"
        out.puts "  universe:      #{@universe}"
        out.puts "  IAM endpoint:  #{@iam_endpoint}"
        out.puts
        width = checks.map { |c| c.title.size }.max
        checks.each do |c|
          out.puts "#{c.status.to_s.upcase.ljust(4)}  #{c.title.ljust(width)}  #{c.message}"
          out.puts "#{' ' * (width + 8)}fix: #{c.fix}" if c.fix
        end
        failed = checks.count { |c| c.status == :fail }
        out.puts
        out.puts(failed.zero? ? "All checks passed." : "#{failed} of #{checks.size} checks failed.")
      end

      def print_json(checks)
        out.puts JSON.pretty_generate(
          "version" => VERSION, "ok" => checks.none? { |c| c.status == :fail },
          "metadata_host" => @metadata_host, "universe_domain" => @universe, "iam_endpoint" => @iam_endpoint,
          "checks" => checks.map(&:to_h)
        )
      end
    end
  end
end
