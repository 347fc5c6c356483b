//! PDF: the text layer page by page (pdf-extract over lopdf, pure Rust), with page numbers,
//! words joined across line-end hyphens, the outline (bookmarks) as sections and the info
//! dictionary's title.
//!
//! Text comes in content-stream order, which for generated PDFs (TeX, office suites, browsers)
//! is reading order, two-column pages included; a PDF whose text was drawn out of order reads
//! as it was drawn. Skipped with the reason: a file that is not a readable PDF (truncated,
//! corrupt), one encrypted with a password, one with no text layer (scanned: OCR it first). A
//! page that fails alone is reported and the others are kept.

use pdf_extract::{Document as Pdf, MediaBox, Object, OutputDev, OutputError, Transform};
use rag_core::loader::Skipped;
use rag_core::parse::{DocumentParser, ParseError, Parsed, RawFile};

use crate::builder::DocBuilder;

/// The PDF parser (`.pdf`; content starting `%PDF-`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PdfParser;

impl DocumentParser for PdfParser {
    fn format(&self) -> &str {
        "pdf"
    }

    fn extensions(&self) -> &[&str] {
        &["pdf"]
    }

    fn sniff(&self, data: &[u8]) -> bool {
        // The header may follow a little junk (the spec allows it within the first 1024 bytes).
        data[..data.len().min(1024)]
            .windows(5)
            .any(|w| w == b"%PDF-")
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        if !self.sniff(file.data) {
            return Err(ParseError::new("not a PDF (no %PDF- header)"));
        }
        let mut pdf = Pdf::load_mem(file.data)
            .map_err(|e| ParseError::new(format!("not a readable PDF: {e}")))?;
        if pdf.is_encrypted() && pdf.decrypt("").is_err() {
            return Err(ParseError::new("encrypted PDF (it needs a password)"));
        }
        let pages: Vec<u32> = pdf.get_pages().keys().copied().collect();
        if pages.is_empty() {
            return Err(ParseError::new("PDF without pages"));
        }
        let mut out = DocBuilder::new();
        let mut skipped = Vec::new();
        let mut page_starts = Vec::with_capacity(pages.len());
        for &n in &pages {
            out.page();
            page_starts.push(out.len());
            match page_text(&pdf, n) {
                Ok(text) => write_page(&mut out, &text),
                Err(reason) => skipped.push(Skipped {
                    source: format!("{} p. {n}", file.source),
                    reason,
                }),
            }
        }
        if out.empty_since(0) {
            return Err(ParseError::new(
                "PDF without a text layer (scanned pages? run OCR first)",
            ));
        }
        // No /Title: the file's name (`bashref.pdf` → `bashref`) is better than nothing.
        let title = info_title(&pdf).unwrap_or_else(|| {
            let file = file.name.rsplit('/').next().unwrap_or(file.name);
            file.rsplit_once('.')
                .map_or(file, |(stem, _)| stem)
                .to_string()
        });
        let outline = outline(&pdf);
        let mut doc = out.finish(file.document(title, ""));
        doc.sections = sections_from_outline(&doc.text, &doc.pages, &outline);
        Ok(Parsed {
            documents: vec![doc],
            skipped,
        })
    }
}

/// One page's text, or why it could not be read (a panic in the extractor included).
fn page_text(pdf: &Pdf, page: u32) -> Result<String, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut output = Glyphs::default();
        pdf_extract::output_doc_page(pdf, &mut output, page).map(|()| output.text)
    }))
    .map_err(|_| "the PDF text extractor failed on this page".to_string())?
    .map_err(|e| format!("page not read: {e}"))
}

/// Text from positioned glyphs. pdf-extract's own plain-text device only looks for a gap at
/// the start of each text-showing operation, so words set apart by positioning inside one
/// operation (groff, many TeX PDFs) ran together (`ifthe`); this one measures the gap before
/// every glyph, as pdftotext does, and expands ligature glyphs (`ﬁ` → `fi`).
#[derive(Default)]
struct Glyphs {
    text: String,
    /// Page height, to put y downwards.
    height: f64,
    /// Where the previous glyph ended (x) and its baseline (y); `None` at a page's start.
    last: Option<(f64, f64)>,
}

/// A gap wider than this share of the font size is a space between words (pdftotext's rule
/// of thumb: 0.1; kerning stays far below it).
const WORD_GAP: f64 = 0.1;

impl OutputDev for Glyphs {
    fn begin_page(
        &mut self,
        _page: u32,
        media: &MediaBox,
        _art: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), OutputError> {
        self.height = media.ury - media.lly;
        self.last = None;
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        glyph: &str,
    ) -> Result<(), OutputError> {
        // The glyph's origin with y downwards, and the font size as drawn (the side of the
        // square with the area of the transformed em box).
        let (x, y) = (trm.m31, self.height - trm.m32);
        let sx = font_size * (trm.m11 + trm.m21);
        let sy = font_size * (trm.m12 + trm.m22);
        let size = (sx * sy).abs().sqrt().max(1e-6);
        if let Some((end, last_y)) = self.last {
            let dy = (y - last_y).abs();
            if dy > size * 1.5 {
                self.text.push_str("\n\n");
            } else if dy > size * 0.5 {
                self.text.push('\n');
            } else if x > end + size * WORD_GAP && !self.text.ends_with([' ', '\n']) {
                self.text.push(' ');
            }
        }
        push_glyph(&mut self.text, glyph);
        self.last = Some((x + width * size, y));
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Appends a glyph's text with Latin ligatures spelled out.
fn push_glyph(out: &mut String, glyph: &str) {
    for c in glyph.chars() {
        match c {
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            c => out.push(c),
        }
    }
}

/// Writes a page's lines: blank lines separate blocks, a word broken by a line-end hyphen
/// (`exam-` / `ple`) is joined.
fn write_page(out: &mut DocBuilder, text: &str) {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut carry = String::new();
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            if !carry.is_empty() {
                out.words(&std::mem::take(&mut carry));
            }
            out.block_break();
            continue;
        }
        let mut line = std::mem::take(&mut carry) + line;
        let next = lines.get(i + 1).copied().unwrap_or_default();
        if hyphen_joins(&line, next) {
            line.pop();
            carry = line;
            continue;
        }
        out.words(&line);
        out.line_break();
    }
    if !carry.is_empty() {
        out.words(&carry);
    }
}

/// Whether `line` ends in a hyphen that breaks a word continued by `next`: a lower-case letter
/// before it, a lower-case letter after (so `e-` / `mail` joins, `Foo-` / `Bar` and `-` lists
/// do not).
fn hyphen_joins(line: &str, next: &str) -> bool {
    let mut rev = line.chars().rev();
    rev.next() == Some('-')
        && rev.next().is_some_and(|c| c.is_lowercase())
        && next.chars().next().is_some_and(|c| c.is_lowercase())
}

/// The info dictionary's `/Title`, if set.
fn info_title(pdf: &Pdf) -> Option<String> {
    let info = match pdf.trailer.get(b"Info").ok()? {
        Object::Reference(id) => pdf.get_dictionary(*id).ok()?,
        Object::Dictionary(d) => d,
        _ => return None,
    };
    let title = match info.get(b"Title").ok()? {
        Object::String(bytes, _) => text_string(bytes),
        _ => return None,
    };
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}

/// A PDF text string: UTF-16BE with its byte-order mark, UTF-8 with one, else PDFDocEncoding
/// (read as Latin-1, which it equals for the printable range).
fn text_string(bytes: &[u8]) -> String {
    if let Some(be) = bytes.strip_prefix(b"\xFE\xFF") {
        let units: Vec<u16> = be
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else if let Some(utf8) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        String::from_utf8_lossy(utf8).into_owned()
    } else {
        bytes.iter().map(|&b| b as char).collect()
    }
}

/// An outline entry: depth (1 outermost), title, page number.
type OutlineEntry = (u8, String, u32);

/// The outline (bookmarks) in order, depth first; empty when there is none or it is broken.
fn outline(pdf: &Pdf) -> Vec<OutlineEntry> {
    let page_of: std::collections::HashMap<_, _> =
        pdf.get_pages().into_iter().map(|(n, id)| (id, n)).collect();
    let mut out = Vec::new();
    let first = pdf
        .catalog()
        .ok()
        .and_then(|c| c.get(b"Outlines").ok())
        .and_then(|o| o.as_reference().ok())
        .and_then(|id| pdf.get_dictionary(id).ok())
        .and_then(|d| d.get(b"First").ok())
        .and_then(|f| f.as_reference().ok());
    let mut stack = vec![(first, 1u8)];
    let mut seen = std::collections::HashSet::new();
    // Iterative walk over First/Next links; `seen` guards against cycles in broken files.
    while let Some((node, depth)) = stack.pop() {
        let Some(id) = node else { continue };
        if !seen.insert(id) || seen.len() > 100_000 {
            continue;
        }
        let Ok(item) = pdf.get_dictionary(id) else {
            continue;
        };
        let next = item.get(b"Next").ok().and_then(|n| n.as_reference().ok());
        let child = item.get(b"First").ok().and_then(|n| n.as_reference().ok());
        // Siblings after children: push Next first so the child is walked before it.
        stack.push((next, depth));
        stack.push((child, depth.saturating_add(1)));
        let title = match item.get(b"Title") {
            Ok(Object::String(b, _)) => text_string(b),
            _ => continue,
        };
        if let Some(page) = destination_page(pdf, item).and_then(|p| page_of.get(&p)) {
            out.push((depth, title, *page));
        }
    }
    out
}

/// The page object an outline item points at (`/Dest` array or name, or a GoTo `/A`).
fn destination_page(pdf: &Pdf, item: &pdf_extract::Dictionary) -> Option<pdf_extract::ObjectId> {
    let deref = |o: &Object| resolve(pdf, o);
    let dest = match item.get(b"Dest") {
        Ok(d) => deref(d)?,
        Err(_) => {
            let action = deref(item.get(b"A").ok()?)?;
            deref(action.as_dict().ok()?.get(b"D").ok()?)?
        }
    };
    let dest = match dest {
        Object::Array(a) => a,
        Object::Name(name) | Object::String(name, _) => named_destination(pdf, &name)?,
        _ => return None,
    };
    dest.first()?.as_reference().ok()
}

/// An object with one level of indirection followed (a reference becomes its target).
fn resolve(pdf: &Pdf, o: &Object) -> Option<Object> {
    match o {
        Object::Reference(id) => pdf.get_object(*id).ok().cloned(),
        other => Some(other.clone()),
    }
}

/// A named destination's array, from the catalog's `/Dests` dictionary or `/Names` tree.
fn named_destination(pdf: &Pdf, name: &[u8]) -> Option<Vec<Object>> {
    let catalog = pdf.catalog().ok()?;
    let resolve = |o: &Object| resolve(pdf, o);
    let as_array = |o: Object| -> Option<Vec<Object>> {
        match o {
            Object::Array(a) => Some(a),
            Object::Dictionary(d) => match resolve(d.get(b"D").ok()?)? {
                Object::Array(a) => Some(a),
                _ => None,
            },
            _ => None,
        }
    };
    if let Some(dests) = catalog.get(b"Dests").ok().and_then(&resolve)
        && let Ok(d) = dests.as_dict()
        && let Some(v) = d.get(name).ok().and_then(&resolve)
    {
        return as_array(v);
    }
    let names = resolve(catalog.get(b"Names").ok()?)?;
    let tree = resolve(names.as_dict().ok()?.get(b"Dests").ok()?)?;
    // Walk the name tree (Kids / Names pairs).
    let mut stack = vec![tree];
    let mut steps = 0;
    while let Some(node) = stack.pop() {
        steps += 1;
        if steps > 100_000 {
            return None;
        }
        let Ok(dict) = node.as_dict() else { continue };
        if let Ok(Object::Array(pairs)) = dict
            .get(b"Names")
            .map(|o| resolve(o).unwrap_or(Object::Null))
        {
            for pair in pairs.chunks(2) {
                if let [Object::String(key, _), value] = pair
                    && key.as_slice() == name
                {
                    return as_array(resolve(value)?);
                }
            }
        }
        if let Ok(Object::Array(kids)) = dict
            .get(b"Kids")
            .map(|o| resolve(o).unwrap_or(Object::Null))
        {
            stack.extend(kids.iter().filter_map(&resolve));
        }
    }
    None
}

/// Sections from outline entries: each starts where its title appears on its page (whitespace
/// and case ignored), else at the top of the page; entries out of text order are dropped.
fn sections_from_outline(
    text: &str,
    pages: &[usize],
    outline: &[OutlineEntry],
) -> Vec<rag_core::chunk::Section> {
    let mut sections: Vec<rag_core::chunk::Section> = Vec::new();
    let mut open: Vec<(u8, String)> = Vec::new();
    for (depth, title, page) in outline {
        let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
        if title.is_empty() {
            continue;
        }
        let Some(&page_start) = (*page as usize).checked_sub(1).and_then(|i| pages.get(i)) else {
            continue;
        };
        let page_end = pages.get(*page as usize).copied().unwrap_or(text.len());
        let last = sections.last().map(|s| s.start);
        let floor = last.unwrap_or(0).max(page_start);
        let start = match find_loose(&text[floor..page_end], &title) {
            Some(i) => floor + i,
            // Not found: the top of its page, unless a section already begins there or later.
            None if last.is_none_or(|l| l < page_start) => page_start,
            None => continue,
        };
        open.retain(|(d, _)| d < depth);
        open.push((*depth, title));
        let path = open.iter().map(|(_, t)| t.clone()).collect();
        match sections.last_mut() {
            // Two entries at one place: the deeper one names it.
            Some(last) if last.start == start => last.path = path,
            _ => sections.push(rag_core::chunk::Section { start, path }),
        }
    }
    sections
}

/// Byte offset in `hay` of the first occurrence of `needle`'s words, in order, separated by
/// any whitespace, compared case-insensitively; always on a character boundary.
fn find_loose(hay: &str, needle: &str) -> Option<usize> {
    let words: Vec<String> = needle.split_whitespace().map(str::to_lowercase).collect();
    let first = words.first()?;
    let lower = hay.to_lowercase();
    if lower.len() != hay.len() {
        // Lower-casing changed byte lengths (rare scripts): exact search only.
        return hay.find(needle);
    }
    let mut from = 0;
    while let Some(i) = lower[from..].find(first.as_str()) {
        let at = from + i;
        let mut pos = at + first.len();
        let ok = words[1..].iter().all(|w| {
            let rest = &lower[pos..];
            let skipped = rest.len() - rest.trim_start().len();
            if skipped == 0 || !rest[skipped..].starts_with(w.as_str()) {
                return false;
            }
            pos += skipped + w.len();
            true
        });
        if ok {
            return Some(at);
        }
        from = at + first.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyphens_join_words_only() {
        let mut b = DocBuilder::new();
        write_page(
            &mut b,
            "an exam-\nple of text\nFoo-\nBar stays\n- item\n\nnext block",
        );
        let d = b.finish(rag_core::chunk::Document::default());
        assert_eq!(
            d.text,
            "an example of text\nFoo-\nBar stays\n- item\n\nnext block"
        );
    }

    #[test]
    fn outline_titles_are_found_on_their_pages() {
        let text = "Cover\n\nContents\n\n1 Intro\nwords\n\n1.1  Scope\nmore\n\n2 Next\nend";
        let pages = [
            0,
            text.find("1 Intro").unwrap(),
            text.find("2 Next").unwrap(),
        ];
        let outline = [
            (1, "1 Intro".to_string(), 2),
            (2, "1.1 Scope".to_string(), 2),
            (1, "2 Next".to_string(), 3),
            (1, "Missing".to_string(), 3),
        ];
        let s = sections_from_outline(text, &pages, &outline);
        let got: Vec<_> = s
            .iter()
            .map(|s| (&text[s.start..s.start + 3], s.path.join(" > ")))
            .collect();
        assert_eq!(
            got,
            [
                ("1 I", "1 Intro".to_string()),
                ("1.1", "1 Intro > 1.1 Scope".to_string()),
                ("2 N", "2 Next".to_string()),
            ]
        );
    }

    fn read(data: &[u8]) -> Result<Parsed, ParseError> {
        PdfParser.parse(&RawFile {
            name: "docs/guide.pdf",
            source: "s/guide.pdf",
            data,
        })
    }

    #[test]
    fn pages_and_their_text() {
        let data = crate::testing::pdf(&[
            "BT /F1 12 Tf 72 700 Td (Hello world) Tj ET",
            "BT /F1 12 Tf 72 700 Td (Second page) Tj ET",
        ]);
        let doc = read(&data).unwrap().documents.remove(0);
        assert_eq!(doc.text, "Hello world\n\nSecond page");
        assert_eq!(doc.pages, [0, 13]);
        assert_eq!(doc.page_at(doc.text.find("Second").unwrap()), Some(2));
        // No /Title: the file's name.
        assert_eq!(doc.title, "guide");
    }

    #[test]
    fn a_pdf_without_text_is_skipped_as_scanned() {
        let e = read(&crate::testing::pdf(&["0 0 m 100 100 l S", ""])).unwrap_err();
        assert!(e.reason.contains("without a text layer"), "{e}");
    }

    #[test]
    fn not_pdfs_and_text_strings() {
        let file = RawFile {
            name: "x.pdf",
            source: "s",
            data: b"<html>",
        };
        assert!(
            PdfParser
                .parse(&file)
                .unwrap_err()
                .reason
                .contains("no %PDF-")
        );
        let file = RawFile {
            name: "x.pdf",
            source: "s",
            data: b"%PDF-1.7\n1 0 obj\n<<",
        };
        assert!(
            PdfParser
                .parse(&file)
                .unwrap_err()
                .reason
                .contains("not a readable PDF")
        );
        assert_eq!(text_string(b"\xFE\xFF\x00H\x00i"), "Hi");
        assert_eq!(text_string(b"caf\xE9"), "café");
    }
}
