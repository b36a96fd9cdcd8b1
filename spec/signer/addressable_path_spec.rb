# frozen_string_literal: true

require "addressable/uri"

# v2_path: :addressable is fog-google >= 1.21's V2 path encoding
# (Addressable::URI.encode_component with CharacterClasses::PATH), done
# natively so the fog shim's cache hit does not run Addressable: the same
# bytes as Addressable itself for every printable ASCII character, `%`,
# and multi-byte UTF-8.
RSpec.describe "signed_url(v2_path: :addressable)" do
  let(:signer) { GitlabGcsSigner::Signer.new(credentials: CONFORMANCE_KEY) }

  def path_of(url)
    url[%r{\Ahttps://storage\.googleapis\.com/([^?]*)\?}, 1]
  end

  it "encodes the path exactly as Addressable does" do
    names = (0x20..0x7e).map { |c| "o#{c.chr}x" } + ["ä b/日本.png", "100%/a", "a//b", "@hashed/6b/86/x+y=z;(1),!$&'*:@~"]
    names.each do |object|
      url = signer.signed_url(version: :v2, bucket: "bucket", object: object, expires_in: 600, v2_path: :addressable)
      expected = Addressable::URI.encode_component("bucket/#{object}", Addressable::URI::CharacterClasses::PATH)
      expect(path_of(url)).to eq(expected), object.inspect
    end
  end

  it "is part of the cache key: the same object with fog-google 1.15's encoding is another URL" do
    a = signer.signed_url(version: :v2, bucket: "b", object: "x@y", expires_in: 600, v2_path: :addressable)
    b = signer.signed_url(version: :v2, bucket: "b", object: "x@y", expires_in: 600)
    expect([path_of(a), path_of(b)]).to eq(["b/x@y", "b/x%40y"])
  end
end
