# frozen_string_literal: true

module GitlabGcsSigner
  module CLI
    # The fix for each error the gem raises, as `doctor` prints it (and as the
    # README's troubleshooting table lists it). Placeholders in CAPITALS are
    # filled in when known (the email, the project).
    module Fixes
      TOKEN_CREATOR = "gcloud iam service-accounts add-iam-policy-binding EMAIL " \
                      "--member=serviceAccount:EMAIL --role=roles/iam.serviceAccountTokenCreator"

      BY_CLASS = {
        "WorkloadIdentityError" =>
          "map the Kubernetes service account to a Google service account: " \
          "kubectl annotate serviceaccount KSA --namespace NAMESPACE " \
          "iam.gke.io/gcp-service-account=GSA@PROJECT.iam.gserviceaccount.com && " \
          "gcloud iam service-accounts add-iam-policy-binding GSA@PROJECT.iam.gserviceaccount.com " \
          "--role=roles/iam.workloadIdentityUser --member=\"serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA]\"; " \
          "then restart the pod",
        "InsufficientScopeError" =>
          "the token lacks the cloud-platform scope: on GKE enable Workload Identity on the node pool " \
          "(gcloud container node-pools update POOL --cluster CLUSTER --workload-metadata=GKE_METADATA) " \
          "or create it with --scopes=cloud-platform; on GCE stop the VM and run " \
          "gcloud compute instances set-service-account VM --service-account EMAIL --scopes=cloud-platform",
        "ApiDisabledError" => "gcloud services enable iamcredentials.googleapis.com --project PROJECT",
        "PermissionDeniedError" => "#{TOKEN_CREATOR} (new bindings take 2-7 minutes to apply)",
        "AuthenticationError" =>
          "IAM rejected a fresh token: check the clock (doctor's clock check) and that " \
          "GCE_METADATA_HOST / --metadata-host is the real metadata server; restart the pod",
        "MetadataError" =>
          "check GCE_METADATA_HOST (unset on GKE/GCE), that no NetworkPolicy blocks egress to " \
          "169.254.169.254:80, and that NO_PROXY includes 169.254.169.254,metadata.google.internal",
        "CredentialsError" =>
          "Application Default Credentials found credentials that cannot sign: unset " \
          "GOOGLE_APPLICATION_CREDENTIALS (and ~/.config/gcloud/application_default_credentials.json) " \
          "to use the metadata server, or point it at a service_account key or an " \
          "impersonated_service_account file",
        "QuotaError" =>
          "signBlob quota (60,000/min per project, all pods) or the gem's guard (max_sign_blob_per_minute) " \
          "was hit: check the hit ratio in GitlabGcsSigner.stats, lengthen URL lifetimes, or request more quota",
        "ServiceUnavailableError" =>
          "IAM or the metadata server kept failing: check egress to iamcredentials.googleapis.com:443 " \
          "and the Google Cloud status page; the gem retries transient errors by itself",
        "TimeoutError" =>
          "IAM or the metadata server is slow: check network latency, or raise the signer's timeout:",
        "ProtocolError" =>
          "a server answered something that is not Google's API: check GCS_SIGNER_IAM_ENDPOINT, " \
          "GCE_METADATA_HOST and HTTP proxy settings",
        "UniverseMismatchError" =>
          "give the signer the fog connection's universe domain (universe_domain: on Signer.new, or " \
          "GOOGLE_CLOUD_UNIVERSE_DOMAIN for both), or the connection the signer's",
        "InternalError" => "a bug in gitlab-gcs-signer: please report it with this message",
        "InterruptedError" => "the call was interrupted (Ctrl-C, Timeout, Thread#kill); run it again"
      }.freeze

      module_function

      # The fix for +error+ (an exception or its class name), with the email
      # and project filled in when known.
      def for(error, email: nil)
        name = error.is_a?(String) ? error : error.class.name.split("::").last
        fill(BY_CLASS.fetch(name, BY_CLASS["InternalError"]), email: email)
      end

      def fill(text, email: nil)
        project = project_of(email)
        text = text.gsub("EMAIL", email) if email && !email.end_with?(".svc.id.goog")
        text = text.gsub("PROJECT", project) if project
        text
      end

      # "p" from "x@p.iam.gserviceaccount.com" or "p.svc.id.goog".
      def project_of(email)
        return nil unless email

        email[/\A[^@]+@([^.]+)\.iam\.gserviceaccount\.com\z/, 1] || email[/\A([^@]+)\.svc\.id\.goog\z/, 1]
      end
    end
  end
end
