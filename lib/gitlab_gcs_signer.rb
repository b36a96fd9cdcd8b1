# frozen_string_literal: true

require_relative "gitlab_gcs_signer/version"
require_relative "gitlab_gcs_signer/errors"

# The native extension: a precompiled gem puts it under the Ruby version
# (ankane's layout); `rake compile` puts it next to this file; `gem install`
# puts it in the gem's extension directory, which is on the load path.
begin
  require "gitlab_gcs_signer/#{RUBY_VERSION.to_f}/gitlab_gcs_signer"
rescue LoadError
  begin
    require_relative "gitlab_gcs_signer/gitlab_gcs_signer"
  rescue LoadError
    require "gitlab_gcs_signer/gitlab_gcs_signer"
  end
end

require_relative "gitlab_gcs_signer/signer"

# Signed Google Cloud Storage URLs for GitLab without a service-account key.
module GitlabGcsSigner
end
