//! Stage 1: a local directory to `raw-docs/`.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Pipeline;
use crate::chunk::Document;
use crate::error::{Error, Result};
use crate::loader::{LoadReport, Skipped};
use crate::parse::FormatCount;
use crate::stage::Stage;
use crate::store::file_stream;

/// What [`Pipeline::ingest`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files uploaded.
    pub uploaded: usize,
    /// Files already in the store with the same content.
    pub unchanged: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Files that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Documents the files hold, as the options' parsers read them.
    pub documents: usize,
    /// Files and documents per format.
    pub formats: std::collections::BTreeMap<String, FormatCount>,
    /// Files (or parts of files) that will not become documents, and why; they are uploaded
    /// all the same, so a better parser later can read them.
    pub unparsed: Vec<Skipped>,
    /// Documents whose id another file's document had taken: the embed stage gives them
    /// these ids.
    pub renamed: Vec<crate::loader::Renamed>,
    /// Objects removed from `raw-docs/` (relative paths): an earlier ingest of this layout
    /// put them there and their file is gone from the folder. Objects put there by anything
    /// else are never touched.
    pub removed: Vec<String>,
}

/// What [`Layout::ingested`](super::Layout::ingested) holds.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
struct Ingested {
    /// `raw-docs/` keys (relative paths) of the folder's files.
    keys: std::collections::BTreeSet<String>,
}

impl Pipeline {
    /// Stage 1: uploads every file under `dir` to `raw-docs/`, keeping relative paths, like
    /// `ossutil cp -r ./data oss://bucket/raw-docs/`. Files whose content is already there are
    /// skipped; a file that fails is reported and the others still go. Each file is also read
    /// with the options' parsers, so the report counts documents per format and names the
    /// files that will not become documents (with the reason) before anything is embedded.
    pub async fn ingest(&self, dir: &Path) -> Result<IngestReport> {
        let stage = Stage::Ingest;
        if !dir.is_dir() {
            return Err(Error::not_found(format!(
                "data directory {}",
                dir.display()
            )));
        }
        let root = dir.to_path_buf();
        let (files, unlisted) = tokio::task::spawn_blocking(move || list_files(&root))
            .await
            .map_err(|e| Error::backend("pipeline", "listing task failed", e))?;
        if files.is_empty() && unlisted.is_empty() {
            return Err(Error::invalid(format!(
                "{} holds no files to ingest",
                dir.display()
            )));
        }
        self.progress.begin(stage, Some(files.len() as u64));
        // Listed now: a file that fails below keeps its key (its stored copy stays). With a
        // directory that could not be listed, nothing is removed: its files are unknown.
        let listed_all = unlisted.is_empty();
        let present: std::collections::BTreeSet<String> =
            files.iter().map(|(_, rel)| rel.clone()).collect();
        let mut report = IngestReport {
            failed: unlisted,
            ..Default::default()
        };
        let mut parsed = LoadReport::default();
        let mut ids = crate::loader::DocIds::default();
        let parser = LocalParser::start(self.options.parsers.clone());
        for (path, rel) in files {
            match self.ingest_file(&path, &rel).await {
                Ok(Some(bytes)) => {
                    report.uploaded += 1;
                    report.bytes += bytes;
                }
                Ok(None) => report.unchanged += 1,
                Err(e) => {
                    // Listed once, as failed: it is not in the store, so it is no document.
                    report
                        .failed
                        .push((path.display().to_string(), e.to_string()));
                    self.progress.advance(stage, 1);
                    continue;
                }
            }
            let uri = self.layout.raw_docs().join(&rel)?.to_string();
            let mut file = parser.parse(path, rel.clone(), uri).await;
            ids.admit(&rel, &mut file);
            file.documents.clear();
            parsed.extend(file);
            self.progress.advance(stage, 1);
        }
        report.removed = self.remove_gone(present, listed_all).await?;
        report.documents = parsed.formats.values().map(|c| c.documents).sum();
        report.formats = parsed.formats;
        report.unparsed = parsed.skipped;
        report.renamed = parsed.renamed;
        self.progress.end(
            stage,
            &format!(
                "{} uploaded ({} bytes), {} unchanged, {} removed, {} failed",
                report.uploaded,
                report.bytes,
                report.unchanged,
                report.removed.len(),
                report.failed.len()
            ),
        );
        Ok(report)
    }

    /// Removes from `raw-docs/` what an earlier ingest put there and `present` (this run's
    /// files) no longer holds, then records `present` (with the earlier keys too when the
    /// folder was not listed whole). Returns the removed keys.
    async fn remove_gone(
        &self,
        present: std::collections::BTreeSet<String>,
        listed_all: bool,
    ) -> Result<Vec<String>> {
        let uri = self.layout.ingested();
        let previous: Ingested = match self.store.get_bytes(&uri).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupt(
                    uri.to_string(),
                    format!(
                        "{e}; remove it (the next ingest removes nothing, then records the folder)"
                    ),
                )
            })?,
            Err(e) if e.is_not_found() => Ingested::default(),
            Err(e) => return Err(e),
        };
        let mut removed = Vec::new();
        let mut keys = present;
        if listed_all {
            for rel in previous.keys.difference(&keys) {
                self.store
                    .delete(&self.layout.raw_docs().join(rel)?)
                    .await?;
                removed.push(rel.clone());
            }
        } else {
            keys.extend(previous.keys.iter().cloned());
        }
        // An unchanged folder rewrites nothing.
        if keys == previous.keys {
            return Ok(removed);
        }
        let body = serde_json::to_vec(&Ingested { keys })
            .map_err(|e| Error::backend("pipeline", "ingest record", e))?;
        self.store.put(&uri, body.into()).await?;
        Ok(removed)
    }

    /// Uploads one file unless the store holds the same content; `Some(bytes)` if uploaded.
    async fn ingest_file(&self, path: &Path, rel: &str) -> Result<Option<u64>> {
        let store = &self.store;
        let uri = self.layout.raw_docs().join(rel)?;
        let size = tokio::fs::metadata(path).await?.len();
        if let Ok(meta) = store.head(&uri).await
            && meta.size == size
            && sha256_stream(file_stream(path).await?).await?
                == sha256_stream(store.get(&uri).await?.stream).await?
        {
            return Ok(None);
        }
        let put = store.put_stream(&uri, file_stream(path).await?).await?;
        Ok(Some(put.size))
    }
}

/// A parsing job: a local file, its relative path and store URI, and where its report goes.
type ParseJob = (
    PathBuf,
    String,
    String,
    tokio::sync::oneshot::Sender<LoadReport>,
);

/// Parses stage 1's local files on one thread of its own (off the async threads), a file at
/// a time, keeping only the counts and what was skipped. One thread, so what a file's parse
/// frees is what the next file's allocates again: parsed on whichever thread of the blocking
/// pool was free, each thread's allocator kept the pages it had freed (stage 1 held 140–310
/// MiB resident for a 25 MiB heap on 300,000 chunks of JSONL; BENCHMARKS.md).
struct LocalParser {
    jobs: std::sync::mpsc::Sender<ParseJob>,
}

impl LocalParser {
    /// Starts the thread; it ends when the parser is dropped (after the file it is on).
    fn start(parsers: crate::parse::Parsers) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<ParseJob>();
        let spawned = std::thread::Builder::new()
            .name("ragloop-ingest-parse".into())
            .spawn(move || {
                for (path, rel, uri, reply) in queue {
                    let _ = reply.send(parse_file(&parsers, &path, &rel, uri));
                }
            });
        if let Err(e) = spawned {
            // Each parse then reports that it could not run.
            tracing::warn!(error = %e, "no parsing thread; files are uploaded uncounted");
        }
        Self { jobs }
    }

    /// The report of one local file's parse.
    async fn parse(&self, path: PathBuf, rel: String, uri: String) -> LoadReport {
        let (reply, report) = tokio::sync::oneshot::channel();
        let failed = |why: &str| {
            let mut r = LoadReport::default();
            r.skip("ingest", format!("parsing task failed: {why}"));
            r
        };
        if self.jobs.send((path, rel, uri, reply)).is_err() {
            return failed("the parsing thread is gone");
        }
        report
            .await
            .unwrap_or_else(|_| failed("the parsing thread stopped"))
    }
}

/// Reads one local file with `parsers`, keeping only the documents' ids and sources (the
/// embed stage parses the stored copy again), the counts and what was skipped.
fn parse_file(parsers: &crate::parse::Parsers, path: &Path, rel: &str, uri: String) -> LoadReport {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > parsers.max_file_bytes() {
        let mut r = LoadReport::default();
        r.skip(
            uri,
            format!(
                "file of {size} bytes exceeds the {} byte limit",
                parsers.max_file_bytes()
            ),
        );
        return r;
    }
    match std::fs::read(path) {
        Ok(data) => {
            let mut r = parsers.parse(rel, &uri, &data);
            for d in &mut r.documents {
                *d = Document {
                    id: std::mem::take(&mut d.id),
                    source: std::mem::take(&mut d.source),
                    ..Document::default()
                };
            }
            r
        }
        Err(e) => {
            let mut r = LoadReport::default();
            r.skip(uri, format!("not read: {e}"));
            r
        }
    }
}

/// The SHA-256 of a stream's bytes.
async fn sha256_stream(mut s: crate::store::ByteStream) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    while let Some(chunk) = s.try_next().await? {
        h.update(&chunk);
    }
    Ok(h.finalize().into())
}

/// Entries that failed, with the reason: `(path, why)`.
type Failed = Vec<(String, String)>;

/// Files under `root` (recursively, sorted by relative path, the store's key order) with
/// their `/`-joined relative paths, and the entries that could not be listed (an unreadable
/// directory) with the reason. Hidden files and directories (`.git`, `.DS_Store`) are left out.
fn list_files(root: &Path) -> (Vec<(PathBuf, String)>, Failed) {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>, failed: &mut Failed) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                failed.push((dir.display().to_string(), format!("not listed: {e}")));
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    failed.push((dir.display().to_string(), format!("not listed: {e}")));
                    continue;
                }
            };
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, out, failed);
            } else if let Ok(rel) = path.strip_prefix(root) {
                // A symlink, broken or not, is a file here; reading it says what is wrong.
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((path, rel));
            }
        }
    }
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    walk(root, root, &mut out, &mut failed);
    out.sort_by(|a, b| a.1.cmp(&b.1));
    (out, failed)
}
