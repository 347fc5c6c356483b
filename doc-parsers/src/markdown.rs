//! Markdown (CommonMark with GitHub tables, footnotes, strikethrough and task lists), parsed
//! with pulldown-cmark: headings (ATX and setext) start sections, code blocks stay verbatim,
//! list items become `- ` lines, table rows ` | `-separated lines; inline markup is dropped
//! and its text kept (link text, image alt text). A YAML front-matter block of `key: value`
//! lines becomes the document's metadata (`title:` titles it; else the first heading does).

use pulldown_cmark::{Event, MetadataBlockKind, Options, Parser, Tag, TagEnd};
use rag_core::parse::{DocumentParser, ParseError, Parsed, RawFile};

use crate::builder::DocBuilder;

/// The Markdown parser (`.md`, `.markdown`, `.mdown`, `.mkd`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkdownParser;

impl DocumentParser for MarkdownParser {
    fn format(&self) -> &str {
        "markdown"
    }

    fn extensions(&self) -> &[&str] {
        &["md", "markdown", "mdown", "mkd"]
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        let source = file.utf8()?;
        let options = Options::ENABLE_TABLES
            | Options::ENABLE_FOOTNOTES
            | Options::ENABLE_STRIKETHROUGH
            | Options::ENABLE_TASKLISTS
            | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS;
        let mut out = DocBuilder::new();
        let mut metadata = std::collections::BTreeMap::new();
        // Open headings collect their text; `lists` numbers ordered items.
        let mut heading: Option<(u8, String)> = None;
        let mut lists: Vec<Option<u64>> = Vec::new();
        let mut in_meta = false;
        let mut in_code = false;
        let mut in_comment = false;
        let mut cells = 0usize;
        for event in Parser::new_ext(source, options) {
            if let Some((_, text)) = heading.as_mut() {
                match event {
                    Event::End(TagEnd::Heading(_)) => {
                        let (level, text) = heading.take().expect("open heading");
                        out.heading(level, &text);
                    }
                    Event::Text(t) | Event::Code(t) => text.push_str(&t),
                    Event::SoftBreak | Event::HardBreak => text.push(' '),
                    _ => {}
                }
                continue;
            }
            match event {
                Event::Start(Tag::Heading { level, .. }) => {
                    heading = Some((level as u8, String::new()));
                }
                Event::Start(Tag::MetadataBlock(MetadataBlockKind::YamlStyle)) => in_meta = true,
                Event::End(TagEnd::MetadataBlock(_)) => in_meta = false,
                Event::Text(t) if in_meta => metadata.extend(front_matter(&t)),
                Event::Start(Tag::CodeBlock(_)) => {
                    out.block_break();
                    in_code = true;
                }
                Event::End(TagEnd::CodeBlock) => {
                    in_code = false;
                    out.block_break();
                }
                Event::Text(t) if in_code => out.verbatim(&t),
                Event::Text(t) => out.words(&t),
                Event::Code(t) => out.words(&t),
                Event::Start(Tag::Paragraph)
                | Event::Start(Tag::BlockQuote(_))
                | Event::Start(Tag::Table(_))
                | Event::Start(Tag::FootnoteDefinition(_))
                | Event::Start(Tag::HtmlBlock)
                | Event::Start(Tag::DefinitionList) => out.block_break(),
                Event::End(TagEnd::Paragraph)
                | Event::End(TagEnd::BlockQuote(_))
                | Event::End(TagEnd::Table)
                | Event::End(TagEnd::FootnoteDefinition)
                | Event::End(TagEnd::HtmlBlock)
                | Event::End(TagEnd::DefinitionList) => out.block_break(),
                Event::Start(Tag::List(first)) => {
                    out.block_break();
                    lists.push(first);
                }
                Event::End(TagEnd::List(_)) => {
                    lists.pop();
                    out.block_break();
                }
                Event::Start(Tag::Item) => {
                    out.line_break();
                    let indent = "  ".repeat(lists.len().saturating_sub(1));
                    match lists.last_mut() {
                        Some(Some(n)) => {
                            out.raw(&format!("{indent}{n}. "));
                            *n += 1;
                        }
                        _ => out.raw(&format!("{indent}- ")),
                    }
                }
                Event::End(TagEnd::Item) => out.line_break(),
                Event::TaskListMarker(done) => out.raw(if done { "[x] " } else { "[ ] " }),
                Event::Start(Tag::TableHead) | Event::Start(Tag::TableRow) => {
                    out.line_break();
                    cells = 0;
                }
                Event::End(TagEnd::TableHead) | Event::End(TagEnd::TableRow) => out.line_break(),
                Event::Start(Tag::TableCell) => {
                    if cells > 0 {
                        out.raw(" | ");
                    }
                    cells += 1;
                }
                Event::Start(Tag::DefinitionListTitle)
                | Event::Start(Tag::DefinitionListDefinition) => out.line_break(),
                Event::SoftBreak => out.words(" "),
                Event::HardBreak => out.line_break(),
                Event::Rule => out.block_break(),
                Event::FootnoteReference(label) => out.words(&format!("[{label}]")),
                Event::Html(h) | Event::InlineHtml(h) => {
                    out.words(&strip_tags(&h, &mut in_comment))
                }
                Event::InlineMath(m) | Event::DisplayMath(m) => out.words(&m),
                _ => {}
            }
        }
        let title = metadata
            .get("title")
            .cloned()
            .or_else(|| out.first_heading().map(str::to_string))
            .unwrap_or_default();
        let mut doc = out.finish(file.document(title, ""));
        doc.metadata = metadata;
        Ok(Parsed::documents([doc]))
    }
}

/// `key: value` lines of a front-matter block (nested YAML is left out; quotes removed).
fn front_matter(block: &str) -> Vec<(String, String)> {
    block
        .lines()
        .filter(|l| !l.starts_with([' ', '\t', '-', '#']))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .collect()
}

/// The text of an HTML fragment with its tags and comments removed. A comment may span
/// several fragments (pulldown-cmark gives an HTML block line by line): `in_comment` carries
/// that state from one call to the next.
fn strip_tags(html: &str, in_comment: &mut bool) -> String {
    let mut out = String::new();
    let mut rest = html;
    loop {
        if *in_comment {
            match rest.find("-->") {
                Some(i) => {
                    rest = &rest[i + 3..];
                    *in_comment = false;
                }
                None => return out,
            }
        }
        let Some(open) = rest.find('<') else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..open]);
        out.push(' ');
        let after = &rest[open..];
        if let Some(comment) = after.strip_prefix("<!--") {
            *in_comment = true;
            rest = comment;
            continue;
        }
        match after.find('>') {
            Some(c) => rest = &after[c + 1..],
            None => return out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(md: &str) -> rag_core::chunk::Document {
        let file = RawFile {
            name: "wiki/page.md",
            source: "s/wiki/page.md",
            data: md.as_bytes(),
        };
        MarkdownParser.parse(&file).unwrap().documents.remove(0)
    }

    #[test]
    fn headings_code_lists_tables_and_front_matter() {
        let d = parse(
            "---\ntitle: \"The Wiki\"\nauthor: me\ntags:\n  - a\n---\n\n# Setup\n\nRun *this*\nnow [link](http://x).\n\n## Build\n\n```sh\nmake   all\n  indented\n```\n\n- one\n- two\n  1. nested\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nSetext\n======\n\nend<br>here <!-- note -->\n\n<!-- a comment\nover lines -->\n",
        );
        assert_eq!(d.title, "The Wiki");
        assert_eq!(d.metadata["author"], "me");
        assert!(!d.metadata.contains_key("tags"));
        assert_eq!(
            d.text,
            "Setup\n\nRun this now link.\n\nBuild\n\nmake   all\n  indented\n\n- one\n- two\n\n  1. nested\n\na | b\n1 | 2\n\nSetext\n\nend here"
        );
        let paths: Vec<_> = d.sections.iter().map(|s| s.path.join(" > ")).collect();
        assert_eq!(paths, ["Setup", "Setup > Build", "Setext"]);
        assert_eq!(d.id, "wiki/page.md");
    }

    #[test]
    fn a_page_without_front_matter_is_titled_by_its_first_heading() {
        let d = parse("Intro text.\n\n# First\n\nBody");
        assert_eq!(d.title, "First");
        assert_eq!(d.section_at(0), [] as [String; 0]);
    }
}
