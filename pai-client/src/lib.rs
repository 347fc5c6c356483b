//! # pai-client
//!
//! Alibaba Cloud PAI-DLC training jobs for ragloop (seed steps 2 and 3,
//! `pai submit --framework pytorch|deepspeed --script … --data oss://… --output oss://…`).
//!
//! - [`PaiBackend`] implements [`rag_core::TrainingBackend`]: a `JobSpec` becomes a DLC job,
//!   DLC's statuses map to rag-core's (with the failure reason), logs come from the pods.
//! - [`PaiClient`] is the typed client of the DLC API (2020-12-03, ROA): CreateJob, GetJob,
//!   ListJobs (paginated), StopJob, GetPodLogs; it signs every request, retries throttling
//!   (`Throttling.*`, 429), 5xx and time-outs with backoff, and keeps the vendor's error code,
//!   message and request id in typed errors.
//! - [`signing`]: `ACS3-HMAC-SHA256` request signatures, tested against the documented example.
//!
//! ```no_run
//! use pai_client::{DlcDefaults, PaiBackend, PaiClient, PaiConfig};
//! use rag_core::{JobKind, JobSpec, TrainingBackend, WaitOptions};
//!
//! # async fn demo() -> rag_core::Result<()> {
//! // PAI_REGION, PAI_WORKSPACE_ID and the Alibaba Cloud AccessKey from the environment.
//! let client = PaiClient::new(PaiConfig::from_env()?)?;
//! let backend = PaiBackend::new(client, DlcDefaults {
//!     image: "registry.cn-hangzhou.aliyuncs.com/my/ragloop:latest".into(),
//!     resource_id: None,
//!     ecs_spec: "ecs.gn7i-c8g1.2xlarge".into(),
//!     oss_region: "cn-hangzhou".into(),
//!     mounts: Vec::new(),
//! });
//! let spec = JobSpec::new(
//!     "emb-train",
//!     JobKind::EmbeddingFineTune,
//!     vec!["ragloop".into(), "train".into()],
//!     "oss://my-bucket/models/emb-v1/".parse()?,
//! )
//! .with_input("data", "oss://my-bucket/raw-docs/".parse()?);
//! let id = backend.submit(&spec).await?;
//! let status = backend.wait(&id, WaitOptions::default()).await?;
//! println!("{id}: {status:?}");
//! # Ok(()) }
//! ```

mod backend;
mod client;
mod config;
pub mod jobs;
pub mod signing;

pub use backend::{DlcDefaults, PaiBackend, map_status, shell_join};
pub use client::{PaiClient, SignedRequest};
pub use config::{API_VERSION, PaiConfig};
