# frozen_string_literal: true

# Facts are cited where a reader can follow them: every docs/facts.md#anchor
# named in the repository exists, and nothing cites a document that is not
# in it.
RSpec.describe "citations" do
  root = File.expand_path("../..", __dir__)
  files = Dir.chdir(root) do
    Dir["{src,ext,lib,spec,tests,bench,docs,exe,script,rakelib,testing}/**/*.{rs,rb,md,toml}"] +
      Dir["*.{md,toml,gemspec}"] + ["Rakefile"]
  end
  texts = (files - ["spec/docs/citations_spec.rb"]).to_h { |f| [f, File.read(File.join(root, f))] }
  facts = File.read(File.join(root, "docs/facts.md"))
  anchors = facts.scan(/<a id="([^"]+)"><\/a>/).flatten

  it "has a stable anchor for each section of docs/facts.md" do
    expect(anchors.size).to eq(facts.scan(/^## /).size)
    expect(anchors.uniq).to eq(anchors)
  end

  it "cites only anchors that exist" do
    cited = texts.flat_map do |file, text|
      # `docs/facts.md#a, #b` cites a and b.
      text.scan(%r{(?:docs/)?facts\.md((?:#[a-z0-9-]+(?:,? (?:and )?)?)+)}).flatten.flat_map do |list|
        list.scan(/#([a-z0-9-]+)/).flatten.map { |anchor| [file, anchor] }
      end
    end
    expect(cited.size).to be > 40
    missing = cited.reject { |_, anchor| anchors.include?(anchor) }
    expect(missing).to be_empty
  end

  it "cites no document outside the repository" do
    offenders = texts.select { |_, text| text.match?(/field[ -]notes/i) }
    expect(offenders.keys).to be_empty
  end
end
