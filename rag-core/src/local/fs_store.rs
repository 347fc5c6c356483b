use std::io::SeekFrom;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult, clamp_range,
};
use crate::uri::{Scheme, StoreUri};

/// Where in-flight writes go, inside the root so that the final rename stays on one file system.
/// Bucket names cannot start with '.', so it never collides with a bucket.
const TMP_DIR: &str = ".ragloop-tmp";

/// An [`ObjectStore`] on the local file system: `scheme://bucket/key` lives at
/// `root/bucket/key` (`file:///path` at `root/path`), so a local run can use the same
/// `oss://bucket/...` URIs as a cloud run.
///
/// Writes go to a temporary file that is renamed into place: readers see the old object or the
/// new one, never a torn one, and a write that fails or is dropped leaves nothing behind. A
/// process killed mid-write leaves its temporary file, which a later store opened on the same
/// root removes (when its process is gone and it is older than a minute, or older
/// than a day). A key cannot be both an object and a prefix of another (`a` and `a/b`), as a
/// file cannot be a directory; such a put fails with [`Error::AlreadyExists`].
#[derive(Debug)]
pub struct LocalFileStore {
    root: PathBuf,
}

/// Numbers the temporary files of this process (`<pid>-<n>`): one counter for every store, so
/// two stores on one root in one process never write the same file.
static TEMP_FILES: AtomicU64 = AtomicU64::new(0);

impl LocalFileStore {
    /// A store rooted at `root` (created on first write). Temporary files that killed writers
    /// left under it are removed now (see the type's documentation).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let removed = remove_stale_temp_files(&root.join(TMP_DIR));
        if removed > 0 {
            tracing::info!(removed, root = %root.display(), "removed temporary files of killed writers");
        }
        Self { root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `uri`.
    pub fn path_of(&self, uri: &StoreUri) -> PathBuf {
        let mut p = self.root.clone();
        if uri.scheme() != Scheme::File {
            p.push(uri.bucket());
        }
        p.extend(uri.key().split('/').filter(|s| !s.is_empty()));
        p
    }

    fn object_path(&self, uri: &StoreUri) -> Result<PathBuf> {
        if uri.is_prefix() {
            return Err(Error::invalid(format!(
                "{uri} names a prefix, not an object"
            )));
        }
        Ok(self.path_of(uri))
    }

    /// A new temporary file, removed when the guard drops unless it was committed: also when
    /// the writing future is dropped half-way (a cancelled or timed-out stage).
    async fn temp_file(&self, uri: &StoreUri) -> Result<(TempGuard, tokio::fs::File)> {
        let dir = self.root.join(TMP_DIR);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(e, format!("writing {uri}: creating {}", dir.display())))?;
        let n = TEMP_FILES.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}", std::process::id()));
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Error::io(e, format!("writing {uri}: creating {}", path.display())))?;
        Ok((TempGuard(path), file))
    }

    /// Moves a finished temporary file to `dest`.
    async fn commit(&self, tmp: &Path, dest: &Path, uri: &StoreUri) -> Result<()> {
        if let Some(parent) = dest.parent()
            && let Err(e) = tokio::fs::create_dir_all(parent).await
        {
            return Err(conflict_or(e, uri));
        }
        if tokio::fs::metadata(dest).await.is_ok_and(|m| m.is_dir()) {
            return Err(Error::AlreadyExists {
                what: format!("{uri}: a prefix of that name holds objects"),
            });
        }
        tokio::fs::rename(tmp, dest)
            .await
            .map_err(|e| conflict_or(e, uri))
    }

    async fn write_all(&self, uri: &StoreUri, mut data: ByteStream) -> Result<PutResult> {
        let dest = self.object_path(uri)?;
        let (guard, mut file) = self.temp_file(uri).await?;
        let tmp = &guard.0;
        // A full disk or a failing device names the object and the file it was written to.
        let failed = |e| Error::io(e, format!("writing {uri} ({})", tmp.display()));
        let result = async {
            let mut size = 0u64;
            while let Some(chunk) = data.try_next().await? {
                file.write_all(&chunk).await.map_err(failed)?;
                size += chunk.len() as u64;
            }
            file.flush().await.map_err(failed)?;
            file.sync_data().await.map_err(failed)?;
            drop(file);
            self.commit(tmp, &dest, uri).await?;
            Ok::<_, Error>(size)
        }
        .await;
        let size = result?;
        let e_tag = tokio::fs::metadata(&dest).await.ok().map(|m| e_tag_of(&m));
        Ok(PutResult { size, e_tag })
    }

    fn meta(&self, uri: &StoreUri, m: &std::fs::Metadata) -> ObjectMeta {
        ObjectMeta {
            uri: uri.clone(),
            size: m.len(),
            last_modified: m.modified().ok(),
            e_tag: Some(e_tag_of(m)),
        }
    }

    async fn file_meta(&self, uri: &StoreUri) -> Result<(PathBuf, std::fs::Metadata)> {
        let path = self.object_path(uri)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) if m.is_file() => Ok((path, m)),
            Ok(_) => Err(Error::not_found(uri.to_string())),
            Err(e) if is_missing(&e) => Err(Error::not_found(uri.to_string())),
            Err(e) => Err(Error::io(e, format!("{uri} ({})", path.display()))),
        }
    }
}

/// A version tag that changes whenever the file is rewritten (size and modification time).
fn e_tag_of(m: &std::fs::Metadata) -> String {
    let nanos = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", m.len())
}

fn is_missing(e: &std::io::Error) -> bool {
    // ENOTDIR: a path segment is a file, so the object cannot exist either.
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(20)
}

fn conflict_or(e: std::io::Error, uri: &StoreUri) -> Error {
    if e.raw_os_error() == Some(20) || e.kind() == std::io::ErrorKind::AlreadyExists {
        Error::AlreadyExists {
            what: format!("{uri}: a parent of that key is an object"),
        }
    } else {
        Error::io(e, format!("writing {uri}"))
    }
}

#[async_trait]
impl ObjectStore for LocalFileStore {
    async fn put(&self, uri: &StoreUri, data: Bytes) -> Result<PutResult> {
        self.write_all(uri, stream::once(async { Ok(data) }).boxed())
            .await
    }

    async fn put_stream(&self, uri: &StoreUri, data: ByteStream) -> Result<PutResult> {
        self.write_all(uri, data).await
    }

    async fn get(&self, uri: &StoreUri) -> Result<GetResult> {
        let (path, m) = self.file_meta(uri).await?;
        let stream = crate::store::file_stream(&path)
            .await
            .map_err(|e| match e {
                Error::NotFound { .. } => Error::not_found(uri.to_string()),
                e => e,
            })?;
        Ok(GetResult {
            meta: self.meta(uri, &m),
            stream,
        })
    }

    async fn get_range(&self, uri: &StoreUri, range: Range<u64>) -> Result<Bytes> {
        let (path, m) = self.file_meta(uri).await?;
        let r = clamp_range(uri, range, m.len())?;
        let read = async {
            let mut file = tokio::fs::File::open(&path).await?;
            file.seek(SeekFrom::Start(r.start)).await?;
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            file.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(Bytes::from(buf))
        };
        read.await
            .map_err(|e| Error::io(e, format!("reading {uri} ({})", path.display())))
    }

    async fn head(&self, uri: &StoreUri) -> Result<ObjectMeta> {
        let (_, m) = self.file_meta(uri).await?;
        Ok(self.meta(uri, &m))
    }

    async fn list_page(
        &self,
        prefix: &StoreUri,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        // The directory that holds every key starting with the prefix: its part up to the last '/'.
        let dir_key = &prefix.key()[..prefix.key().rfind('/').map_or(0, |i| i + 1)];
        let base = if prefix.scheme() == Scheme::File {
            self.root.clone()
        } else {
            self.root.join(prefix.bucket())
        };
        let start_dir = base.join(dir_key);
        let root_for_keys = base.clone();
        let key_prefix = prefix.key().to_string();
        let mut found = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root_for_keys, &start_dir, &key_prefix, &mut out)
                .map_err(|e| Error::io(e, format!("listing {}", start_dir.display())))?;
            Ok::<_, Error>(out)
        })
        .await
        .map_err(|e| Error::backend("local-fs", "listing task failed", e))??;
        found.sort_by(|a, b| a.0.cmp(&b.0));

        let mut page = ListPage::default();
        for (key, m) in found
            .into_iter()
            .filter(|(k, _)| token.as_deref().is_none_or(|t| k.as_str() > t))
        {
            if page.objects.len() == max_keys.max(1) {
                page.next_token = page.objects.last().map(|o| o.uri.key().to_string());
                break;
            }
            let uri = StoreUri::new(prefix.scheme(), prefix.bucket(), key)?;
            page.objects.push(self.meta(&uri, &m));
        }
        Ok(page)
    }

    async fn delete(&self, uri: &StoreUri) -> Result<()> {
        let path = self.object_path(uri)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(Error::io(e, format!("deleting {uri} ({})", path.display()))),
        }
        // Remove directories the delete emptied, so that the key can become an object again.
        let stop = if uri.scheme() == Scheme::File {
            self.root.clone()
        } else {
            self.root.join(uri.bucket())
        };
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == stop || !d.starts_with(&stop) || tokio::fs::remove_dir(&d).await.is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }

    async fn copy(&self, from: &StoreUri, to: &StoreUri) -> Result<()> {
        let (src, _) = self.file_meta(from).await?;
        let dest = self.object_path(to)?;
        let (guard, file) = self.temp_file(to).await?;
        drop(file);
        tokio::fs::copy(&src, &guard.0)
            .await
            .map_err(|e| Error::io(e, format!("copying {from} to {to}")))?;
        self.commit(&guard.0, &dest, to).await
    }
}

/// Removes the temporary files in `dir` whose writer is gone: named `<pid>-<n>`, from a process
/// that no longer runs (Linux `/proc`) and untouched for a minute, or untouched for a day.
/// Returns how many went.
fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let proc = Path::new("/proc");
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next()?.parse::<u32>().ok());
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let gone = pid.is_some_and(|pid| {
            pid != std::process::id() && proc.is_dir() && !is_running(proc, pid)
        });
        let stale = (gone && age.as_secs() >= 60) || age.as_secs() >= 24 * 3600;
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Whether `/proc` shows `pid` as a live process: a zombie (killed, not yet reaped — common in
/// containers whose first process reaps nobody) is not.
fn is_running(proc: &Path, pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) else {
        return false;
    };
    // "pid (command) S …": the state follows the last ')', as the command may hold one.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// Removes its temporary file when dropped; after a successful rename there is nothing left to
/// remove and the call fails harmlessly.
struct TempGuard(PathBuf);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Collects `(key, metadata)` of files under `dir` whose key (path relative to `root`, joined by
/// '/') starts with `key_prefix`.
fn walk(
    root: &Path,
    dir: &Path,
    key_prefix: &str,
    out: &mut Vec<(String, std::fs::Metadata)>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(root) else {
            continue;
        };
        let key = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if key.starts_with(TMP_DIR) {
            continue;
        }
        let ft = entry.file_type()?;
        if ft.is_dir() {
            let as_prefix = format!("{key}/");
            // Descend only where keys under this directory can still match.
            if as_prefix.starts_with(key_prefix) || key_prefix.starts_with(&as_prefix) {
                walk(root, &path, key_prefix, out)?;
            }
        } else if ft.is_file() && key.starts_with(key_prefix) {
            out.push((key, entry.metadata()?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn temp_file(dir: &Path, name: &str, age: Duration) {
        let path = dir.join(name);
        std::fs::write(&path, b"half an object").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    /// Temporary files of killed writers go when the next store opens; those of a live
    /// process, or too recent to be sure, stay.
    #[tokio::test]
    async fn temporary_files_of_killed_writers_are_removed_when_the_next_store_opens() {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join(TMP_DIR);
        std::fs::create_dir_all(&tmp).unwrap();
        // Above Linux's largest pid_max: never a running process.
        let dead = 4_194_305;
        let minutes = Duration::from_secs(120);
        temp_file(&tmp, &format!("{dead}-0"), minutes);
        temp_file(&tmp, &format!("{dead}-1"), Duration::ZERO);
        temp_file(&tmp, &format!("{}-7", std::process::id()), minutes);
        temp_file(&tmp, "not-ours", Duration::from_secs(2 * 24 * 3600));

        let store = LocalFileStore::new(root.path());
        let uri: StoreUri = "oss://bucket/k".parse().unwrap();
        store.put(&uri, Bytes::from_static(b"x")).await.unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![format!("{dead}-1"), format!("{}-7", std::process::id())];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(store.get_bytes(&uri).await.unwrap(), "x");
    }

    /// Two stores on one root in one process (the runner and a stage's pipeline) write at
    /// once: each object is whole. Their temporary files were both `<pid>-0`, `<pid>-1`, ….
    #[tokio::test]
    async fn two_stores_on_one_root_write_at_once_without_mixing_objects() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (
            LocalFileStore::new(root.path()),
            LocalFileStore::new(root.path()),
        );
        let body = |c: u8| Bytes::from(vec![c; 1 << 20]);
        let writes = (0..8).map(|i| {
            let (a, b) = (&a, &b);
            async move {
                let ua: StoreUri = format!("oss://bucket/a{i}").parse().unwrap();
                let ub: StoreUri = format!("oss://bucket/b{i}").parse().unwrap();
                let (ra, rb) = tokio::join!(a.put(&ua, body(b'a')), b.put(&ub, body(b'b')));
                ra.unwrap();
                rb.unwrap();
            }
        });
        futures::future::join_all(writes).await;
        for i in 0..8 {
            for (c, store) in [(b'a', &a), (b'b', &b)] {
                let uri: StoreUri = format!("oss://bucket/{}{i}", c as char).parse().unwrap();
                assert_eq!(store.get_bytes(&uri).await.unwrap(), body(c), "{uri}");
            }
        }
    }

    /// A write that the file system refuses (here: the temporary directory's name is taken by
    /// a file; a full disk goes the same way) names the object and the file, and says the
    /// system's reason once.
    #[tokio::test]
    async fn a_failed_write_names_the_object_and_the_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join(TMP_DIR), b"in the way").unwrap();
        let store = LocalFileStore::new(root.path());
        let uri: StoreUri = "oss://bucket/report.json".parse().unwrap();
        let err = store
            .put(&uri, Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        let mut text = err.to_string();
        let mut cause = std::error::Error::source(&err);
        while let Some(c) = cause {
            text.push_str(&format!(": {c}"));
            cause = c.source();
        }
        assert!(
            text.contains("writing oss://bucket/report.json: creating ") && text.contains(TMP_DIR),
            "{text}"
        );
        assert_eq!(text.matches("File exists").count(), 1, "{text}");
    }
}
