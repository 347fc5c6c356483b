//! Reading documents out of raw files: JSONL corpora (optionally gzipped) and plain text.
//!
//! Nothing is dropped silently: every file or line that cannot become a document is returned as
//! a [`Skipped`] entry with its reason, and the rest still loads.

use std::io::Read;

use futures::TryStreamExt;
use serde::Deserialize;

use crate::chunk::Document;
use crate::error::Result;
use crate::store::ObjectStore;
use crate::uri::StoreUri;

/// Largest single document accepted, in bytes (64 MiB); bigger ones are skipped with a reason
/// and the rest of the corpus loads. A document up to the limit is chunked whole.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

/// An input that did not become a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file (and line, for JSONL) it came from.
    pub source: String,
    /// Why it was skipped.
    pub reason: String,
}

/// Documents parsed from one or more files, with what was skipped.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Documents, in file order.
    pub documents: Vec<Document>,
    /// What was skipped, and why.
    pub skipped: Vec<Skipped>,
}

impl LoadReport {
    /// Appends another report.
    pub fn extend(&mut self, other: LoadReport) {
        self.documents.extend(other.documents);
        self.skipped.extend(other.skipped);
    }
}

/// Reads and parses every object under `prefix`, in key order.
pub async fn load_documents(store: &dyn ObjectStore, prefix: &StoreUri) -> Result<LoadReport> {
    let objects: Vec<_> = store.list(&prefix.as_prefix()).try_collect().await?;
    let mut report = LoadReport::default();
    for meta in objects {
        let data = store.get_bytes(&meta.uri).await?;
        report.extend(parse_file(meta.uri.key(), &meta.uri.to_string(), &data));
    }
    Ok(report)
}

#[derive(Deserialize)]
struct JsonDoc {
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

/// Parses the file `name` (an object key or path, which picks the format) whose bytes are
/// `data`; `source` is recorded on each document.
///
/// - `*.jsonl`, `*.jsonl.gz`: one `{"id", "title"?, "text"}` object per line; documents are
///   sourced as `source#id`.
/// - `*.gz` otherwise: the decompressed text as one document.
/// - anything else: UTF-8 text as one document whose id is the name.
pub fn parse_file(name: &str, source: &str, data: &[u8]) -> LoadReport {
    let mut report = LoadReport::default();
    let skip = |reason: String| Skipped {
        source: source.to_string(),
        reason,
    };
    let (base, data) = match name.strip_suffix(".gz") {
        Some(base) => match gunzip(data) {
            Ok(d) => (base, std::borrow::Cow::Owned(d)),
            Err(e) => {
                report.skipped.push(skip(format!("not read as gzip: {e}")));
                return report;
            }
        },
        None => (name, std::borrow::Cow::Borrowed(data)),
    };
    if base.ends_with(".jsonl") {
        parse_jsonl(source, &data, &mut report);
        return report;
    }
    if data.contains(&0) {
        report
            .skipped
            .push(skip("binary file (holds NUL bytes)".into()));
        return report;
    }
    let text = match std::str::from_utf8(&data) {
        Ok(t) => t,
        Err(e) => {
            report.skipped.push(skip(format!("not UTF-8: {e}")));
            return report;
        }
    };
    match check_text(text) {
        Ok(()) => report.documents.push(Document {
            id: base.rsplit('/').next().unwrap_or(base).to_string(),
            title: String::new(),
            text: text.to_string(),
            source: source.to_string(),
        }),
        Err(reason) => report.skipped.push(skip(reason)),
    }
    report
}

fn parse_jsonl(source: &str, data: &[u8], report: &mut LoadReport) {
    for (n, line) in data.split(|&b| b == b'\n').enumerate() {
        let at = format!("{source}:{}", n + 1);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed = std::str::from_utf8(line)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(|l| serde_json::from_str::<JsonDoc>(l).map_err(|e| format!("bad JSON: {e}")))
            .and_then(|d| {
                if d.id.trim().is_empty() {
                    Err("empty id".to_string())
                } else {
                    check_text(&d.text).map(|()| d)
                }
            });
        match parsed {
            Ok(d) => report.documents.push(Document {
                source: format!("{source}#{}", d.id),
                id: d.id,
                title: d.title,
                text: d.text,
            }),
            Err(reason) => report.skipped.push(Skipped { source: at, reason }),
        }
    }
}

fn check_text(text: &str) -> Result<(), String> {
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

fn gunzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    gunzip_at_most(data, MAX_DECOMPRESSED_BYTES)
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn jsonl_lines_become_documents_and_bad_lines_are_reported() {
        let data = b"{\"id\":\"a\",\"title\":\"A\",\"text\":\"alpha\"}\nnot json\n\n{\"id\":\"b\",\"text\":\"\"}\n\xff\n{\"id\":\"c\",\"text\":\"gamma\"}";
        let r = parse_file("raw-docs/c.jsonl", "oss://b/raw-docs/c.jsonl", data);
        let ids: Vec<_> = r.documents.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(r.documents[0].source, "oss://b/raw-docs/c.jsonl#a");
        let lines: Vec<_> = r
            .skipped
            .iter()
            .map(|s| s.source.rsplit(':').next().unwrap())
            .collect();
        assert_eq!(lines, ["2", "4", "5"]);
        assert!(r.skipped[1].reason.contains("empty"));
    }

    #[test]
    fn text_files_need_utf8_and_no_nul() {
        assert_eq!(parse_file("a.txt", "s", b"hello").documents[0].id, "a.txt");
        assert!(
            parse_file("a.txt", "s", b"\xff\xfe").skipped[0]
                .reason
                .contains("UTF-8")
        );
        assert!(
            parse_file("a.bin", "s", b"ab\0cd").skipped[0]
                .reason
                .contains("binary")
        );
        assert!(
            parse_file("a.txt", "s", b"  \n").skipped[0]
                .reason
                .contains("empty")
        );
    }

    #[test]
    fn gzipped_jsonl_is_read() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"id\":\"z\",\"text\":\"zeta\"}\n").unwrap();
        let r = parse_file("c.jsonl.gz", "s", &gz.finish().unwrap());
        assert_eq!(r.documents.len(), 1);
        assert!(
            parse_file("c.jsonl.gz", "s", b"plain").skipped[0]
                .reason
                .contains("gzip")
        );
    }
}
