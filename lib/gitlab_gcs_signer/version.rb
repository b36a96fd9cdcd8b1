# frozen_string_literal: true

module GitlabGcsSigner
  VERSION = "0.1.0"
end
