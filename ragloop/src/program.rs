//! Image-free PAI jobs: with no `[jobs] image`, the loop runs its jobs in a stock PAI image
//! with **this** `ragloop` binary mounted from the bucket, so nothing has to be built or pushed
//! to a registry first.
//!
//! The binary (`jobs.binary`, default the running one) is uploaded once to
//! `<root>bin/ragloop-<version>-<sha256[..12]>` (skipped when an object of that name and size
//! is there: the name is its content), every DLC job mounts `<root>bin/` at
//! [`MOUNT`] through `DataSources`, and its command copies the binary out of the mount (an OSS
//! mount keeps no execute bit), makes it executable and runs it with the job's arguments.
//!
//! The stock image's C library must be as new as the one the binary was linked against:
//! [`Program::describe`] reads the newest `GLIBC_2.x` symbol version the binary needs and,
//! for the default stock image (Ubuntu 22.04, glibc 2.35), refuses a binary that needs more —
//! build a portable one (`scripts/build-portable.sh`: glibc 2.17 through cargo-zigbuild) and
//! set `jobs.binary`, or set `jobs.image`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rag_core::{ObjectStore, StoreUri};
use sha2::{Digest, Sha256};

/// Where jobs find the uploaded binary.
pub const MOUNT: &str = "/mnt/data/ragloop-bin/";

/// glibc of the default stock image (Ubuntu 22.04).
pub const STOCK_GLIBC: (u32, u32) = (2, 35);

/// The default stock image: PAI's public PyTorch image (Ubuntu 22.04) in `region`'s registry,
/// over the VPC endpoint DLC pulls from.
pub fn stock_image(region: &str) -> String {
    format!(
        "dsw-registry-vpc.{region}.cr.aliyuncs.com/pai/pytorch:2.8.0-gpu-py313-cu129-ubuntu22.04-3995b779-1764361782"
    )
}

/// The binary jobs run, as it will be in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The local file.
    pub path: PathBuf,
    /// Its object: `<root>bin/ragloop-<version>-<hash>`.
    pub uri: StoreUri,
    /// Its size in bytes.
    pub size: u64,
    /// The newest glibc symbol version it needs (`None`: not a glibc binary).
    pub glibc: Option<(u32, u32)>,
}

impl Program {
    /// Hashes `path` and names its object under `root` (reads the file; uploads nothing).
    /// `stock` is the glibc of the image it will run in, when known: a binary that needs a
    /// newer one is refused.
    pub fn describe(root: &StoreUri, path: &Path, stock: Option<(u32, u32)>) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the ragloop binary {}", path.display()))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        let name = format!("ragloop-{}-{}", env!("CARGO_PKG_VERSION"), &hash[..12]);
        let uri = root.as_prefix().join(&format!("bin/{name}"))?;
        let glibc = required_glibc(&bytes);
        if let (Some(need), Some(have)) = (glibc, stock)
            && need > have
        {
            bail!(
                "{} needs glibc {}.{}, newer than the stock PAI image's {}.{}: build a portable binary (scripts/build-portable.sh, glibc 2.17) and set jobs.binary to it, or set jobs.image to an image with ragloop",
                path.display(),
                need.0,
                need.1,
                have.0,
                have.1
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            uri,
            size: bytes.len() as u64,
            glibc,
        })
    }

    /// The folder jobs mount (`<root>bin/`).
    pub fn prefix(&self) -> StoreUri {
        self.uri.parent()
    }

    /// The object's file name.
    pub fn name(&self) -> &str {
        self.uri.file_name()
    }

    /// Uploads the binary unless an object of its name and size is already there (its name
    /// is its content's hash); returns whether it uploaded.
    pub async fn publish(&self, store: &dyn ObjectStore) -> Result<bool> {
        match store.head(&self.uri).await {
            Ok(meta) if meta.size == self.size => return Ok(false),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e).context(format!("looking for {}", self.uri)),
        }
        let body = rag_core::store::file_stream(&self.path).await?;
        store
            .put_stream(&self.uri, body)
            .await
            .with_context(|| format!("uploading {} to {}", self.path.display(), self.uri))?;
        Ok(true)
    }

    /// The job command's program part: a shell that copies the binary out of the mount into
    /// a fresh temporary directory, makes it executable and runs it with the arguments that
    /// follow (`"$@"`), so any job's arguments pass through unchanged.
    pub fn command(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "d=$(mktemp -d) && cp {MOUNT}{} \"$d/ragloop\" && chmod +x \"$d/ragloop\" && exec \"$d/ragloop\" \"$@\"",
                self.name()
            ),
            "ragloop".into(),
        ]
    }
}

/// The newest `GLIBC_2.x` symbol version named in an ELF binary (the version strings of its
/// `.gnu.version_r` section), or `None` when there is none (static or musl binaries).
pub fn required_glibc(bytes: &[u8]) -> Option<(u32, u32)> {
    const TAG: &[u8] = b"GLIBC_2.";
    let mut best: Option<(u32, u32)> = None;
    let mut at = 0;
    while let Some(i) = find(&bytes[at..], TAG) {
        let start = at + i + TAG.len();
        let digits: Vec<u8> = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .take(4)
            .collect();
        if let Ok(minor) = std::str::from_utf8(&digits).unwrap_or("").parse::<u32>() {
            best = best.max(Some((2, minor)));
        }
        at = start;
    }
    best
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_version_is_read() {
        let elf = b"\x7fELF....GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_2.17\0GLIBC_PRIVATE\0";
        assert_eq!(required_glibc(elf), Some((2, 34)));
        assert_eq!(required_glibc(b"\x7fELF static"), None);
    }

    #[test]
    fn a_binary_too_new_for_the_stock_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("ragloop");
        std::fs::write(&bin, b"\x7fELF GLIBC_2.36\0").unwrap();
        let root: StoreUri = "oss://bucket/rag/".parse().unwrap();
        let err = Program::describe(&root, &bin, Some(STOCK_GLIBC)).unwrap_err();
        assert!(err.to_string().contains("build-portable.sh"), "{err}");
        let p = Program::describe(&root, &bin, None).unwrap();
        assert_eq!(p.glibc, Some((2, 36)));
        assert_eq!(p.prefix().to_string(), "oss://bucket/rag/bin/");
        assert!(
            p.name()
                .starts_with(&format!("ragloop-{}-", env!("CARGO_PKG_VERSION")))
        );
        std::fs::write(&bin, b"\x7fELF GLIBC_2.17\0").unwrap();
        let q = Program::describe(&root, &bin, Some(STOCK_GLIBC)).unwrap();
        assert_ne!(p.name(), q.name(), "the name is the content");
        let cmd = q.command();
        assert_eq!(&cmd[..2], ["sh", "-c"]);
        assert!(
            cmd[2].contains(&format!("cp {MOUNT}{} ", q.name())),
            "{cmd:?}"
        );
    }
}
