# frozen_string_literal: true

# GitlabGcsSigner.stats: process-wide counters (monotonic, across signers
# that come and go) and gauges, plus each live signer's own stats.
RSpec.describe "GitlabGcsSigner.stats", :emulator do
  let(:counters) { GitlabGcsSigner::Observability::COUNTERS }
  let(:gauges) { GitlabGcsSigner::Observability::GAUGES }

  def sign(signer, object = "o")
    signer.signed_url(bucket: "uploads", object: object, expires_in: 600)
  end

  it "names exactly what the native layer counts, each with a help text" do
    keyless_signer
    expect(GitlabGcsSigner::Native.process_stats.keys).to match_array(counters.keys + gauges.keys)
    stats = GitlabGcsSigner.stats
    expect(stats.keys).to eq(%i[counters gauges signers])
    expect(stats[:counters].keys).to eq(counters.keys)
    expect(stats[:gauges].keys).to eq(gauges.keys)
    expect(stats[:counters].values + stats[:gauges].values).to all(be_a(Integer).and(be >= 0))
    expect(counters.values + gauges.values).to all(match(/\A\S.{10,}\z/))
  end

  it "sums hits, misses and signBlob calls over signers, and lists each live signer" do
    before = GitlabGcsSigner.stats[:counters]
    a = keyless_signer
    b = keyless_signer
    2.times { sign(a) }
    sign(b, "other")
    after = GitlabGcsSigner.stats
    delta = after[:counters].to_h { |k, v| [k, v - before[k]] }
    expect(delta).to include(hits: 1, misses: 2, sign_blob_calls: 2, sign_blob_retries: 0)
    expect(after[:gauges][:signers]).to be >= 2
    expect(after[:signers]).to include(a.stats.merge(identity: a.identity), b.stats.merge(identity: b.identity))
    expect(after[:signers].last(2).map { |s| s[:misses] }).to eq([1, 1])
    expect(after[:signers]).to all(include(:identity, :hits, :misses, :entries))
  end

  it "counts retries, errors by kind and token refreshes" do
    before = GitlabGcsSigner.stats[:counters]
    emulator.configure("iam" => { "fail_next" => [503] })
    sign(keyless_signer)
    emulator.configure("deny_sign_blob" => true)
    expect { sign(keyless_signer, "denied") }.to raise_error(GitlabGcsSigner::PermissionDeniedError)
    delta = GitlabGcsSigner.stats[:counters].to_h { |k, v| [k, v - before[k]] }
    expect(delta).to include(sign_blob_retries: 1, sign_blob_errors_permission: 1, sign_blob_calls: 3)
    expect(delta[:token_refreshes]).to be >= 0
  end

  # Counters are Prometheus counters: a signer that is garbage-collected
  # must not take its counts with it.
  it "keeps counters monotonic when signers are garbage-collected" do
    before = GitlabGcsSigner.stats
    make_and_drop = lambda do
      20.times { |i| sign(key_signer, "gc-#{i}") }
      nil
    end
    make_and_drop.call
    peak = GitlabGcsSigner.stats
    expect(peak[:counters][:misses] - before[:counters][:misses]).to eq(20)
    expect(peak[:counters][:local_signatures] - before[:counters][:local_signatures]).to eq(20)
    4.times { GC.start(full_mark: true, immediate_sweep: true) }
    after = GitlabGcsSigner.stats
    expect(after[:gauges][:signers]).to be < peak[:gauges][:signers]
    after[:counters].each { |name, value| expect(value).to be >= peak[:counters][name], name.to_s }
    expect(after[:counters][:misses]).to eq(peak[:counters][:misses])
  end

  it "reports the cache entries of live signers as a gauge" do
    signer = keyless_signer
    before = GitlabGcsSigner.stats[:gauges][:entries]
    3.times { |i| sign(signer, "e#{i}") }
    expect(GitlabGcsSigner.stats[:gauges][:entries] - before).to eq(3)
  end
end
