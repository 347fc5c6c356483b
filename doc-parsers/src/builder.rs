//! Text with structure, written in reading order: every parser emits blocks, headings and pages
//! through a [`DocBuilder`], which keeps byte offsets of sections and pages exact and the
//! whitespace the chunker expects (a blank line between blocks, one space between words).

use rag_core::chunk::{Document, Section};

/// Builds a document's text, its sections and its pages.
#[derive(Debug, Default)]
pub(crate) struct DocBuilder {
    text: String,
    sections: Vec<Section>,
    /// The open headings: (level, text), outermost first.
    open: Vec<(u8, String)>,
    pages: Vec<usize>,
    /// A space is owed before the next word (collapsed whitespace).
    space: bool,
}

impl DocBuilder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends inline text, collapsing runs of whitespace to one space; no space starts a line.
    pub(crate) fn words(&mut self, s: &str) {
        for (i, part) in s.split(char::is_whitespace).enumerate() {
            if i > 0 {
                self.space = true;
            }
            if part.is_empty() {
                continue;
            }
            if self.space && !self.text.is_empty() && !self.text.ends_with(['\n', ' ', '\t']) {
                self.text.push(' ');
            }
            self.space = false;
            self.text.push_str(part);
        }
    }

    /// Appends text as it is (code, preformatted blocks), trailing spaces of lines dropped.
    pub(crate) fn verbatim(&mut self, s: &str) {
        self.space = false;
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.trim_end_spaces();
                self.text.push('\n');
            }
            self.text.push_str(line.trim_end_matches('\r'));
        }
    }

    /// Appends literal separator text (`" | "` between table cells, `"- "` before an item).
    pub(crate) fn raw(&mut self, s: &str) {
        self.space = false;
        self.text.push_str(s);
    }

    fn trim_end_spaces(&mut self) {
        let keep = self.text.trim_end_matches([' ', '\t']).len();
        self.text.truncate(keep);
    }

    /// Ends the line (a `<br>`, a list item, a table row).
    pub(crate) fn line_break(&mut self) {
        self.space = false;
        self.trim_end_spaces();
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
        }
    }

    /// Ends the block: the next text starts after a blank line.
    pub(crate) fn block_break(&mut self) {
        self.line_break();
        if !self.text.is_empty() && !self.text.ends_with("\n\n") {
            self.text.push('\n');
        }
    }

    /// Whether nothing but whitespace has been written since `offset`.
    pub(crate) fn empty_since(&self, offset: usize) -> bool {
        self.text[offset..].trim().is_empty()
    }

    /// The current length of the text.
    pub(crate) fn len(&self) -> usize {
        self.text.len()
    }

    /// A heading of `level` (1 outermost): closes headings at its level and below, starts a
    /// section whose path is the open headings, and writes the heading as its own block.
    pub(crate) fn heading(&mut self, level: u8, title: &str) {
        let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
        if title.is_empty() {
            return;
        }
        self.block_break();
        self.open.retain(|(l, _)| *l < level);
        self.open.push((level, title.clone()));
        self.sections.push(Section {
            start: self.text.len(),
            path: self.open.iter().map(|(_, t)| t.clone()).collect(),
        });
        self.text.push_str(&title);
        self.block_break();
    }

    /// Ends every open heading: what follows belongs to no section (a slide without a
    /// title is not its predecessor's). Nothing when no section is open.
    pub(crate) fn untitled_section(&mut self) {
        if self.open.is_empty() {
            return;
        }
        self.block_break();
        self.open.clear();
        self.sections.push(Section {
            start: self.text.len(),
            path: Vec::new(),
        });
    }

    /// The first heading's text, if any (a title for documents without one).
    pub(crate) fn first_heading(&self) -> Option<&str> {
        self.sections
            .first()
            .and_then(|s| s.path.last())
            .map(String::as_str)
    }

    /// Starts a new page at the current position.
    pub(crate) fn page(&mut self) {
        self.block_break();
        self.pages.push(self.text.len());
    }

    /// The document: trailing whitespace dropped, sections and pages past the end removed.
    pub(crate) fn finish(mut self, mut doc: Document) -> Document {
        self.trim_end_spaces();
        let keep = self.text.trim_end().len();
        self.text.truncate(keep);
        let len = self.text.len();
        self.sections.retain(|s| s.start < len);
        // A page that starts at the very end holds nothing; drop trailing empty pages but keep
        // page 1 so that every offset has a page.
        while self.pages.len() > 1 && self.pages.last().is_some_and(|&p| p >= len) {
            self.pages.pop();
        }
        doc.text = self.text;
        doc.sections = self.sections;
        doc.pages = self.pages;
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_collapse_blocks_separate_and_headings_nest() {
        let mut b = DocBuilder::new();
        b.heading(1, "Guide");
        b.words("  hello\n  world ");
        b.words("again");
        b.heading(2, "Install");
        b.words("run make");
        b.heading(2, "Use");
        b.heading(3, "Flags");
        b.words("-v");
        b.heading(1, "Other");
        let d = b.finish(Document::new("d", "", "", ""));
        assert_eq!(
            d.text,
            "Guide\n\nhello world again\n\nInstall\n\nrun make\n\nUse\n\nFlags\n\n-v\n\nOther"
        );
        let paths: Vec<String> = d.sections.iter().map(|s| s.path.join(" > ")).collect();
        assert_eq!(
            paths,
            [
                "Guide",
                "Guide > Install",
                "Guide > Use",
                "Guide > Use > Flags",
                "Other"
            ]
        );
        for s in &d.sections {
            assert!(d.text[s.start..].starts_with(s.path.last().unwrap().as_str()));
        }
    }

    #[test]
    fn pages_mark_offsets() {
        let mut b = DocBuilder::new();
        b.page();
        b.words("one");
        b.page();
        b.words("two");
        b.page();
        let d = b.finish(Document::default());
        assert_eq!(d.text, "one\n\ntwo");
        assert_eq!(d.pages, [0, 5]);
        assert_eq!(d.page_at(6), Some(2));
    }
}
