//! Reading documents out of raw files, through the [`Parsers`]
//! registry: JSONL corpora and plain text built in, other formats from parsers added to it.
//!
//! Nothing is dropped silently: every file or line that cannot become a document is returned as
//! a [`Skipped`] entry with its reason, and the rest still loads.

use std::collections::{BTreeMap, HashSet};

use futures::TryStreamExt;

use crate::chunk::Document;
use crate::error::Result;
use crate::parse::{FormatCount, Parsers};
use crate::store::ObjectStore;
use crate::uri::StoreUri;

/// Largest single document accepted, in bytes (64 MiB); bigger ones are skipped with a reason
/// and the rest of the corpus loads. A document up to the limit is chunked whole.
pub const MAX_DOCUMENT_BYTES: usize = 64 << 20;

pub use crate::parse::MAX_DECOMPRESSED_BYTES;

/// An input that did not become a document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The file (and line, for JSONL) it came from.
    pub source: String,
    /// Why it was skipped.
    pub reason: String,
}

/// A document whose id another file's document had taken first, and the id it now has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Renamed {
    /// The document's source (file, and `#id` for JSONL).
    pub source: String,
    /// The id it was given.
    pub id: String,
    /// The id it is chunked, indexed and cited under: `<file>#<id>` (then `~2`, `~3` …).
    pub now: String,
}

/// The document ids of a corpus so far, so that two documents never share one: their chunks
/// would merge and cite the wrong file. Whole-file documents are named by their path under
/// the corpus root, so only ids a file states (JSONL `id`) can collide.
#[derive(Debug, Default)]
pub struct DocIds {
    /// The ids seen, as the first 128 bits of their SHA-256: 16 bytes a document, so a
    /// corpus of millions streams through in little memory.
    seen: HashSet<u128>,
}

/// The first 128 bits of the SHA-256 of `id`.
pub(crate) fn id_key(id: &str) -> u128 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(k)
}

impl DocIds {
    /// Admits the documents of file `name` (its path under the corpus root) in `report`,
    /// renaming each whose id is taken and recording it in `report.renamed`.
    pub fn admit(&mut self, name: &str, report: &mut LoadReport) {
        for doc in &mut report.documents {
            if self.seen.insert(id_key(&doc.id)) {
                continue;
            }
            let base = if doc.id == name {
                name.to_string()
            } else {
                format!("{name}#{}", doc.id)
            };
            let mut now = base.clone();
            let mut n = 1;
            while !self.seen.insert(id_key(&now)) {
                n += 1;
                now = format!("{base}~{n}");
            }
            tracing::warn!(source = %doc.source, id = %doc.id, now = %now, "duplicate document id renamed");
            report.renamed.push(Renamed {
                source: doc.source.clone(),
                id: std::mem::replace(&mut doc.id, now.clone()),
                now,
            });
        }
    }
}

/// Documents parsed from one or more files, with what was skipped.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Documents, in file order.
    pub documents: Vec<Document>,
    /// What was skipped, and why.
    pub skipped: Vec<Skipped>,
    /// Documents renamed because their id was taken ([`DocIds`]).
    pub renamed: Vec<Renamed>,
    /// Files and documents per format (`html`, `pdf`, `text`, …).
    pub formats: BTreeMap<String, FormatCount>,
}

impl LoadReport {
    /// Appends another report.
    pub fn extend(&mut self, other: LoadReport) {
        self.documents.extend(other.documents);
        self.skipped.extend(other.skipped);
        self.renamed.extend(other.renamed);
        for (format, c) in other.formats {
            let mine = self.formats.entry(format).or_default();
            mine.files += c.files;
            mine.documents += c.documents;
            mine.skipped += c.skipped;
        }
    }

    /// Records a skipped input.
    pub fn skip(&mut self, source: impl Into<String>, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            source: source.into(),
            reason: reason.into(),
        });
    }
}

/// Reads and parses every object under `prefix`, in key order, with the built-in parsers
/// (JSONL and text).
pub async fn load_documents(store: &dyn ObjectStore, prefix: &StoreUri) -> Result<LoadReport> {
    load_documents_with(store, prefix, &Parsers::builtin()).await
}

/// Reads and parses every object under `prefix`, in key order, with `parsers`. A file's path
/// under the prefix names it (the id of a document that is the whole file); a file over the
/// registry's size limit is skipped without being read. No two documents share an id: a
/// later one whose id is taken is renamed ([`DocIds`], listed in `renamed`).
pub async fn load_documents_with(
    store: &dyn ObjectStore,
    prefix: &StoreUri,
    parsers: &Parsers,
) -> Result<LoadReport> {
    let mut reader = DocumentReader::open(store, prefix, parsers).await?;
    let mut report = LoadReport::default();
    while let Some(file) = reader.next_file().await? {
        report.extend(file);
    }
    Ok(report)
}

/// The objects under a prefix read and parsed one at a time, in key order, as
/// [`load_documents_with`] reads them all: so a stage can hold one file's documents instead
/// of the corpus (stage 5 streams them into shards).
pub struct DocumentReader<'a> {
    store: &'a dyn ObjectStore,
    prefix: StoreUri,
    parsers: &'a Parsers,
    objects: std::vec::IntoIter<crate::store::ObjectMeta>,
    ids: DocIds,
}

impl<'a> DocumentReader<'a> {
    /// Lists the objects under `prefix` (names and sizes only).
    pub async fn open(
        store: &'a dyn ObjectStore,
        prefix: &StoreUri,
        parsers: &'a Parsers,
    ) -> Result<Self> {
        let prefix = prefix.as_prefix();
        let objects: Vec<_> = store.list(&prefix).try_collect().await?;
        Ok(Self {
            store,
            prefix,
            parsers,
            objects: objects.into_iter(),
            ids: DocIds::default(),
        })
    }

    /// The next file's documents and what was skipped in it; `None` after the last file.
    pub async fn next_file(&mut self) -> Result<Option<LoadReport>> {
        let Some(meta) = self.objects.next() else {
            return Ok(None);
        };
        let source = meta.uri.to_string();
        let mut report = LoadReport::default();
        if meta.size > self.parsers.max_file_bytes() {
            report.skip(
                source,
                format!(
                    "file of {} bytes exceeds the {} byte limit",
                    meta.size,
                    self.parsers.max_file_bytes()
                ),
            );
            return Ok(Some(report));
        }
        let name = meta
            .uri
            .strip_prefix(&self.prefix)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| meta.uri.file_name())
            .to_string();
        let data = self.store.get_bytes(&meta.uri).await?;
        let mut parsed = self.parsers.parse(&name, &source, &data);
        self.ids.admit(&name, &mut parsed);
        Ok(Some(parsed))
    }
}

/// Parses the file `name` (its path under the corpus prefix, which picks the format and names
/// a whole-file document) whose bytes are `data` with the built-in parsers; `source` is
/// recorded on each document.
///
/// - `*.jsonl`, `*.jsonl.gz`: one `{"id", "title"?, "text"}` object per line; documents are
///   sourced as `source#id`.
/// - `*.gz` otherwise: the decompressed file, read by its name without `.gz`.
/// - anything else: UTF-8 text as one document whose id is the name.
pub fn parse_file(name: &str, source: &str, data: &[u8]) -> LoadReport {
    Parsers::builtin().parse(name, source, data)
}

#[cfg(test)]
mod tests {
    use super::*;

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
