# frozen_string_literal: true

require "digest"

module GitlabGcsSigner
  module Emulator
    # In-memory objects keyed by bucket and (decoded) object name.
    class ObjectStore
      StoredObject = Struct.new(:bucket, :name, :body, :content_type, :md5, keyword_init: true) do
        def etag
          %("#{md5}")
        end

        def summary
          { "bucket" => bucket, "name" => name, "size" => body.bytesize, "content_type" => content_type, "md5" => md5 }
        end
      end

      def initialize
        @mutex = Mutex.new
        @objects = {}
      end

      def put(bucket, name, body, content_type)
        object = StoredObject.new(bucket: bucket, name: name, body: body.b.freeze,
                                  content_type: content_type || "application/octet-stream",
                                  md5: Digest::MD5.hexdigest(body))
        @mutex.synchronize { @objects[[bucket, name]] = object }
      end

      def get(bucket, name)
        @mutex.synchronize { @objects[[bucket, name]] }
      end

      def delete(bucket, name)
        @mutex.synchronize { @objects.delete([bucket, name]) }
      end

      def list(bucket = nil)
        @mutex.synchronize { @objects.values }.select { |object| bucket.nil? || object.bucket == bucket }
                                              .sort_by { |object| [object.bucket, object.name] }
      end

      def clear
        @mutex.synchronize { @objects.clear }
      end
    end
  end
end
