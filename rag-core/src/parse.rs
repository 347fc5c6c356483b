//! The parser seam: turning one raw file into documents with structure.
//!
//! A [`DocumentParser`] reads one format (bytes and the file's name in, [`Document`]s with
//! their sections and pages out). [`Parsers`] is the registry the loader asks: the content
//! decides first (a parser that recognises the bytes, such as `%PDF-`), then the file's
//! extension, then UTF-8 text. rag-core ships plain text and JSONL; the `doc-parsers` crate adds
//! HTML, Markdown, PDF and DOCX, and users add their own with [`Parsers::with`].
//!
//! ```
//! use rag_core::chunk::Document;
//! use rag_core::parse::{DocumentParser, ParseError, Parsed, Parsers, RawFile};
//!
//! /// Reads `key = value` lines as one document per key.
//! struct Ini;
//! impl DocumentParser for Ini {
//!     fn format(&self) -> &str { "ini" }
//!     fn extensions(&self) -> &[&str] { &["ini"] }
//!     fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
//!         let text = file.utf8()?;
//!         Ok(Parsed::documents(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| {
//!             Document::new(k.trim(), k.trim(), v.trim(), format!("{}#{}", file.source, k.trim()))
//!         })))
//!     }
//! }
//!
//! let parsers = Parsers::builtin().with(Ini);
//! let report = parsers.parse("conf/app.ini", "mem://b/raw-docs/conf/app.ini", b"port = 80\nhost = a");
//! assert_eq!(report.documents.len(), 2);
//! assert_eq!(report.formats["ini"].documents, 2);
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;

use crate::chunk::{Document, Section};
use crate::loader::{LoadReport, MAX_DOCUMENT_BYTES, Skipped};

/// One file handed to a parser.
#[derive(Debug, Clone, Copy)]
pub struct RawFile<'a> {
    /// Its path under the corpus prefix (`manuals/guide.pdf`), which is also the id of a
    /// document that is the whole file. A `.gz` suffix has been removed with the compression.
    pub name: &'a str,
    /// Where it came from, recorded on each document (`oss://bucket/raw-docs/manuals/guide.pdf`).
    pub source: &'a str,
    /// Its bytes (decompressed).
    pub data: &'a [u8],
}

impl<'a> RawFile<'a> {
    /// The file's extension in lower case, without the dot (`""` for none).
    pub fn extension(&self) -> String {
        extension(self.name)
    }

    /// The bytes as UTF-8 (a leading byte-order mark dropped), or why not.
    pub fn utf8(&self) -> Result<&'a str, ParseError> {
        let data = self.data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(self.data);
        if data.contains(&0) {
            return Err(ParseError::new("binary file (holds NUL bytes)"));
        }
        std::str::from_utf8(data).map_err(|e| ParseError::new(format!("not UTF-8: {e}")))
    }

    /// A document that is the whole file: its id is the file's path, its source the file's.
    pub fn document(&self, title: impl Into<String>, text: impl Into<String>) -> Document {
        Document::new(self.name, title, text, self.source)
    }
}

/// Why a whole file could not be read (the loader reports it as [`Skipped`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ParseError {
    /// For people: `encrypted PDF`, `not a zip archive: …`.
    pub reason: String,
}

impl ParseError {
    /// An error with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

/// What a parser made of one file: documents, and parts of it that were skipped (a bad JSONL
/// line, an unreadable page) while the rest was read.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The documents, in file order.
    pub documents: Vec<Document>,
    /// Parts skipped, with the place (`file:line`, `file p. 3`) and why.
    pub skipped: Vec<Skipped>,
}

impl Parsed {
    /// Only documents.
    pub fn documents(docs: impl IntoIterator<Item = Document>) -> Self {
        Self {
            documents: docs.into_iter().collect(),
            skipped: Vec::new(),
        }
    }
}

/// One file format.
pub trait DocumentParser: Send + Sync {
    /// The format's short name, used in counts and reasons (`html`, `pdf`).
    fn format(&self) -> &str;

    /// The file extensions it reads, lower case without the dot.
    fn extensions(&self) -> &[&str];

    /// Whether `data` is surely this format, whatever the file is called (magic numbers such
    /// as `%PDF-`). Content wins over the name, so a PDF saved as `.txt` is read as a PDF.
    fn sniff(&self, data: &[u8]) -> bool {
        let _ = data;
        false
    }

    /// Reads one file. An `Err` skips the whole file with its reason.
    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError>;
}

/// Files and documents one format produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FormatCount {
    /// Files read in this format that gave at least one document.
    pub files: usize,
    /// Documents they gave.
    pub documents: usize,
    /// Files of this format that gave no document (unreadable, or nothing but empty text).
    pub skipped: usize,
}

/// Largest raw file the loader reads (256 MiB); a bigger one is skipped with that reason.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// The parser registry: which parser reads which file.
#[derive(Clone)]
pub struct Parsers {
    parsers: Vec<Arc<dyn DocumentParser>>,
    max_file_bytes: u64,
}

impl std::fmt::Debug for Parsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsers")
            .field("formats", &self.formats())
            .field("max_file_bytes", &self.max_file_bytes)
            .finish()
    }
}

impl Default for Parsers {
    /// [`Parsers::builtin`].
    fn default() -> Self {
        Self::builtin()
    }
}

impl Parsers {
    /// JSONL (one `{"id", "title"?, "text", "sections"?, "pages"?, "metadata"?}` per line) and
    /// plain text; any other file that is UTF-8 text is read as text too.
    pub fn builtin() -> Self {
        Self {
            parsers: vec![Arc::new(JsonlParser), Arc::new(TextParser)],
            max_file_bytes: MAX_FILE_BYTES,
        }
    }

    /// Adds a parser, asked before those already there (so a user's parser can take over an
    /// extension).
    pub fn with(mut self, parser: impl DocumentParser + 'static) -> Self {
        self.parsers.insert(0, Arc::new(parser));
        self
    }

    /// Sets the largest file read (default [`MAX_FILE_BYTES`]).
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// The largest file read.
    pub fn max_file_bytes(&self) -> u64 {
        self.max_file_bytes
    }

    /// The formats known, in the order they are asked.
    pub fn formats(&self) -> Vec<String> {
        self.parsers
            .iter()
            .map(|p| p.format().to_string())
            .collect()
    }

    /// The parser for a file: one that recognises the content, else one that claims the
    /// extension, else plain text.
    fn pick(&self, name: &str, data: &[u8]) -> &dyn DocumentParser {
        let ext = extension(name);
        self.parsers
            .iter()
            .find(|p| p.sniff(data))
            .or_else(|| {
                self.parsers
                    .iter()
                    .find(|p| p.extensions().contains(&&*ext))
            })
            .map_or(&TextParser as &dyn DocumentParser, |p| p.as_ref())
    }

    /// Reads one file: `name` is its path under the corpus prefix (it names documents and picks
    /// the format), `source` is recorded on each document. A `.gz` file is decompressed first
    /// and read as the name without `.gz`. Never fails: what cannot be read is in
    /// [`LoadReport::skipped`] with the reason.
    pub fn parse(&self, name: &str, source: &str, data: &[u8]) -> LoadReport {
        let mut report = LoadReport::default();
        let (name, data) = match name.strip_suffix(".gz") {
            Some(base) => match gunzip_at_most(data, MAX_DECOMPRESSED_BYTES) {
                Ok(d) => (base, Cow::Owned(d)),
                Err(e) => {
                    report.skip(source, format!("not read as gzip: {e}"));
                    return report;
                }
            },
            None => (name, Cow::Borrowed(data)),
        };
        let parser = self.pick(name, &data);
        let format = parser.format().to_string();
        let count = report.formats.entry(format.clone()).or_default();
        if data.len() as u64 > self.max_file_bytes {
            count.skipped += 1;
            report.skip(
                source,
                format!(
                    "{format} file of {} bytes exceeds the {} byte limit",
                    data.len(),
                    self.max_file_bytes
                ),
            );
            return report;
        }
        let file = RawFile {
            name,
            source,
            data: &data,
        };
        // A parser bug must not take the corpus down with it: a panic skips this file.
        let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse(&file)))
            .unwrap_or_else(|_| Err(ParseError::new("the parser failed on this file (a bug)")));
        match parsed {
            Ok(parsed) => {
                let mut kept = 0;
                for doc in parsed.documents {
                    match check_text(&doc.text) {
                        Ok(()) => {
                            kept += 1;
                            report.documents.push(doc);
                        }
                        Err(reason) => report.skipped.push(Skipped {
                            source: doc.source,
                            reason,
                        }),
                    }
                }
                report.skipped.extend(parsed.skipped);
                let count = report.formats.get_mut(&format).expect("entry made above");
                if kept == 0 {
                    // Nothing in it became a document (an empty page): skipped whole.
                    count.skipped += 1;
                } else {
                    count.files += 1;
                    count.documents += kept;
                }
            }
            Err(e) => {
                report
                    .formats
                    .get_mut(&format)
                    .expect("entry made above")
                    .skipped += 1;
                report.skip(source, e.reason);
            }
        }
        report
    }
}

/// The extension of `name` in lower case, without the dot.
fn extension(name: &str) -> String {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a document's text is worth indexing, or why not.
pub(crate) fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        Err("empty document".into())
    } else if text.len() > MAX_DOCUMENT_BYTES {
        Err(format!(
            "document of {} bytes exceeds the {} byte limit",
            text.len(),
            MAX_DOCUMENT_BYTES
        ))
    } else {
        Ok(())
    }
}

/// Largest decompressed `.gz` file: sixteen times [`MAX_DOCUMENT_BYTES`] (a JSONL corpus holds
/// many documents). A bigger one is skipped whole, never cut short.
pub const MAX_DECOMPRESSED_BYTES: u64 = MAX_DOCUMENT_BYTES as u64 * 16;

fn gunzip_at_most(data: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(limit + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "it decompresses to more than {limit} bytes (split the corpus into smaller files)"
        )));
    }
    Ok(out)
}

/// Plain UTF-8 text, one document per file (also the fallback for unknown extensions).
#[derive(Debug, Clone, Copy, Default)]
pub struct TextParser;

impl DocumentParser for TextParser {
    fn format(&self) -> &str {
        "text"
    }

    fn extensions(&self) -> &[&str] {
        &["txt", "text"]
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        Ok(Parsed::documents([file.document("", file.utf8()?)]))
    }
}

/// JSONL corpora: one document object per line; bad lines are skipped with their line number.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonlParser;

#[derive(Deserialize)]
struct JsonDoc {
    id: String,
    #[serde(default)]
    title: String,
    text: String,
    #[serde(default)]
    sections: Vec<Section>,
    #[serde(default)]
    pages: Vec<usize>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl DocumentParser for JsonlParser {
    fn format(&self) -> &str {
        "jsonl"
    }

    fn extensions(&self) -> &[&str] {
        &["jsonl", "ndjson"]
    }

    fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
        let mut out = Parsed::default();
        for (n, line) in file.data.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = std::str::from_utf8(line)
                .map_err(|e| format!("not UTF-8: {e}"))
                .and_then(|l| {
                    serde_json::from_str::<JsonDoc>(l).map_err(|e| format!("bad JSON: {e}"))
                })
                .and_then(|d| {
                    if d.id.trim().is_empty() {
                        Err("empty id".to_string())
                    } else {
                        check_text(&d.text).map(|()| d)
                    }
                });
            match parsed {
                Ok(d) => out.documents.push(Document {
                    source: format!("{}#{}", file.source, d.id),
                    id: d.id,
                    title: d.title,
                    text: d.text,
                    sections: d.sections,
                    pages: d.pages,
                    metadata: d.metadata,
                }),
                Err(reason) => out.skipped.push(Skipped {
                    source: format!("{}:{}", file.source, n + 1),
                    reason,
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads anything starting with `MAGIC`, whatever its name.
    struct Magic;
    impl DocumentParser for Magic {
        fn format(&self) -> &str {
            "magic"
        }
        fn extensions(&self) -> &[&str] {
            &["mg"]
        }
        fn sniff(&self, data: &[u8]) -> bool {
            data.starts_with(b"MAGIC")
        }
        fn parse(&self, file: &RawFile<'_>) -> Result<Parsed, ParseError> {
            match file.data.get(5..) {
                Some(rest) if !rest.is_empty() => Ok(Parsed::documents([
                    file.document("m", String::from_utf8_lossy(rest))
                ])),
                _ => Err(ParseError::new("magic file with nothing after the magic")),
            }
        }
    }

    struct Panics;
    impl DocumentParser for Panics {
        fn format(&self) -> &str {
            "boom"
        }
        fn extensions(&self) -> &[&str] {
            &["boom"]
        }
        fn parse(&self, _: &RawFile<'_>) -> Result<Parsed, ParseError> {
            panic!("parser bug")
        }
    }

    /// A gzip file that decompresses past the limit is skipped whole, never cut short (cut, its
    /// last documents would vanish without a word).
    #[test]
    fn oversized_gzip_is_refused_not_truncated() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![b'a'; 5000]).unwrap();
        let data = gz.finish().unwrap();
        assert_eq!(gunzip_at_most(&data, 5000).unwrap().len(), 5000);
        let err = gunzip_at_most(&data, 4999).unwrap_err();
        assert!(err.to_string().contains("more than 4999 bytes"), "{err}");
    }

    #[test]
    fn content_beats_the_name_and_the_name_beats_text() {
        let p = Parsers::builtin().with(Magic);
        // Sniffed: read by Magic though it is called .txt.
        let r = p.parse("a.txt", "s/a.txt", b"MAGIC hello");
        assert_eq!(r.documents[0].title, "m");
        assert_eq!(r.formats["magic"].files, 1);
        // By extension: Magic claims .mg and refuses what is not magic.
        let r = p.parse("dir/b.mg", "s/b.mg", b"plain");
        assert!(r.documents.is_empty());
        assert_eq!(
            r.skipped[0].reason,
            "magic file with nothing after the magic"
        );
        assert_eq!(r.formats["magic"].skipped, 1);
        // Unknown extension: text, with the path as id.
        let r = p.parse("dir/c.cfg", "s/c.cfg", b"key words");
        assert_eq!(r.documents[0].id, "dir/c.cfg");
        assert_eq!(r.formats["text"].documents, 1);
    }

    #[test]
    fn limits_and_parser_panics_skip_one_file() {
        let p = Parsers::builtin().with(Panics).with_max_file_bytes(4);
        let r = p.parse("a.txt", "s", b"12345");
        assert!(
            r.skipped[0].reason.contains("exceeds the 4 byte limit"),
            "{r:?}"
        );
        let p = Parsers::builtin().with(Panics);
        let r = p.parse("a.boom", "s", b"x");
        assert!(r.skipped[0].reason.contains("parser failed"), "{r:?}");
        assert_eq!(r.formats["boom"].skipped, 1);
    }

    #[test]
    fn jsonl_may_carry_structure() {
        let line = br#"{"id":"g","text":"Intro\n\nSetup here","sections":[{"start":7,"path":["Setup"]}],"pages":[0,7],"metadata":{"author":"x"}}"#;
        let r = Parsers::builtin().parse("c.jsonl", "s", line);
        let d = &r.documents[0];
        assert_eq!(d.section_at(8), ["Setup"]);
        assert_eq!(d.page_at(8), Some(2));
        assert_eq!(d.metadata["author"], "x");
    }

    #[test]
    fn a_byte_order_mark_is_not_text() {
        let r = Parsers::builtin().parse("a.txt", "s", b"\xEF\xBB\xBFhello");
        assert_eq!(r.documents[0].text, "hello");
    }
}
