# frozen_string_literal: true

require "json"
require "socket"
require "time"
require "webrick"

module GitlabGcsSigner
  module Emulator
    # WEBrick wiring: one port for the metadata server, IAM signBlob, the GCS object endpoint and
    # the control API under /_emulator/. WEBrick serves each connection on its own thread with
    # keep-alive, so a fault's sleep delays only its own request.
    class Server
      MAX_CLIENTS = 512
      CONTROL = "/_emulator/"

      # Hands every request, whatever the method, to Server#handle.
      class Servlet < WEBrick::HTTPServlet::AbstractServlet
        def service(req, res)
          @options.first.handle(req, res)
        end
      end

      attr_reader :config, :stats, :faults

      def initialize(port: 0, bind: "127.0.0.1", key_file: DEFAULT_KEY_FILE, token_lifetime: 3599, cold_start_ms: 0, log: $stderr)
        @bind = bind
        @account = ServiceAccount.load(key_file)
        @second = ServiceAccount.second(@account)
        @config = Config.new(account: @account, token_lifetime: token_lifetime)
        @stats = Stats.new
        @faults = Faults.new(seed: @config["seed"], cold_start_ms: cold_start_ms)
        @tokens = Tokens.new
        @objects = ObjectStore.new
        @services = {
          "metadata" => Metadata.new(config: @config, tokens: @tokens, stats: @stats, project_id: @account.project_id),
          "iam" => Iam.new(config: @config, tokens: @tokens, stats: @stats, account: @account, others: [@second]),
          "gcs" => Gcs.new(config: @config, stats: @stats, objects: @objects, account: @account, others: [@second])
        }
        @webrick = WEBrick::HTTPServer.new(
          BindAddress: bind, Port: port, MaxClients: MAX_CLIENTS, DoNotReverseLookup: true,
          Logger: WEBrick::Log.new(log, WEBrick::Log::ERROR), AccessLog: [], ServerSoftware: "gitlab-gcs-emulator",
          # WEBrick writes headers and body separately; with Nagle's algorithm and the client's
          # delayed ACK that costs ~40 ms per answer on keep-alive connections.
          AcceptCallback: ->(sock) { sock.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1) }
        )
        @webrick.mount("/", Servlet, self)
      end

      def port
        @webrick.config[:Port]
      end

      def url
        host = @bind.include?(":") ? "[#{@bind}]" : @bind
        "http://#{host}:#{port}"
      end

      # Blocks until #shutdown.
      def start
        @webrick.start
      end

      # Safe to call from a signal handler: it only starts a thread.
      def shutdown
        Thread.new do
          @faults.sleeper.wake_all!
          @webrick.shutdown
        end
      end

      def handle(req, res)
        request = Request.from_webrick(req)
        reply = control(request) || serve(request)
        if reply == :hang_up
          hang_up(res)
        else
          write(reply, res)
        end
      end

      private

      def service_for(request)
        return "gcs" if SignedRequest.virtual_host_bucket(request.host)
        return "metadata" if Metadata.handles?(request.raw_path)
        return "iam" if Iam.handles?(request.raw_path)

        "gcs"
      end

      def serve(request)
        name = service_for(request)
        service = @services.fetch(name)
        service.count(request)
        return answer(name, service, request) unless name == "iam"

        @stats.in_flight("sign_blob") do
          reply = answer(name, service, request)
          if reply == :hang_up
            @stats.sign_blob_error("timeout")
          elsif reply.status == 200
            @stats.incr("sign_blob_ok")
          else
            @stats.sign_blob_error(reply.status)
          end
          reply
        end
      end

      # Runs the service unless a fault answers instead, then applies body/header faults.
      def answer(name, service, request)
        fault = @faults.before_answer(name)
        @stats.fault_injected(fault) if fault
        reply =
          case fault
          when :timeout
            @faults.hold_for_timeout(name)
            return :hang_up
          when Integer then service.error_reply(fault)
          else reshape(service.call(request), fault, service)
          end
        hostile(reply, @faults.shapes(name), request)
      end

      # Applies the hostile-answer settings (Faults::SHAPES) to a reply.
      def hostile(reply, shapes, request)
        return reply if shapes.empty?

        body = reply.body.to_s
        json = parse_object(body)
        if json&.key?("access_token")
          json["access_token"] += "\r\nX-Injected: 1" if shapes["token_crlf"]
          json["expires_in"] = shapes["expires_in"] if shapes.key?("expires_in")
        end
        if shapes["echo_authorization"] && json && json["error"].is_a?(Hash)
          json["error"]["message"] = "#{json['error']['message']} (the request had Authorization: #{request.header('authorization')})"
        end
        body = JSON.generate(json) if json
        padding = shapes.fetch("body_bytes", 0) - body.bytesize
        body += " " * padding if padding.positive?
        Reply.new(reply.status, reply.headers, body)
      end

      def parse_object(body)
        value = JSON.parse(body)
        value.is_a?(Hash) ? value : nil
      rescue JSON::ParserError
        nil
      end

      def reshape(reply, fault, service)
        case fault
        when :garbage
          Reply.new(200, { "Content-Type" => "text/html" }.merge(service.flavor_headers), "<html><body>upstream proxy error</body></html>")
        when :truncated then Reply.new(reply.status, reply.headers, reply.body.to_s.byteslice(0, reply.body.to_s.bytesize / 2))
        when :no_flavor then Reply.new(reply.status, reply.headers.reject { |key, _| key.casecmp?("Metadata-Flavor") }, reply.body)
        else reply
        end
      end

      def write(reply, res)
        res.status = reply.status
        reply.headers.each { |key, value| res[key] = value }
        # The emulator's clock (now_override included), as a real server reports its own: clients
        # such as `gitlab-gcs-signer doctor` measure clock skew from it.
        res["Date"] = Time.at(@config.now).httpdate
        res.body = reply.body.to_s
      end

      # Closes the connection without an answer, as a hung upstream finally does. WEBrick then
      # fails to write its own response (EPIPE, logged at debug level only) and drops the socket.
      def hang_up(res)
        res.keep_alive = false
        Thread.current[:WEBrickSocket]&.shutdown(Socket::SHUT_RDWR)
      rescue IOError, SystemCallError
        nil
      end

      # Control API: stats, configuration, reset, token revocation, and direct object access.
      def control(request)
        return nil unless request.raw_path.start_with?(CONTROL)

        route = [request.method, request.raw_path.delete_prefix(CONTROL).split("?").first]
        case route
        when %w[GET stats] then Reply.json(200, @stats.to_h)
        when %w[GET config] then Reply.json(200, effective_config)
        when %w[POST config] then configure(request.body)
        when %w[POST reset] then reset
        when %w[POST revoke_tokens]
          @tokens.revoke_all
          Reply.json(200, "revoked" => true)
        when %w[GET objects] then Reply.json(200, @objects.list.map(&:summary))
        # Issued token values (fake ones): specs scan the gem's output for them.
        when %w[GET tokens] then Reply.json(200, "tokens" => @tokens.values)
        else objects_route(request, route) || Reply.json(404, "error" => "unknown control endpoint #{route.join(' ')}")
        end
      end

      # GET/PUT /_emulator/objects/BUCKET/NAME: seed or inspect objects without a signed URL.
      def objects_route(request, (method, path))
        bucket, name = path.delete_prefix("objects/").split("/", 2) if path.start_with?("objects/")
        return nil unless bucket && name

        name = SignedRequest.percent_decode(name).force_encoding(Encoding::UTF_8)
        case method
        when "PUT" then Reply.json(200, @objects.put(bucket, name, request.body, request.header("content-type")).summary)
        when "GET"
          object = @objects.get(bucket, name)
          object ? Reply.new(200, { "Content-Type" => object.content_type }, object.body) : Reply.json(404, "error" => "no such object")
        end
      rescue SignedRequest::Malformed => e
        Reply.json(400, "error" => e.message)
      end

      # Top-level settings, fault keys applied to every service, or per-service fault hashes.
      def configure(body)
        changes = JSON.parse(body)
        raise Config::Invalid, "the body must be a JSON object" unless changes.is_a?(Hash)

        apply(changes)
        Reply.json(200, effective_config)
      rescue JSON::ParserError, Config::Invalid => e
        Reply.json(400, "error" => e.message)
      end

      def apply(changes)
        services = changes.slice(*Faults::SERVICES)
        shared = changes.slice(*Faults::KEYS)
        revoke = changes.key?("revoke_tokens") ? changes["revoke_tokens"] : false
        raise Config::Invalid, "revoke_tokens must be true or false" unless [true, false].include?(revoke)

        settings = changes.reject { |key, _| services.key?(key) || shared.key?(key) || key == "revoke_tokens" }
        # Validate everything before changing anything.
        Config.new(account: @account).update(settings)
        services.each_value { |hash| raise Config::Invalid, "service faults must be a JSON object" unless hash.is_a?(Hash) }
        Faults::SERVICES.each { |name| Faults.new(seed: 0).configure(name, shared.merge(services.fetch(name, {}))) }

        @config.update(settings)
        @faults.reseed(settings["seed"]) if settings.key?("seed")
        Faults::SERVICES.each { |name| @faults.configure(name, shared.merge(services.fetch(name, {}))) }
        @tokens.revoke_all if revoke
      end

      def reset
        @config.reset!
        @faults.reseed(@config["seed"])
        @faults.reset!
        @stats.reset!
        @objects.clear
        Reply.json(200, "reset" => true)
      end

      def effective_config
        @config.to_h.merge("faults" => @faults.to_h, "key_email" => @account.email, "second_email" => @second.email, "key_id" => @account.key_id)
      end
    end
  end
end
