//! # pai-client
//!
//! Alibaba Cloud PAI-DLC training jobs for ragloop (seed steps 2 and 3,
//! `pai submit --framework pytorch|deepspeed --script … --data oss://… --output oss://…`).
//!
//! **Status:** typed configuration only. What comes next (see the pai-client issue): a
//! [`rag_core::TrainingBackend`] over the PAI-DLC API (version 2020-12-03: CreateJob, GetJob,
//! ListJobs, StopJob, logs) with ACS3-HMAC-SHA256 request signing, tested over wiremock. Until
//! then the pipeline runs the same job commands on [`rag_core::local::LocalProcessBackend`].
//!
//! ```
//! use pai_client::PaiConfig;
//! let config = PaiConfig::new("cn-shanghai", "ws-123")?;
//! assert_eq!(config.endpoint(), "https://pai-dlc.cn-shanghai.aliyuncs.com");
//! # Ok::<(), rag_core::Error>(())
//! ```

mod config;

pub use config::{API_VERSION, PaiConfig};
