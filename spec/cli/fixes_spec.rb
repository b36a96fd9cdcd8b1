# frozen_string_literal: true

require "gitlab_gcs_signer/cli"
require "gitlab_gcs_signer/cli/fixes"

# The troubleshooting table doctor and sign print from.
RSpec.describe GitlabGcsSigner::CLI::Fixes do
  let(:error_classes) do
    GitlabGcsSigner.constants.map { |name| GitlabGcsSigner.const_get(name) }
                   .select { |c| c.is_a?(Class) && c < GitlabGcsSigner::Error }
  end

  it "has a fix for every error class the gem raises, and no other" do
    expect(described_class::BY_CLASS.keys).to match_array(error_classes.map { |c| c.name.split("::").last })
  end

  it "fills in the account email and its project" do
    email = "gitlab@acme-prod.iam.gserviceaccount.com"
    fix = described_class.for(GitlabGcsSigner::PermissionDeniedError.new("denied"), email: email)
    expect(fix).to start_with("gcloud iam service-accounts add-iam-policy-binding #{email} --member=serviceAccount:#{email} ")
    expect(described_class.for("ApiDisabledError", email: email)).to end_with("--project acme-prod")
    wi = described_class.for("WorkloadIdentityError", email: "acme-prod.svc.id.goog")
    expect(wi).to include("GSA@acme-prod.iam.gserviceaccount.com", "serviceAccount:acme-prod.svc.id.goog[NAMESPACE/KSA]")
  end

  it "keeps placeholders when nothing is known" do
    expect(described_class.for("PermissionDeniedError")).to include("add-iam-policy-binding EMAIL --member=serviceAccount:EMAIL")
  end
end
