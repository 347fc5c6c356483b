//! DOCX (Office Open XML word processing): `word/document.xml` read with quick-xml in body
//! order. Paragraph styles whose name is `heading N` (or that set an outline level, in
//! `word/styles.xml` or on the paragraph) start sections; the `Title` style titles the
//! document when its core properties do not; numbered and bulleted paragraphs become `- `
//! lines; tables become ` | `-separated rows; footnotes and endnotes are marked `[n]` where
//! they are cited and written at the end. Only run text (`w:t`) is read, so field codes,
//! deleted revisions and the fallback copies of text boxes stay out. `docProps/core.xml` gives
//! the metadata (title, creator, subject, keywords, dates).

use std::collections::HashMap;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use rag_core::parse::{DocumentParser, ParseError, Parsed, RawFile};

use crate::builder::DocBuilder;
use crate::package::{Package, attr, core_properties, malformed};

/// The DOCX parser (`.docx`; a zip holding `word/document.xml`).
#[derive(Debug, Clone, Copy, Default)]
pub struct DocxParser;

impl DocumentParser for DocxParser {
    fn format(&self) -> &str {
        "docx"
    }

    fn extensions(&self) -> &[&str] {
        &["docx", "docm", "dotx"]
    }

    fn sniff(&self, data: &[u8]) -> bool {
        data.starts_with(b"PK\x03\x04")
            && data
                .windows(b"word/document.xml".len())
                .any(|w| w == b"word/document.xml")
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        let mut zip = Package::open(file.data, "DOCX")?;
        let document = zip
            .part("word/document.xml")?
            .ok_or_else(|| ParseError::new("not a DOCX: no word/document.xml in the archive"))?;
        let styles = match zip.part("word/styles.xml")? {
            Some(xml) => heading_styles(&xml)?,
            None => HashMap::new(),
        };
        let mut notes = Vec::new();
        for (name, kind) in [
            ("word/footnotes.xml", "footnote"),
            ("word/endnotes.xml", "endnote"),
        ] {
            if let Some(xml) = zip.part(name)? {
                notes.extend(read_notes(&xml, kind)?);
            }
        }
        let metadata = match zip.part("docProps/core.xml")? {
            Some(xml) => core_properties(&xml, "DOCX")?,
            None => Default::default(),
        };
        let mut body = Body::new(&styles);
        body.read(&document)?;
        let Body {
            mut out,
            title_text,
            ..
        } = body;
        if !notes.is_empty() {
            out.block_break();
            for (id, text) in notes {
                out.line_break();
                out.raw(&format!("[{id}] "));
                out.words(&text);
            }
        }
        let title = metadata
            .get("title")
            .cloned()
            .or(title_text)
            .or_else(|| out.first_heading().map(str::to_string))
            .unwrap_or_default();
        let mut doc = out.finish(file.document(title, ""));
        doc.metadata = metadata;
        Ok(Parsed::documents([doc]))
    }
}

fn xml_error(e: impl std::fmt::Display) -> ParseError {
    malformed("DOCX", e)
}

/// Heading level by paragraph style id: a style named `heading N` is level N, one with an
/// outline level L is level L + 1; `Title` is level 0 (the document's title).
fn heading_styles(xml: &str) -> Result<HashMap<String, u8>, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut styles = HashMap::new();
    let mut current: Option<String> = None;
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) | Event::Empty(e) => match e.local_name().as_ref() {
                b"style" => current = attr(&e, "w:styleId"),
                b"name" => {
                    if let (Some(id), Some(name)) = (&current, attr(&e, "w:val")) {
                        let name = name.to_ascii_lowercase();
                        let level = match name.strip_prefix("heading ") {
                            Some(n) => n.trim().parse::<u8>().ok(),
                            None => (name == "title").then_some(0),
                        };
                        if let Some(level) = level {
                            styles.insert(id.clone(), level);
                        }
                    }
                }
                b"outlineLvl" => {
                    if let (Some(id), Some(l)) = (&current, attr(&e, "w:val"))
                        && let Ok(l) = l.parse::<u8>()
                        && l < 9
                    {
                        styles.entry(id.clone()).or_insert(l + 1);
                    }
                }
                _ => {}
            },
            Event::End(e) if e.local_name().as_ref() == b"style" => current = None,
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(styles)
}

/// Footnotes or endnotes: (marker, text), separators left out.
fn read_notes(xml: &str, kind: &str) -> Result<Vec<(String, String)>, ParseError> {
    let mut reader = Reader::from_str(xml);
    let mut notes = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut in_t = false;
    loop {
        match reader.read_event().map_err(xml_error)? {
            Event::Start(e) => match e.local_name().as_ref() {
                n if n == kind.as_bytes() => {
                    let separator = attr(&e, "w:type").is_some_and(|t| t != "normal");
                    current =
                        (!separator).then(|| (attr(&e, "w:id").unwrap_or_default(), String::new()));
                }
                b"t" => in_t = true,
                b"p" => {
                    if let Some((_, t)) = current.as_mut()
                        && !t.is_empty()
                    {
                        t.push(' ');
                    }
                }
                _ => {}
            },
            Event::End(e) => match e.local_name().as_ref() {
                n if n == kind.as_bytes() => {
                    if let Some((id, text)) = current.take()
                        && !text.trim().is_empty()
                    {
                        notes.push((id, text));
                    }
                }
                b"t" => in_t = false,
                _ => {}
            },
            Event::Text(t) if in_t => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&t.unescape().map_err(xml_error)?);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(notes)
}

/// A table being read: finished rows, and the row and cell in progress.
#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
}

/// The body walk.
struct Body<'s> {
    styles: &'s HashMap<String, u8>,
    out: DocBuilder,
    /// The first `Title`-style paragraph.
    title_text: Option<String>,
    // The paragraph in progress.
    text: String,
    level: Option<u8>,
    list: bool,
    in_t: bool,
    /// Inside `mc:Fallback` (a second copy of alternate content): ignored.
    fallback: usize,
    tables: Vec<Table>,
    /// The previous paragraph was a list item (consecutive items form one block).
    after_item: bool,
}

impl<'s> Body<'s> {
    fn new(styles: &'s HashMap<String, u8>) -> Self {
        Self {
            styles,
            out: DocBuilder::new(),
            title_text: None,
            text: String::new(),
            level: None,
            list: false,
            in_t: false,
            fallback: 0,
            tables: Vec::new(),
            after_item: false,
        }
    }

    fn read(&mut self, xml: &str) -> Result<(), ParseError> {
        let mut reader = Reader::from_str(xml);
        loop {
            let event = reader.read_event().map_err(xml_error)?;
            if self.fallback > 0 {
                match &event {
                    Event::Start(e) if e.local_name().as_ref() == b"Fallback" => self.fallback += 1,
                    Event::End(e) if e.local_name().as_ref() == b"Fallback" => self.fallback -= 1,
                    Event::Eof => break,
                    _ => {}
                }
                continue;
            }
            match event {
                Event::Start(e) => self.open(&e, false),
                Event::Empty(e) => self.open(&e, true),
                Event::End(e) => self.close(e.local_name().as_ref()),
                Event::Text(t) if self.in_t => {
                    self.text.push_str(&t.unescape().map_err(xml_error)?);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(())
    }

    fn open(&mut self, e: &BytesStart<'_>, empty: bool) {
        match e.local_name().as_ref() {
            b"p" => {
                self.text.clear();
                self.level = None;
                self.list = false;
            }
            b"pStyle" => {
                if let Some(level) = attr(e, "w:val").and_then(|s| self.styles.get(&s).copied()) {
                    self.level = Some(level);
                }
            }
            b"outlineLvl" => {
                if let Some(l) = attr(e, "w:val").and_then(|l| l.parse::<u8>().ok())
                    && l < 9
                {
                    self.level = Some(l + 1);
                }
            }
            b"numPr" => self.list = true,
            b"t" if !empty => self.in_t = true,
            b"tab" => self.text.push('\t'),
            b"br" | b"cr" => self.text.push('\n'),
            b"noBreakHyphen" => self.text.push('-'),
            b"footnoteReference" | b"endnoteReference" => {
                if let Some(id) = attr(e, "w:id") {
                    self.text.push_str(&format!("[{id}]"));
                }
            }
            b"Fallback" if !empty => self.fallback = 1,
            b"tbl" if !empty => self.tables.push(Table::default()),
            _ => {}
        }
    }

    fn close(&mut self, name: &[u8]) {
        match name {
            b"t" => self.in_t = false,
            b"p" => self.paragraph(),
            b"tc" => {
                if let Some(t) = self.tables.last_mut() {
                    let cell = std::mem::take(&mut t.cell);
                    t.row
                        .push(cell.split_whitespace().collect::<Vec<_>>().join(" "));
                }
            }
            b"tr" => {
                if let Some(t) = self.tables.last_mut() {
                    let row = std::mem::take(&mut t.row);
                    t.rows.push(row);
                }
            }
            b"tbl" => {
                let Some(table) = self.tables.pop() else {
                    return;
                };
                let lines: Vec<String> = table
                    .rows
                    .iter()
                    .map(|r| r.join(" | "))
                    .filter(|l| !l.trim().is_empty())
                    .collect();
                match self.tables.last_mut() {
                    // A table inside a cell: its rows become that cell's text.
                    Some(outer) => {
                        outer.cell.push(' ');
                        outer.cell.push_str(&lines.join(" "));
                    }
                    None => {
                        self.out.block_break();
                        for line in lines {
                            self.out.line_break();
                            self.out.raw(&line);
                        }
                        self.out.block_break();
                        self.after_item = false;
                    }
                }
            }
            _ => {}
        }
    }

    fn paragraph(&mut self) {
        let text = std::mem::take(&mut self.text);
        if let Some(t) = self.tables.last_mut() {
            if !t.cell.is_empty() {
                t.cell.push(' ');
            }
            t.cell.push_str(&text);
            return;
        }
        if text.trim().is_empty() {
            return;
        }
        match self.level {
            Some(0) => {
                if self.title_text.is_none() {
                    self.title_text = Some(text.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                self.out.block_break();
                self.out.words(&text);
                self.out.block_break();
                self.after_item = false;
            }
            Some(level) => {
                self.out.heading(level, &text);
                self.after_item = false;
            }
            None if self.list => {
                if !self.after_item {
                    self.out.block_break();
                }
                self.out.line_break();
                self.out.raw("- ");
                self.out.words(&text);
                self.out.line_break();
                self.after_item = true;
            }
            None => {
                self.out.block_break();
                for (i, line) in text.split('\n').enumerate() {
                    if i > 0 {
                        self.out.line_break();
                    }
                    self.out.words(line);
                }
                self.out.block_break();
                self.after_item = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = r#"xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main""#;

    #[test]
    fn headings_lists_tables_notes_and_properties() {
        let styles = format!(
            r#"<w:styles {W}><w:style w:type="paragraph" w:styleId="Heading1"><w:name w:val="heading 1"/></w:style>
            <w:style w:type="paragraph" w:styleId="Berschrift2"><w:name w:val="Heading 2"/></w:style>
            <w:style w:type="paragraph" w:styleId="Title"><w:name w:val="Title"/></w:style></w:styles>"#
        );
        let body = format!(
            r#"<w:document {W}><w:body>
            <w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>The Manual</w:t></w:r></w:p>
            <w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Install</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">Run </w:t></w:r><w:r><w:instrText>PAGE</w:instrText><w:t>make &amp; wait</w:t></w:r><w:r><w:footnoteReference w:id="1"/></w:r></w:p>
            <w:p><w:pPr><w:pStyle w:val="Berschrift2"/></w:pPr><w:r><w:t>Linux</w:t></w:r></w:p>
            <w:p><w:pPr><w:numPr><w:ilvl w:val="0"/></w:numPr></w:pPr><w:r><w:t>one</w:t></w:r></w:p>
            <w:p><w:pPr><w:numPr><w:ilvl w:val="0"/></w:numPr></w:pPr><w:r><w:t>two</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>Flag</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>Meaning</w:t></w:r></w:p></w:tc></w:tr>
            <w:tr><w:tc><w:p><w:r><w:t>-v</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>verbose</w:t></w:r></w:p><w:p><w:r><w:t>output</w:t></w:r></w:p></w:tc></w:tr></w:tbl>
            <w:p><w:r><w:delText>gone</w:delText><w:t>End.</w:t></w:r></w:p>
            </w:body></w:document>"#
        );
        let notes = format!(
            r#"<w:footnotes {W}><w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:t>---</w:t></w:r></w:p></w:footnote>
            <w:footnote w:id="1"><w:p><w:r><w:t>See the README.</w:t></w:r></w:p></w:footnote></w:footnotes>"#
        );
        let core = r#"<cp:coreProperties xmlns:cp="x" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Ann</dc:creator></cp:coreProperties>"#;
        let data = crate::testing::docx(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", &body),
            ("word/styles.xml", &styles),
            ("word/footnotes.xml", &notes),
            ("docProps/core.xml", core),
        ]);
        assert!(DocxParser.sniff(&data));
        let file = RawFile {
            name: "m.docx",
            source: "s/m.docx",
            data: &data,
        };
        let d = DocxParser.parse(&file).unwrap().documents.remove(0);
        assert_eq!(d.title, "The Manual");
        assert_eq!(d.metadata["author"], "Ann");
        assert_eq!(
            d.text,
            "The Manual\n\nInstall\n\nRun make & wait[1]\n\nLinux\n\n- one\n- two\n\nFlag | Meaning\n-v | verbose output\n\nEnd.\n\n[1] See the README."
        );
        let paths: Vec<_> = d.sections.iter().map(|s| s.path.join(" > ")).collect();
        assert_eq!(paths, ["Install", "Install > Linux"]);
    }

    #[test]
    fn broken_archives_are_typed_reasons() {
        let file = |data: &'static [u8]| RawFile {
            name: "x.docx",
            source: "s",
            data,
        };
        let e = DocxParser
            .parse(&file(b"PK\x03\x04 truncated"))
            .unwrap_err();
        assert!(e.reason.contains("zip archive is unreadable"), "{e}");
        let data = Box::leak(crate::testing::docx(&[("a.txt", "x")]).into_boxed_slice());
        let e = DocxParser.parse(&file(data)).unwrap_err();
        assert!(e.reason.contains("no word/document.xml"), "{e}");
        let data = Box::leak(
            crate::testing::docx(&[("word/document.xml", "<w:document><w:body></oops>")])
                .into_boxed_slice(),
        );
        let e = DocxParser.parse(&file(data)).unwrap_err();
        assert!(e.reason.contains("malformed"), "{e}");
    }
}
