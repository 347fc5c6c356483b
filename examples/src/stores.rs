//! Which [`ObjectStore`] serves a URI on the command line: OSS (or any S3-compatible endpoint)
//! for `oss://`/`s3://`, the local file system for `file://` URIs and plain paths, and a
//! local directory standing in for the bucket when `--store-root` is given (the local loop).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use oss_client::{OssConfig, OssStore};
use rag_core::local::LocalFileStore;
use rag_core::{ObjectStore, Scheme, StoreUri};

/// Where OSS is (flattened into the commands that talk to it).
#[derive(Debug, Clone, Args)]
pub struct OssArgs {
    /// An S3-compatible endpoint instead of OSS's regional one (uses path-style addressing).
    #[arg(long, env = "OSS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// OSS region.
    #[arg(long, env = "OSS_REGION", default_value = "cn-hangzhou")]
    pub region: String,
}

impl OssArgs {
    /// An [`OssStore`] with the AccessKey from the environment.
    pub fn store(&self) -> Result<OssStore> {
        let key = rag_core::AccessKey::from_env()
            .context("OSS needs ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET")?;
        let mut config = OssConfig::new(&self.region)?.with_credentials(key);
        if let Some(endpoint) = &self.endpoint {
            config = config.with_endpoint(endpoint).path_style(true);
        }
        Ok(OssStore::new(config)?)
    }
}

/// Parses a command-line location: a store URI as it is, anything else as a local path
/// (made absolute, `file:///…`; a directory becomes a prefix).
pub fn location(arg: &str) -> Result<StoreUri> {
    if let Ok(uri) = arg.parse::<StoreUri>() {
        return Ok(uri);
    }
    let path = Path::new(arg);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut text = format!("file://{}", abs.display());
    if (path.is_dir() || arg.ends_with('/')) && !text.ends_with('/') {
        text.push('/');
    }
    text.parse::<StoreUri>()
        .with_context(|| format!("{arg} is neither a store URI nor a usable local path"))
}

/// The store that serves `uri`: local files for `file://`, `store_root` standing in for every
/// bucket when given, else OSS.
pub fn open(
    uri: &StoreUri,
    store_root: Option<&PathBuf>,
    oss: &OssArgs,
) -> Result<Arc<dyn ObjectStore>> {
    Ok(match (uri.scheme(), store_root) {
        (Scheme::File, _) => Arc::new(LocalFileStore::new("/")),
        (_, Some(root)) => Arc::new(LocalFileStore::new(root)),
        (Scheme::Oss | Scheme::S3, None) => Arc::new(oss.store()?),
        (Scheme::Memory, None) => {
            anyhow::bail!("{uri}: mem:// stores exist only inside one process")
        }
    })
}
