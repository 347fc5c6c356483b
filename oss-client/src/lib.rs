//! # oss-client
//!
//! Alibaba Cloud OSS for ragloop (seed step 1, `ossutil cp -r ./data oss://<bucket>/raw-docs/`,
//! and every later step that reads or writes OSS).
//!
//! - [`OssStore`] implements [`rag_core::ObjectStore`] over OSS's S3-compatible API with
//!   `aws-sdk-s3`: regional (and `-internal`) endpoints, virtual-hosted addressing, checksums only
//!   when required (OSS rejects the SDK's default CRC trailers), multipart uploads with bounded
//!   parallelism and abort on failure, streamed and ranged downloads, retries with backoff on
//!   throttling, 5xx and time-outs, and OSS error codes mapped to [`rag_core::Error`]. Any
//!   S3-compatible server works through [`OssConfig::with_endpoint`]; a bucket's custom domain
//!   (CNAME) through [`OssConfig::with_cname`] or `OSS_CNAME=bucket=https://domain`.
//! - [`cp`] copies directory trees both ways, like `ossutil cp -r`.
//!
//! ```no_run
//! use oss_client::{OssConfig, OssStore};
//! use rag_core::ObjectStore;
//!
//! # async fn demo() -> rag_core::Result<()> {
//! // OSS_REGION, ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET from the env.
//! let store = OssStore::new(OssConfig::from_env()?)?;
//! let uri = "oss://my-bucket/raw-docs/hello.txt".parse()?;
//! store.put(&uri, "hello".into()).await?;
//! assert_eq!(store.get_bytes(&uri).await?, "hello");
//! # Ok(()) }
//! ```
//!
//! ```
//! use oss_client::OssConfig;
//! let config = OssConfig::new("cn-hangzhou")?.internal(true);
//! assert_eq!(config.endpoint(), "https://s3.oss-cn-hangzhou-internal.aliyuncs.com");
//! # Ok::<(), rag_core::Error>(())
//! ```

mod config;
pub mod cp;
mod error;
mod multipart;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{MIN_PART_SIZE, OssConfig};
pub use store::{OssStore, SHA256_METADATA};
