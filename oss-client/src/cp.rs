//! Recursive copies between a local directory and an OSS prefix, like `ossutil cp -r`.
//!
//! Both directions skip files whose content is already at the destination (same size and the
//! same SHA-256, recorded as `x-amz-meta-ragloop-sha256` on upload, or the same MD5 as a
//! single-part ETag), copy with bounded concurrency, report every file through a callback, and
//! return a [`CpSummary`] in which nothing is dropped silently: each failure is listed.

use std::path::{Path, PathBuf};

use futures::stream::{self, StreamExt, TryStreamExt};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use md5::Md5;
use rag_core::store::{ObjectStore, file_stream};
use rag_core::{Error, Result, StoreUri};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::store::{OssStore, SHA256_METADATA};

/// What to copy and how.
///
/// Globs follow `.gitignore` habits: one without `/` (`*.log`) matches file names at any depth;
/// one with `/` (`docs/**/*.md`) matches the relative path, and `*` never crosses a `/`.
#[derive(Debug, Clone)]
pub struct CpOptions {
    /// Only paths (relative, `/`-separated) matching one of these globs; all when empty.
    pub include: Vec<String>,
    /// Paths matching any of these globs are left out.
    pub exclude: Vec<String>,
    /// Files copied at once.
    pub concurrency: usize,
    /// Skip files whose content is already at the destination.
    pub skip_unchanged: bool,
}

impl Default for CpOptions {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            concurrency: 8,
            skip_unchanged: true,
        }
    }
}

/// One step of a copy, for progress reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpEvent {
    /// The copy will consider `files` files of `bytes` bytes in all.
    Planned {
        /// Files selected.
        files: usize,
        /// Their total size.
        bytes: u64,
    },
    /// A file was copied.
    Copied {
        /// Its relative path.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A file was already at the destination.
    Skipped {
        /// Its relative path.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A file failed.
    Failed {
        /// Its relative path.
        path: String,
        /// Why.
        error: String,
    },
}

/// What a copy did. `failed` lists every file that did not make it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpSummary {
    /// Files selected (after globs).
    pub files: usize,
    /// Files copied.
    pub copied: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Files already current.
    pub skipped: usize,
    /// Files that failed, with the error.
    pub failed: Vec<(String, String)>,
}

impl CpSummary {
    /// Whether every selected file is at the destination.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Filter {
    fn new(opts: &CpOptions) -> Result<Self> {
        let build = |globs: &[String]| -> Result<GlobSet> {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                let pattern = if g.contains('/') {
                    g.clone()
                } else {
                    format!("**/{g}")
                };
                let glob = GlobBuilder::new(&pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| Error::invalid(format!("glob {g:?}: {e}")))?;
                b.add(glob);
            }
            b.build().map_err(|e| Error::invalid(e.to_string()))
        };
        Ok(Self {
            include: (!opts.include.is_empty())
                .then(|| build(&opts.include))
                .transpose()?,
            exclude: build(&opts.exclude)?,
        })
    }

    fn keeps(&self, rel: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(rel)) && !self.exclude.is_match(rel)
    }
}

enum Outcome {
    Copied(u64),
    Skipped(u64),
}

/// Uploads every file under `dir` to `prefix`, keeping relative paths.
pub async fn upload_dir(
    store: &OssStore,
    dir: &Path,
    prefix: &StoreUri,
    opts: &CpOptions,
    progress: &(dyn Fn(CpEvent) + Sync),
) -> Result<CpSummary> {
    if !dir.is_dir() {
        return Err(Error::not_found(format!("directory {}", dir.display())));
    }
    let filter = Filter::new(opts)?;
    let root = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || local_files(&root))
        .await
        .map_err(|e| Error::backend("oss", "listing task failed", e))??;
    let files: Vec<(PathBuf, String, u64)> = files
        .into_iter()
        .filter(|(_, rel, _)| filter.keeps(rel))
        .collect();
    let prefix = prefix.as_prefix();
    let jobs = files.into_iter().map(|(path, rel, size)| {
        let prefix = &prefix;
        async move {
            let result = async {
                let uri = prefix.join(&rel)?;
                upload_one(store, &path, &uri, size, opts.skip_unchanged).await
            }
            .await;
            (rel, result)
        }
    });
    run(jobs, opts.concurrency, progress).await
}

async fn upload_one(
    store: &OssStore,
    path: &Path,
    uri: &StoreUri,
    size: u64,
    skip_unchanged: bool,
) -> Result<Outcome> {
    let sha = hash_file::<Sha256>(path).await?;
    if skip_unchanged
        && let Ok((meta, user)) = store.metadata(uri).await
        && meta.size == size
        && same_content(&user, meta.e_tag.as_deref(), &sha, || {
            hash_file::<Md5>(path)
        })
        .await?
    {
        return Ok(Outcome::Skipped(size));
    }
    let put = store
        .put_with_metadata(uri, file_stream(path).await?, &[(SHA256_METADATA, sha)])
        .await?;
    Ok(Outcome::Copied(put.size))
}

/// Downloads every object under `prefix` into `dir`, keeping relative keys as paths. Each file
/// is written to a temporary name and renamed into place; an object that carries a SHA-256 is
/// checked against it.
pub async fn download_prefix(
    store: &OssStore,
    prefix: &StoreUri,
    dir: &Path,
    opts: &CpOptions,
    progress: &(dyn Fn(CpEvent) + Sync),
) -> Result<CpSummary> {
    let filter = Filter::new(opts)?;
    let prefix = prefix.as_prefix();
    let objects: Vec<_> = store.list(&prefix).try_collect().await?;
    let jobs: Vec<_> = objects
        .into_iter()
        .filter_map(|m| {
            let rel = m.uri.strip_prefix(&prefix)?.to_string();
            (!rel.is_empty() && filter.keeps(&rel)).then_some((m, rel))
        })
        .collect();
    let jobs = jobs.into_iter().map(|(meta, rel)| async move {
        let dest = rel.split('/').fold(dir.to_path_buf(), |p, s| p.join(s));
        let result = download_one(store, &meta.uri, &dest, opts.skip_unchanged).await;
        (rel, result)
    });
    run(jobs, opts.concurrency, progress).await
}

async fn download_one(
    store: &OssStore,
    uri: &StoreUri,
    dest: &Path,
    skip_unchanged: bool,
) -> Result<Outcome> {
    let (meta, user) = store.metadata(uri).await?;
    let expected = user
        .iter()
        .find(|(k, _)| k == SHA256_METADATA)
        .map(|(_, v)| v.clone());
    if skip_unchanged
        && tokio::fs::metadata(dest)
            .await
            .is_ok_and(|m| m.len() == meta.size)
        && same_content(
            &user,
            meta.e_tag.as_deref(),
            &hash_file::<Sha256>(dest).await?,
            || hash_file::<Md5>(dest),
        )
        .await?
    {
        return Ok(Outcome::Skipped(meta.size));
    }
    let parent = dest
        .parent()
        .ok_or_else(|| Error::invalid(format!("{} has no parent directory", dest.display())))?;
    tokio::fs::create_dir_all(parent).await?;
    let tmp = parent.join(format!(
        ".{}.ragloop-part",
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = store.get(uri).await?.stream;
        while let Some(chunk) = body.try_next().await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_data().await?;
        if let Some(expected) = &expected {
            let got = hex::encode(hasher.finalize());
            if &got != expected {
                return Err(Error::backend_msg(
                    "oss",
                    format!("{uri}: downloaded SHA-256 {got} differs from the recorded {expected}"),
                ));
            }
        }
        tokio::fs::rename(&tmp, dest).await?;
        Ok(Outcome::Copied(size))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Whether the stored object (its user metadata and ETag) holds the content whose SHA-256 is
/// `sha`; the MD5 is computed only when the object carries no SHA-256.
async fn same_content<F, Fut>(
    user: &[(String, String)],
    e_tag: Option<&str>,
    sha: &str,
    md5: F,
) -> Result<bool>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String>>,
{
    if let Some((_, recorded)) = user.iter().find(|(k, _)| k == SHA256_METADATA) {
        return Ok(recorded == sha);
    }
    match e_tag {
        // A multipart ETag ("…-N") is not an MD5 of the content: treat as changed.
        Some(tag) if !tag.contains('-') => Ok(tag.eq_ignore_ascii_case(&md5().await?)),
        _ => Ok(false),
    }
}

async fn hash_file<D: Digest>(path: &Path) -> Result<String> {
    let mut hasher = D::new();
    let mut s = file_stream(path).await?;
    while let Some(chunk) = s.try_next().await? {
        hasher.update(&chunk);
    }
    Ok(hex::encode(hasher.finalize()))
}

async fn run<I, F>(
    jobs: I,
    concurrency: usize,
    progress: &(dyn Fn(CpEvent) + Sync),
) -> Result<CpSummary>
where
    I: ExactSizeIterator<Item = F>,
    F: std::future::Future<Output = (String, Result<Outcome>)>,
{
    let mut summary = CpSummary {
        files: jobs.len(),
        ..Default::default()
    };
    progress(CpEvent::Planned {
        files: summary.files,
        bytes: 0,
    });
    let mut results = stream::iter(jobs).buffer_unordered(concurrency.max(1));
    while let Some((path, result)) = results.next().await {
        match result {
            Ok(Outcome::Copied(bytes)) => {
                summary.copied += 1;
                summary.bytes += bytes;
                progress(CpEvent::Copied { path, bytes });
            }
            Ok(Outcome::Skipped(bytes)) => {
                summary.skipped += 1;
                progress(CpEvent::Skipped { path, bytes });
            }
            Err(e) => {
                progress(CpEvent::Failed {
                    path: path.clone(),
                    error: e.to_string(),
                });
                summary.failed.push((path, e.to_string()));
            }
        }
    }
    summary.failed.sort();
    Ok(summary)
}

/// Files under `root` with `/`-joined relative paths and sizes, sorted.
fn local_files(root: &Path) -> Result<Vec<(PathBuf, String, u64)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String, u64)>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                walk(root, &path, out)?;
            } else if ft.is_file()
                && let Ok(rel) = path.strip_prefix(root)
            {
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((path.clone(), rel, entry.metadata()?.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names_anywhere_and_paths_from_the_root() {
        let opts = CpOptions {
            include: vec!["*.md".into(), "*.txt".into()],
            exclude: vec!["sub/deep/**".into()],
            ..Default::default()
        };
        let f = Filter::new(&opts).unwrap();
        assert!(f.keeps("a.txt"));
        assert!(f.keeps("sub/b.md"));
        assert!(!f.keeps("sub/deep/c.txt"));
        assert!(!f.keeps("x.log"));
        let paths = Filter::new(&CpOptions {
            include: vec!["sub/*.md".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(paths.keeps("sub/b.md") && !paths.keeps("sub/x/b.md") && !paths.keeps("b.md"));
    }
}
