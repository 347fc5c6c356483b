//! # pai-client
//!
//! Alibaba Cloud PAI-DLC training jobs for ragloop (seed steps 2 and 3,
//! `pai submit --framework pytorch|deepspeed --script … --data oss://… --output oss://…`).
//!
//! - [`signing`]: `ACS3-HMAC-SHA256` request signatures, tested against the documented example.
//!
//! ```
//! use pai_client::PaiConfig;
//! let config = PaiConfig::new("cn-shanghai", "ws-123")?;
//! assert_eq!(config.endpoint(), "https://pai-dlc.cn-shanghai.aliyuncs.com");
//! # Ok::<(), rag_core::Error>(())
//! ```

mod config;
pub mod signing;

pub use config::{API_VERSION, PaiConfig};
