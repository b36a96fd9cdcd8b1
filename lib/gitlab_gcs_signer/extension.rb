# frozen_string_literal: true

require "rbconfig"

module GitlabGcsSigner
  # Finds and loads the native extension (gitlab_gcs_signer.so), in order:
  #
  # 1. one for this Ruby's minor version, gitlab_gcs_signer/3.3/gitlab_gcs_signer.so
  #    in a load path directory (a platform gem's lib/, from `rake native:gem`;
  #    a build installed under RUBYLIB) or next to this file;
  # 2. `rake compile`'s, next to this file (a source checkout);
  # 3. the one `gem install` compiled from source, in the gem's extension
  #    directory (on the load path).
  #
  # A file that exists but fails to load (e.g. a C library too old) raises
  # its own LoadError: it is never hidden by a fallback.
  module Extension
    NAME = "gitlab_gcs_signer"
    DIR = __dir__ # lib/gitlab_gcs_signer/

    module_function

    def load
      path = candidates.find { |file| File.file?(file) }
      return require(path) if path

      begin
        require "#{NAME}/#{NAME}"
      rescue LoadError => e
        raise LoadError, missing_message(e)
      end
    end

    # "3.3" for Ruby 3.3.x.
    def ruby_minor(version = RUBY_VERSION)
      version[/\A\d+\.\d+/]
    end

    def candidates
      file = "#{NAME}.#{RbConfig::CONFIG['DLEXT']}"
      by_minor = ($LOAD_PATH.map(&:to_s) + [File.dirname(DIR)]).map { |dir| File.join(dir, NAME, ruby_minor, file) }
      by_minor + [File.join(DIR, file)]
    end

    # Minor versions a platform gem has extensions for.
    def prebuilt_minors
      Dir[File.join(DIR, "*", "#{NAME}.#{RbConfig::CONFIG['DLEXT']}")].map { |f| File.basename(File.dirname(f)) }.sort
    end

    def missing_message(error)
      prebuilt = prebuilt_minors
      if prebuilt.empty?
        "gitlab-gcs-signer: the native extension is not built (#{error.message}); " \
          "run `rake compile` in a source checkout, or reinstall the gem"
      else
        "gitlab-gcs-signer: this platform gem has prebuilt extensions for Ruby #{prebuilt.join(', ')}, " \
          "not #{ruby_minor}; install the source gem instead (gem install gitlab-gcs-signer --platform ruby)"
      end
    end
  end
end
