//! # oss-client
//!
//! Alibaba Cloud OSS for ragloop (seed step 1, `ossutil cp -r ./data oss://<bucket>/raw-docs/`,
//! and every later step that reads or writes OSS).
//!
//! **Status:** typed configuration only. What comes next (see the oss-client issue): an
//! implementation of [`rag_core::ObjectStore`] over `aws-sdk-s3` (OSS speaks S3) with multipart
//! uploads, ranged and streamed downloads, retries, and a recursive `cp` like `ossutil cp -r`,
//! tested against a real S3-compatible server. Until then the local pipeline uses
//! [`rag_core::local::LocalFileStore`] with the same `oss://bucket/key` URIs.
//!
//! ```
//! use oss_client::OssConfig;
//! let config = OssConfig::new("cn-hangzhou")?.internal(true);
//! assert_eq!(config.endpoint(), "https://s3.oss-cn-hangzhou-internal.aliyuncs.com");
//! # Ok::<(), rag_core::Error>(())
//! ```

mod config;

pub use config::OssConfig;
