# frozen_string_literal: true

require "json"
require "net/http"
require "rbconfig"
require "uri"

module GitlabGcsSigner
  module Emulator
    # HTTP client for the control API (/_emulator/...). Loads no server code.
    class Client
      def initialize(url, timeout: 10)
        @uri = URI(url)
        @timeout = timeout
      end

      def stats
        get_json("stats")
      end

      def config
        get_json("config")
      end

      # Merges settings and faults, e.g. configure(iam: { latency_ms: 50 }, now_override: 1_549_011_600).
      def configure(changes)
        post_json("config", changes)
      end

      def reset!
        post_json("reset", {})
      end

      def revoke_tokens!
        post_json("revoke_tokens", {})
      end

      def objects
        get_json("objects")
      end

      # Every access token the metadata endpoint issued (values), for secret-leak checks.
      def tokens
        get_json("tokens").fetch("tokens")
      end

      # Stores an object directly (no signed URL), e.g. for a download demo.
      def put_object(bucket, name, body, content_type: "application/octet-stream")
        path = "objects/#{bucket}/#{name.b.gsub(%r{[^A-Za-z0-9\-._~/]}n) { |c| format('%%%02X', c.ord) }}"
        request(Net::HTTP::Put.new(control_path(path), "Content-Type" => content_type), body)
      end

      private

      def control_path(name)
        "/_emulator/#{name}"
      end

      def get_json(name)
        request(Net::HTTP::Get.new(control_path(name)))
      end

      def post_json(name, body)
        request(Net::HTTP::Post.new(control_path(name), "Content-Type" => "application/json"), JSON.generate(body))
      end

      def request(req, body = nil)
        req.body = body if body
        response = Net::HTTP.start(@uri.host, @uri.port, open_timeout: @timeout, read_timeout: @timeout) { |http| http.request(req) }
        data = JSON.parse(response.body)
        raise ArgumentError, "emulator control API: #{data['error']}" unless response.is_a?(Net::HTTPSuccess)

        data
      end
    end

    # Runs exe/gitlab-gcs-emulator as a child process (same Ruby) and controls it over HTTP.
    #   emulator = GitlabGcsSigner::Emulator::Process.start
    #   ENV["GCE_METADATA_HOST"] = emulator.host
    #   ...
    #   emulator.stop
    class Process
      EXE = File.expand_path("../../../exe/gitlab-gcs-emulator", __dir__)
      START_TIMEOUT = 15
      STOP_TIMEOUT = 5

      attr_reader :url, :host, :port, :pid, :client

      # Options: port: (0 = any), bind:, key: (key file), token_lifetime:, cold_start_ms:,
      # config: (Hash applied once started), err: (child's stderr, default inherited).
      def self.start(port: 0, bind: "127.0.0.1", key: nil, token_lifetime: nil, cold_start_ms: nil, config: nil, err: $stderr)
        args = ["--port", port.to_s, "--bind", bind]
        args += ["--key", key.to_s] if key
        args += ["--token-lifetime", token_lifetime.to_s] if token_lifetime
        args += ["--cold-start-ms", cold_start_ms.to_s] if cold_start_ms
        reader, writer = IO.pipe
        pid = ::Process.spawn(RbConfig.ruby, EXE, *args, out: writer, err: err, in: File::NULL)
        writer.close
        handle = new(pid, read_url(reader, pid))
        handle.configure(config) if config
        handle
      rescue StandardError
        reap(pid) if pid
        raise
      ensure
        reader&.close
      end

      def self.reap(pid)
        ::Process.kill("KILL", pid)
        ::Process.wait(pid)
      rescue Errno::ESRCH, Errno::ECHILD
        nil
      end

      def self.now
        ::Process.clock_gettime(::Process::CLOCK_MONOTONIC)
      end

      def self.read_url(reader, pid)
        line = +""
        deadline = Process.now + START_TIMEOUT
        until line.end_with?("\n")
          left = deadline - Process.now
          raise "gitlab-gcs-emulator (pid #{pid}) did not report its port within #{START_TIMEOUT} s" if left <= 0
          next unless reader.wait_readable(left)

          chunk = reader.read_nonblock(256, exception: false)
          raise "gitlab-gcs-emulator (pid #{pid}) exited before listening; see its stderr" if chunk.nil?

          line << chunk if chunk.is_a?(String)
        end
        line[%r{\Alistening (http://\S+)$}, 1] or raise "gitlab-gcs-emulator printed #{line.inspect}, expected 'listening http://HOST:PORT'"
      end

      def initialize(pid, url)
        @pid = pid
        @url = url
        uri = URI(url)
        @port = uri.port
        @host = "#{uri.host}:#{uri.port}"
        @client = Client.new(url)
        @owner = ::Process.pid
        at_exit { stop if ::Process.pid == @owner }
      end

      def stats
        @client.stats
      end

      def configure(changes)
        @client.configure(changes)
      end

      def reset!
        @client.reset!
      end

      def revoke_tokens!
        @client.revoke_tokens!
      end

      def tokens
        @client.tokens
      end

      def running?
        !@status
      end

      # SIGTERM, then SIGKILL if it has not exited within STOP_TIMEOUT seconds. Idempotent.
      def stop
        return @status if @status

        ::Process.kill("TERM", @pid)
        deadline = Process.now + STOP_TIMEOUT
        until (done = ::Process.wait2(@pid, ::Process::WNOHANG))
          if Process.now > deadline
            ::Process.kill("KILL", @pid)
            done = ::Process.wait2(@pid)
            break
          end
          sleep 0.02
        end
        @status = done.last
      rescue Errno::ESRCH, Errno::ECHILD
        @status = :gone
      end

      def inspect
        "#<#{self.class.name} pid=#{@pid} url=#{@url}>"
      end
    end
  end
end
