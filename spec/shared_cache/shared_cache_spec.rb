# frozen_string_literal: true

require "English"

# The fleet-wide level against a real redis-server and a real
# ActiveSupport::Cache::RedisCacheStore. Each "process" is a signer with its
# own local cache and its own store connection; the forked specs use real
# processes.
RSpec.describe GitlabGcsSigner::SharedCache, :emulator, :redis do
  let(:redis) { RedisServer.shared }
  let(:bucket) { "gitlab-uploads" }
  let(:object) { "@hashed/6b/86/secret-report.pdf" }

  before do
    redis.client.flushdb
    emulator.client.put_object(bucket, object, "pdf")
  end

  # A signer as one Puma process would have it: its own local cache and its
  # own connection to the shared Redis.
  def process_signer(on: :pool, **options)
    store = redis.cache_store(on: on, timeout: store_patience[:timeout])
    keyless_signer(shared_cache: described_class.new(store, slow: store_patience[:slow], **options.slice(:wait, :breaker_seconds)),
                   **options.except(:wait, :breaker_seconds))
  end

  # On a loaded machine a store call can take longer than GitLab's 0.2 s
  # client timeouts or the level's 0.25 s `slow` (a GC pause, a descheduled
  # redis-server), which opens the breaker and skips the level the example
  # is about. Examples that are not about a failing store give it 2 s; the
  # "when Redis fails" ones keep the README's settings.
  def store_patience
    { timeout: 2.0, slow: 2.0 }
  end

  # The store calls (ActiveSupport cache instrumentation events) the block makes.
  def store_calls
    events = []
    ActiveSupport::Notifications.subscribed(->(name, *) { events << name }, /\Acache_.*\.active_support\z/) { yield }
    events
  end

  def sign_blob_calls
    emulator.stats["sign_blob_calls"]
  end

  def download(signer, expires_in: 600, name: object, **request)
    signer.signed_url(bucket: bucket, object: name, expires_in: expires_in,
                      query: { "response-content-disposition" => "attachment" }, **request)
  end

  it "gives a second process the first one's URL with no signBlob call" do
    first = process_signer
    second = process_signer
    url = download(first)
    expect(sign_blob_calls).to eq(1)

    expect(download(second)).to eq(url)
    expect(sign_blob_calls).to eq(1)
    expect(second.stats).to include(shared_hits: 1, sign_blob_calls: 0, misses: 0)
    # ...and keeps it: the next call is a local hit, Redis is not asked.
    expect(download(second)).to eq(url)
    expect(second.stats).to include(hits: 1, shared_hits: 1)
    expect(gcs(url).code).to eq("200")
  end

  it "reports where each URL came from to the instrumentation: miss, shared_hit, hit" do
    require "active_support/notifications"
    statuses = []
    subscriber = ActiveSupport::Notifications.subscribe(GitlabGcsSigner::SIGN_URL_EVENT) do |*args|
      statuses << args.last[:cache]
    end
    first = process_signer
    second = process_signer
    download(first)
    2.times { download(second) }
    expect(statuses).to eq(%i[miss shared_hit hit])
  ensure
    ActiveSupport::Notifications.unsubscribe(subscriber) if subscriber
  end

  it "shares V2 URLs (fog's format) the same way" do
    first = process_signer
    url = download(first, version: :v2)
    expect(download(process_signer, version: :v2)).to eq(url)
    expect(sign_blob_calls).to eq(1)
    expect(gcs(url).code).to eq("200")
  end

  it "keeps the window rule across processes: a URL is reused only if X <= x <= X + E" do
    clock = GitlabGcsSigner::Testing::ManualClock.new(Time.now.to_i)
    first = process_signer(clock: clock)
    url = download(first) # x = t + 600 + 60
    expect(sign_blob_calls).to eq(1)

    clock.advance(30) # X = t + 630 <= x: reused
    expect(download(process_signer(clock: clock))).to eq(url)
    expect(sign_blob_calls).to eq(1)

    # A different lifetime: x > X + E for a 60 s link, so it is signed anew.
    expect(download(process_signer(clock: clock), expires_in: 60)).not_to eq(url)
    expect(sign_blob_calls).to eq(2)

    clock.advance(31) # X = t + 661 > x: too short-lived now
    late = process_signer(clock: clock)
    expect(download(late)).not_to eq(url)
    expect(sign_blob_calls).to eq(3)
    expect(late.stats).to include(shared_hits: 0, shared_stale: 1, shared_rejected: 0)
  end

  it "never serves a URL signed for another request, even under the same key" do
    first = process_signer
    url = download(first)
    key = redis.client.keys("*").grep_v(/:lock\z/).first
    entry = JSON.parse(redis.client.get(key))

    other_object = download(process_signer, name: "other.pdf")
    forged = [
      entry.merge("url" => other_object),
      entry.merge("expires_at" => entry["expires_at"] - 1),
      entry.merge("url" => url.sub("attachment", "inline")),
      entry.merge("url" => 42),
      "not json"
    ]
    calls = sign_blob_calls
    forged.each do |value|
      redis.client.set(key, value.is_a?(String) ? value : JSON.generate(value))
      signer = process_signer
      expect(gcs(download(signer)).code).to eq("200")
      expect(signer.stats).to include(shared_hits: 0, shared_rejected: 1, sign_blob_calls: 1)
    end
    expect(sign_blob_calls).to eq(calls + forged.size)
  end

  it "hashes keys, so no object name reaches Redis's key space, and sets a TTL on every entry" do
    url = download(process_signer, expires_in: 600)
    keys = redis.client.keys("*")
    expect(keys).to contain_exactly(match(/\Agitlab_gcs_signer:v1:\{\h{64}\}\z/))
    expect(keys.join).not_to include("secret")
    expect(keys.join).not_to include(bucket)
    # The value is the bearer URL itself (README: the trust assumption).
    expect(JSON.parse(redis.client.get(keys.first))).to include("url" => url, "sign_blob" => true)
    # x = X + E with X = ceil(now + 600) and E = 60, counted from the whole second.
    ttl = redis.client.ttl(keys.first)
    expect(ttl).to be_between(600, 661)
  end

  it "keeps signBlob URLs in Redis for 12 hours at most, however long they live" do
    download(process_signer, expires_in: 3 * 86_400)
    ttl = redis.client.ttl(redis.client.keys("*").first)
    expect(ttl).to be_between((12 * 3600) - 5, 12 * 3600)
  end

  it "lets entries expire in Redis on their own" do
    # 3 s (the entry's TTL is 3 to 4 s): still there when looked at, even
    # on a loaded machine, where 1 s could be gone before the look.
    download(process_signer, expires_in: 3)
    expect(redis.client.keys("*").size).to eq(1)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    sleep 0.1 until redis.client.keys("*").empty? || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    expect(redis.client.keys("*")).to be_empty
  end

  it "leaves local-key signers alone: signing locally is cheaper than a round trip" do
    signer = key_signer(shared_cache: described_class.new(redis.cache_store))
    expect(download(signer)).to start_with("https://storage.googleapis.com/")
    expect(redis.client.keys("*")).to be_empty
    expect(signer.stats).to include(shared_misses: 0, local_signatures: 1)
  end

  it "rejects configurations that cannot work" do
    expect { keyless_signer(cache: false, shared_cache: redis.cache_store) }
      .to raise_error(ArgumentError, /needs the local cache/)
    expect { keyless_signer(shared_cache: Object.new) }.to raise_error(ArgumentError, /ActiveSupport::Cache::Store/)
    expect { described_class.new(redis.cache_store, wait: 0) }.to raise_error(ArgumentError, /wait/)
    expect { keyless_signer(timeout: 1, shared_cache: described_class.new(redis.cache_store, wait: 1)) }
      .to raise_error(ArgumentError, /less than timeout/)
    expect { described_class.new(redis.cache_store, ttl: 5) }.to raise_error(ArgumentError, /unknown shared_cache option/)
  end

  it "signs once for many threads of one process that miss together" do
    emulator.configure("iam" => { "latency_ms" => 100 })
    # One clock reading for all eight: a thread that planned just before a
    # second boundary but joined after one that planned just after gets its
    # own signature by design (src/signer.rs,
    # an_earlier_expiry_in_a_burst_is_signed_on_its_own).
    signer = process_signer(clock: GitlabGcsSigner::Testing::ManualClock.new(Time.now.to_i))
    urls = Array.new(8) { Thread.new { download(signer) } }.map(&:value)
    expect(urls.uniq.size).to eq(1)
    expect(sign_blob_calls).to eq(1)
  end

  describe "across forked processes" do
    # Children block on a pipe until the parent closes it, then all miss the
    # same key at once; each reports its URL and stats as one JSON line.
    def race(children, shared:)
      gate_r, gate_w = IO.pipe
      out_r, out_w = IO.pipe
      now = Time.now.to_i # one clock reading for every child (see the one-process burst)
      pids = Array.new(children) do
        fork do
          gate_w.close
          out_r.close
          # Waiters wait up to 4 s for the lock holder's URL (the default
          # 1 s is short for six processes on a loaded machine).
          signer = shared ? process_signer(wait: 4.0, clock: GitlabGcsSigner::Testing::ManualClock.new(now)) : keyless_signer
          gate_r.read
          url = download(signer)
          out_w.puts(JSON.generate("url" => url, "stats" => signer.stats))
          out_w.close
          exit!(0)
        rescue Exception => e # rubocop:disable Lint/RescueException
          out_w.puts(JSON.generate("error" => "#{e.class}: #{e.message}"))
          exit!(1)
        end
      end
      gate_r.close
      out_w.close
      sleep 0.3 # let every child reach the gate
      gate_w.close
      results = out_r.each_line.map { |line| JSON.parse(line) }
      pids.each { |pid| Process.wait(pid) }
      results
    ensure
      [gate_r, gate_w, out_r, out_w].each { |io| io.close unless io.closed? }
    end

    before { emulator.configure("iam" => { "latency_ms" => 150 }) }

    it "signs once for many processes that miss together, and every URL verifies" do
      results = race(6, shared: true)
      expect(results.map { |r| r["error"] }.compact).to be_empty
      # One in the common case; two if the lock holder took longer than the
      # lock's 2 s TTL and another child took the lock.
      expect(sign_blob_calls).to be_between(1, 2)
      expect(results.sum { |r| r["stats"]["shared_waits"] + r["stats"]["shared_hits"] }).to be >= 4
      results.map { |r| r["url"] }.uniq.each { |url| expect(gcs(url).code).to eq("200") }
    end

    it "keeps working in a child forked after the store was used (Puma's preload)" do
      signer = process_signer
      download(signer)
      pid = fork do
        download(signer, name: "child.pdf")
        exit!(signer.stats[:shared_errors].zero? ? 0 : 1)
      end
      Process.wait(pid)
      expect($CHILD_STATUS.exitstatus).to eq(0)
      expect(redis.client.keys("*").size).to eq(2)
      expect(download(process_signer, name: "child.pdf")).to start_with("https://")
      expect(sign_blob_calls).to eq(2)
    end

    it "signs once per process without the shared level (the baseline)" do
      results = race(6, shared: false)
      expect(results.map { |r| r["error"] }.compact).to be_empty
      expect(sign_blob_calls).to eq(6)
    end
  end

  it "works the same on a store over one raw Redis client (no pool)" do
    first = process_signer(on: :client)
    second = process_signer(on: :client)
    url = download(first)
    expect(download(second)).to eq(url)
    expect(sign_blob_calls).to eq(1)
    expect(second.stats).to include(shared_hits: 1)
  end

  # GitLab's Rails.cache is a RedisCacheStore over its own ConnectionPool
  # (:pool); :client is a store over one raw Redis client.
  %i[pool client].each do |on|
    describe "when Redis fails (RedisCacheStore on a #{on})" do
      let(:redis) { RedisServer.new.start }

      after { redis.stop }

      def timed
        started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        [yield, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started]
      end

      define_method(:process_signer) { |**options| super(on: on, **options) }

      # A stopped Redis refuses at once and a full one answers with an
      # error: those examples keep the patient store. A hung one is noticed
      # through the README's 0.2 s client timeouts (hung_redis: true). Its
      # `slow` is 0.38 s, not the default 0.25 s: one call that times out
      # takes 0.2 s plus however long a loaded machine takes to wake the
      # thread, which passed 0.25 s on its own (see the read-and-lock
      # example); two such calls take at least 0.4 s, over 0.38 s whatever
      # the load.
      def store_patience
        return super unless RSpec.current_example.metadata[:hung_redis]

        { timeout: 0.2, slow: 0.38 }
      end

      it "keeps signing through an outage, skips Redis while the breaker is open, and recovers" do
        # The breaker stays open 3 s: the ten signings below fit in that
        # window on a loaded machine too (with 1 s it could lapse and open
        # a second time).
        signer = process_signer(breaker_seconds: 3.0, timeout: 5)
        objects = Array.new(12) { |i| "outage/#{i}.bin" }
        objects.each { |name| emulator.client.put_object(bucket, name, "x") }
        expect(gcs(download(signer, name: objects[0])).code).to eq("200")
        expect(signer.stats[:shared_writes]).to eq(1)

        redis.stop
        timed = objects[1..10].map { |name| timed { download(signer, name: name) } }
        timed.each { |url, _| expect(gcs(url).code).to eq("200") }
        expect(timed.map(&:last).max).to be < 5 # the signer's deadline
        stats = signer.stats
        expect(stats).to include(shared_breaker_opens: 1, shared_breaker_open: 1)
        # After the first failure the level is skipped: no per-call store timeouts.
        expect(stats[:shared_skipped]).to be >= 8

        redis.start
        wait_until("the breaker to close") { signer.stats[:shared_breaker_open].zero? }
        download(signer, name: objects[11])
        download(signer, name: objects[11], version: :v2)
        expect(signer.stats[:shared_writes]).to be >= 2
        expect(redis.client.keys("*").size).to be >= 1
      end

      it "treats a hung Redis (no answers) like a dead one", hung_redis: true do
        signer = process_signer(breaker_seconds: 30, timeout: 5)
        redis.hung do
          timed = Array.new(5) { |i| timed { download(signer, name: "hung/#{i}") } }
          expect(timed.map(&:first).uniq.size).to eq(5)
          expect(timed.map(&:last).max).to be < 5 # the signer's deadline
          expect(signer.stats).to include(shared_breaker_opens: 1, shared_breaker_open: 1)
          expect(signer.stats[:shared_skipped]).to be >= 4
        end
      end

      # Each call to a hung Redis ends at the client's 0.2 s timeout, which
      # RedisCacheStore turns into nil or false: under `slow` (0.38 s here),
      # so no single call counts. The read and the lock together (at least
      # 0.4 s) do.
      it "stops waiting on a hung Redis after the first miss's read and lock", hung_redis: true do
        signer = process_signer(breaker_seconds: 30, timeout: 5)
        redis.hung do
          first = store_calls { download(signer, name: "hung/a") }
          expect(first).to eq(%w[cache_read.active_support cache_write.active_support])
          expect(signer.stats).to include(shared_breaker_opens: 1, shared_breaker_open: 1)
          expect(store_calls { download(signer, name: "hung/b") }).to be_empty
        end
      end

      # A Redis that refuses writes (out of memory, read-only replica) but
      # answers reads: RedisCacheStore answers each failed write with false
      # (ActiveSupport 6.1) or nil (7.x) and never raises.
      it "opens the breaker when Redis refuses writes without an exception" do
        signer = process_signer(breaker_seconds: 30, timeout: 5)
        admin = redis.client
        admin.config(:set, "maxmemory-policy", "noeviction")
        admin.config(:set, "maxmemory", "1")
        emulator.client.put_object(bucket, "full/a", "x")
        begin
          url = download(signer, name: "full/a")
          expect(gcs(url).code).to eq("200")
          expect(signer.stats).to include(shared_writes: 0, shared_breaker_opens: 1, shared_breaker_open: 1)
          expect(signer.stats[:shared_errors]).to be >= 1
          expect(store_calls { download(signer, name: "full/b") }).to be_empty
        ensure
          admin.config(:set, "maxmemory", "0")
        end
      end
    end
  end
end
