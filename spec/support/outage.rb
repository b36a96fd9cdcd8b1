# frozen_string_literal: true

# Shared by the stale-if-error specs (spec/outage/): a download URL for the
# example's `bucket` and `object`, whether the emulator accepts a URL at the
# example's `clock`, and the error a 503 outage ends in.
module OutageHelper
  def download(signer, expires_in: 600, name: object, query: { "response-content-disposition" => "attachment" },
               method: "GET")
    signer.signed_url(bucket: bucket, object: name, expires_in: expires_in, query: query, method: method)
  end

  # The emulator's verifier checks the URL at the signer's (simulated) time.
  def accepted?(url)
    gcs_at(url, at: clock.now).code == "200"
  end

  # A 503 outage ends in ServiceUnavailableError, or TimeoutError when the
  # deadline passes during a retry (a loaded machine).
  def raise_unavailable
    raise_error(GitlabGcsSigner::Error) do |e|
      expect(e).to be_a(GitlabGcsSigner::ServiceUnavailableError).or be_a(GitlabGcsSigner::TimeoutError)
    end
  end
end
