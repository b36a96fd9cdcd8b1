# frozen_string_literal: true

require "socket"
require "tmpdir"
require "fileutils"

# A throwaway redis-server (Debian's redis-server package) on a free loopback
# port, with no persistence, for the shared-cache specs and bench/fleet.rb.
# Started by the test run itself; stopped at exit.
class RedisServer
  START_TIMEOUT = 10

  attr_reader :port, :pid

  def self.shared
    @shared ||= new.start
  end

  def initialize
    @port = free_port
    @dir = Dir.mktmpdir("gcs-signer-redis")
  end

  def url
    "redis://127.0.0.1:#{@port}/0"
  end

  def start
    @pid = Process.spawn("redis-server", "--port", @port.to_s, "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", @dir, "--protected-mode", "yes",
                         out: File::NULL, err: File::NULL, in: File::NULL)
    owner = Process.pid
    at_exit do
      next unless Process.pid == owner

      stop
      FileUtils.rm_rf(@dir)
    end
    wait_until_up
    self
  end

  def stop
    return unless @pid

    Process.kill("TERM", @pid)
    Process.wait(@pid)
  rescue Errno::ESRCH, Errno::ECHILD
    nil
  ensure
    @pid = nil
  end

  def running?
    !@pid.nil?
  end

  # Runs the block with the server stopped (SIGSTOP): connections stay open
  # and nothing answers, as with a hung Redis. It answers again afterwards.
  def hung
    Process.kill("STOP", @pid)
    yield
  ensure
    Process.kill("CONT", @pid)
  end

  # A RedisCacheStore built the way GitLab builds Rails.cache: `redis:` is
  # its own ConnectionPool of Redis clients and the store adds no pool of its
  # own (`pool: false`), with short timeouts and no reconnect attempts (see
  # README "Shared cache"). on: :client gives the store one raw Redis client
  # instead of a pool. (Letting the store build its own pool from `url:`
  # breaks on ActiveSupport 7.2 with connection_pool 3, rails/rails#56461;
  # GitLab does not do that.) +timeout+ is the clients' connect, read and
  # write timeout.
  def cache_store(on: :pool, timeout: 0.2, **options)
    require "active_support"
    require "active_support/cache"
    require "active_support/cache/redis_cache_store"
    redis = case on
            when :pool
              require "connection_pool"
              ConnectionPool.new(size: 5, timeout: 5) { redis_client(timeout: timeout) }
            when :client then redis_client(timeout: timeout)
            else raise ArgumentError, "on: :pool or :client"
            end
    ActiveSupport::Cache::RedisCacheStore.new(redis: redis, pool: false, **options)
  end

  # A Redis client as the store's (short timeouts, no reconnect attempts).
  def redis_client(timeout: 0.2)
    require "redis"
    Redis.new(url: url, connect_timeout: timeout, read_timeout: timeout, write_timeout: timeout, reconnect_attempts: 0)
  end

  # A plain client for inspecting what the store wrote.
  def client
    require "redis"
    Redis.new(url: url, timeout: 2)
  end

  private

  # redis-server has no "any free port" option: bind port 0, read the
  # port the kernel chose, release it, hand it to redis-server.
  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def wait_until_up
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + START_TIMEOUT
    loop do
      return TCPSocket.new("127.0.0.1", @port).close
    rescue Errno::ECONNREFUSED
      raise "redis-server did not listen on 127.0.0.1:#{@port} within #{START_TIMEOUT} s" if
        Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      raise "redis-server exited at start (is port #{@port} taken?)" if Process.waitpid(@pid, Process::WNOHANG)

      sleep 0.02
    end
  end
end
