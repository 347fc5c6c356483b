//! Which [`ObjectStore`] serves a location, decided in one place for the loop and its jobs.
//!
//! The loop describes its store as a [`StoreSpec`] (local files under the work directory, or
//! OSS in a region / at an endpoint) and hands that description to every job it submits
//! ([`StoreSpec::ENV`], JSON): a job opens its store with the same [`StoreSpec::open`] as its
//! parent, so both read and write the same objects whatever the URIs look like. Run by hand
//! with no description, a command picks the store from the URI's scheme ([`StoreArgs`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use oss_client::{OssConfig, OssStore};
use rag_core::local::LocalFileStore;
use rag_core::{ObjectStore, Scheme, StoreUri};
use serde::{Deserialize, Serialize};

/// A store, described so that another process (a job) opens the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StoreSpec {
    /// [`LocalFileStore`] under `root` (an absolute path): `oss://bucket/key` is
    /// `root/bucket/key`, for every scheme.
    Local {
        /// The directory standing in for every bucket.
        root: PathBuf,
    },
    /// OSS (or any S3-compatible server at `endpoint`), credentials from the environment.
    Oss {
        /// The OSS region (`cn-hangzhou`).
        region: String,
        /// An S3-compatible endpoint instead of OSS's regional one (path-style addressing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
}

impl StoreSpec {
    /// The variable a job finds its parent's store description in (JSON).
    pub const ENV: &'static str = "RAGLOOP_STORE";

    /// A local store under `root`, made absolute so that a job in another directory finds it.
    pub fn local(root: &Path) -> Result<Self> {
        Ok(Self::Local {
            root: absolute(root)?,
        })
    }

    /// The one store factory: what this description names. OSS needs the AccessKey in
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET`.
    pub fn open(&self) -> Result<Arc<dyn ObjectStore>> {
        Ok(match self {
            Self::Local { root } => Arc::new(LocalFileStore::new(root)),
            Self::Oss { region, endpoint } => Arc::new(oss_store(region, endpoint.as_deref())?),
        })
    }

    /// The description as a job receives it (one line of JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a description: JSON as [`to_json`](Self::to_json) writes it, or the short forms
    /// `local:DIR` and `oss:REGION[@ENDPOINT]`.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.starts_with('{') {
            return serde_json::from_str(text)
                .with_context(|| format!("{} = {text:?} is not a store description", Self::ENV));
        }
        match text.split_once(':') {
            Some(("local", dir)) if !dir.is_empty() => Self::local(Path::new(dir)),
            Some(("oss", rest)) if !rest.is_empty() => {
                let (region, endpoint) = match rest.split_once('@') {
                    Some((r, e)) => (r, Some(e.to_string())),
                    None => (rest, None),
                };
                Ok(Self::Oss {
                    region: region.to_string(),
                    endpoint,
                })
            }
            _ => Err(crate::exit::UsageError(format!(
                "store {text:?}: use local:DIR, oss:REGION[@ENDPOINT] or the JSON a parent passes"
            ))
            .into()),
        }
    }

    /// A local store's root directory.
    pub fn local_root(&self) -> Option<&Path> {
        match self {
            Self::Local { root } => Some(root),
            Self::Oss { .. } => None,
        }
    }
}

/// Where OSS is when a command is run by hand (flattened into the commands that talk to it).
#[derive(Debug, Clone, Args)]
pub struct OssArgs {
    /// An S3-compatible endpoint instead of OSS's regional one (uses path-style addressing).
    #[arg(long, env = "OSS_ENDPOINT")]
    pub endpoint: Option<String>,
    /// OSS region.
    #[arg(long, env = "OSS_REGION", default_value = "cn-hangzhou")]
    pub region: String,
}

/// An [`OssStore`] in `region` (or at an S3-compatible `endpoint`, or through the custom
/// domain `OSS_CNAME` names) with the AccessKey from the environment.
fn oss_store(region: &str, endpoint: Option<&str>) -> Result<OssStore> {
    let key = rag_core::AccessKey::from_env()
        .context("OSS needs ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET")?;
    let mut config = OssConfig::new(region)?.with_credentials(key);
    if let Some(endpoint) = endpoint {
        config = config.with_endpoint(endpoint).path_style(true);
    }
    // A bucket's custom domain (`OSS_CNAME=bucket=https://domain`), where this machine must
    // reach it that way; jobs keep the regional (VPC) endpoint.
    Ok(OssStore::new(config.cname_from_env()?)?)
}

impl OssArgs {
    /// The [`OssStore`] these flags name, with the AccessKey from the environment.
    pub fn store(&self) -> Result<OssStore> {
        oss_store(&self.region, self.endpoint.as_deref())
    }

    /// The OSS store these flags name, as a description.
    pub fn spec(&self) -> StoreSpec {
        StoreSpec::Oss {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
        }
    }
}

/// How a job command finds its store: the parent's description, else by scheme.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The store every location is read from and written to, as the loop describes it to its
    /// jobs (JSON), or `local:DIR` (a directory standing in for every bucket) or
    /// `oss:REGION[@ENDPOINT]`. Without it: local files for paths and `file://`, OSS for
    /// `oss://` and `s3://`.
    #[arg(long = "store", env = "RAGLOOP_STORE")]
    pub spec: Option<String>,
    /// Where OSS is.
    #[command(flatten)]
    pub oss: OssArgs,
}

impl StoreArgs {
    /// The store described by `--store`, if given.
    pub fn spec(&self) -> Result<Option<StoreSpec>> {
        self.spec.as_deref().map(StoreSpec::parse).transpose()
    }

    /// The store that serves `uri`.
    pub fn open(&self, uri: &StoreUri) -> Result<Arc<dyn ObjectStore>> {
        if let Some(spec) = self.spec()? {
            return spec.open();
        }
        match uri.scheme() {
            Scheme::File => Ok(Arc::new(LocalFileStore::new("/"))),
            Scheme::Oss | Scheme::S3 => self.oss.spec().open(),
            Scheme::Memory => anyhow::bail!("{uri}: mem:// stores exist only inside one process"),
        }
    }

    /// The store and address of a command-line location: a URI is served by [`open`]
    /// (the described store, or by scheme); a plain path is always a local file or directory,
    /// even when a store is described (a job's `--queries FILE` is a file beside it).
    ///
    /// [`open`]: Self::open
    pub fn locate(&self, arg: &str) -> Result<(Arc<dyn ObjectStore>, StoreUri)> {
        match arg.parse::<StoreUri>() {
            Ok(uri) => Ok((self.open(&uri)?, uri)),
            Err(_) => Ok((Arc::new(LocalFileStore::new("/")), location(arg)?)),
        }
    }

    /// Reads the object (or local file) `arg` names.
    pub async fn read(&self, arg: &str) -> Result<Vec<u8>> {
        let (store, uri) = self.locate(arg)?;
        Ok(store
            .get_bytes(&uri)
            .await
            .with_context(|| format!("reading {arg}"))?
            .to_vec())
    }
}

/// Parses a command-line location: a store URI as it is, anything else as a local path
/// (made absolute, `file:///…`; a directory becomes a prefix).
pub fn location(arg: &str) -> Result<StoreUri> {
    if let Ok(uri) = arg.parse::<StoreUri>() {
        return Ok(uri);
    }
    let path = Path::new(arg);
    let mut text = format!("file://{}", absolute(path)?.display());
    if (path.is_dir() || arg.ends_with('/')) && !text.ends_with('/') {
        text.push('/');
    }
    text.parse::<StoreUri>()
        .with_context(|| format!("{arg} is neither a store URI nor a usable local path"))
}

/// `path` made absolute against the current directory.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the current directory")?
            .join(path)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_description_survives_the_trip_to_a_job() {
        for spec in [
            StoreSpec::Local {
                root: "/work/store".into(),
            },
            StoreSpec::Oss {
                region: "cn-hangzhou".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
            },
            StoreSpec::Oss {
                region: "cn-beijing".into(),
                endpoint: None,
            },
        ] {
            assert_eq!(StoreSpec::parse(&spec.to_json()).unwrap(), spec);
        }
        assert_eq!(
            StoreSpec::parse("oss:cn-shanghai@http://x:1").unwrap(),
            StoreSpec::Oss {
                region: "cn-shanghai".into(),
                endpoint: Some("http://x:1".into())
            }
        );
        assert!(StoreSpec::parse("local:").is_err());
        assert!(StoreSpec::parse("{\"backend\":\"ftp\"}").is_err());
    }

    #[tokio::test]
    async fn with_a_description_every_scheme_is_served_by_that_store() {
        let dir = tempfile::tempdir().unwrap();
        let args = StoreArgs {
            spec: Some(StoreSpec::local(dir.path()).unwrap().to_json()),
            oss: OssArgs {
                endpoint: None,
                region: "cn-hangzhou".into(),
            },
        };
        for uri in ["oss://bkt/k", "file:///ragloop-no-such-dir/k"] {
            let uri: StoreUri = uri.parse().unwrap();
            args.open(&uri)
                .unwrap()
                .put(&uri, bytes::Bytes::from_static(b"x"))
                .await
                .unwrap();
        }
        // `file:///ragloop-no-such-dir/k` went under the described root, not to the real `/`.
        assert!(dir.path().join("bkt/k").is_file());
        assert!(dir.path().join("ragloop-no-such-dir/k").is_file());
        assert!(!Path::new("/ragloop-no-such-dir").exists());
    }
}
