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
            let mut file = self.parse_local(path, rel.clone(), uri).await;
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

    /// Reads one local file with the options' parsers (off the async threads), keeping only the
    /// counts and what was skipped.
    async fn parse_local(&self, path: PathBuf, rel: String, uri: String) -> LoadReport {
        let parsers = self.options.parsers.clone();
        let task = tokio::task::spawn_blocking(move || {
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
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
            match std::fs::read(&path) {
                Ok(data) => {
                    let mut r = parsers.parse(&rel, &uri, &data);
                    // Only the counts and ids are kept; the embed stage parses the stored copy
                    // again.
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
        });
        task.await.unwrap_or_else(|e| {
            let mut r = LoadReport::default();
            r.skip("ingest", format!("parsing task failed: {e}"));
            r
        })
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
