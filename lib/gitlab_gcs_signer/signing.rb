# frozen_string_literal: true

module GitlabGcsSigner
  # Signing one URL, start to finish, in one place:
  #
  #   1. lookup        the native signer's local cache; a hit ends here
  #   2. shared level  the SharedCache store, when the signer has one
  #   3. sign          a new signature (the local key, or one signBlob call
  #                    that concurrent identical misses share natively)
  #   4. store         into the local cache (natively) and the shared level
  #
  # Without a shared level, steps 1, 3 and 4 are one native call.
  #
  # This module knows nothing of logging, stats or ActiveSupport. It emits
  # two events per call to its subscriber, which acts on them (the gem's
  # Observability subscribes when it is loaded, observability.rb):
  #
  #   call_started(what, request) -> a value handed back to call_finished
  #                                  (nil when the subscriber needs none)
  #   call_finished(started, what, request, status, error, stale = nil)
  #
  # +what+ is :sign_url (+request+ Signer#signed_url's keywords, or the fog
  # shim's positional form of them: Signing.keywords turns either into the
  # keyword Hash) or a String
  # naming another signer call ("signBlob", ...; +request+ nil); +status+ is
  # :hit, :shared_hit, :miss or :stale (a stale-if-error answer; +stale+ is
  # then [seconds_left, error_kind]), or nil when the call failed before
  # reaching the signer (rejected arguments); +error+ is the exception
  # raised, if any.
  # A cache hit that call_started returned nil for is not reported at all:
  # the hit path stays one native call.
  module Signing
    @subscriber = nil

    class << self
      attr_accessor :subscriber

      # The URL for +request+, Signer#signed_url's keyword Hash or its
      # positional form (converted and checked natively, once).
      def signed_url(native, request, shared)
        started = @subscriber&.call_started(:sign_url, request)
        unless shared || started
          # The cache-hit path: one native call, and no event for a hit.
          begin
            # [url, :hit | :miss] or [url, :stale, seconds_left, error_kind]
            url, status, *stale = native.signed_url_with_status(request) # steps 1, 3 and 4
          rescue Exception => e # any exception: reported, then re-raised
            @subscriber&.call_finished(nil, :sign_url, request, e.is_a?(Error) ? :miss : nil, e)
            raise
          end
          @subscriber&.call_finished(nil, :sign_url, request, status, nil, stale.empty? ? nil : stale) unless status == :hit
          return url
        end

        begin
          if shared
            found = native.lookup(request) # step 1
            if found.is_a?(String)
              url = found
              status = :hit
            else
              url, status, *stale = shared.fetch_or_sign(native, found) # steps 2 to 4
            end
          else
            url, status, *stale = native.signed_url_with_status(request)
          end
        rescue Exception => e # any exception: reported, then re-raised
          @subscriber&.call_finished(started, :sign_url, request, e.is_a?(Error) ? :miss : nil, e)
          raise
        end
        @subscriber&.call_finished(started, :sign_url, request, status, nil, stale.nil? || stale.empty? ? nil : stale)
        url
      end

      # Signer#signed_url's keywords for +request+: a keyword Hash as it is;
      # the fog shim's positional form (an Array in Native::REQUEST_KEYS
      # order, nil meaning "not given", built instead of a Hash on the
      # cache-hit path) as the Hash it stands for.
      def keywords(request)
        return request unless request.is_a?(Array)

        Native::REQUEST_KEYS.zip(request).reject { |key, value| value.nil? && key != :object }.to_h
      end

      # Any other signer call that never hits a cache (signBlob, the email
      # lookup, a string to sign): runs the block and reports it as a miss.
      def call(what)
        begin
          result = yield
        rescue Exception => e # any exception: reported, then re-raised
          @subscriber&.call_finished(nil, what, nil, e.is_a?(Error) ? :miss : nil, e)
          raise
        end
        @subscriber&.call_finished(nil, what, nil, :miss, nil)
        result
      end
    end
  end
end
