//! # bailian-client
//!
//! Alibaba Cloud Model Studio (Bailian / DashScope) for ragloop: the LLM that answers (seed
//! step 7), fine-tunes (step 3) and deployments (step 4).
//!
//! **Status:** typed configuration only. What comes next (see the bailian-client issue): an
//! OpenAI-compatible client implementing [`rag_core::ChatModel`] (with SSE streaming) and
//! [`rag_core::EmbeddingModel`], and the fine-tune and deployment APIs behind
//! [`rag_core::TrainingBackend`] and [`rag_core::ModelDeployer`]. Because the base URL is
//! configuration, the same client serves vLLM, llama.cpp server or Ollama.
//!
//! ```
//! use bailian_client::{BailianConfig, Region};
//! let config = BailianConfig::new(Region::Singapore);
//! assert_eq!(config.api_base(), "https://dashscope-intl.aliyuncs.com/compatible-mode/v1");
//! let local = BailianConfig::new(Region::Beijing).with_api_base("http://127.0.0.1:8000/v1");
//! assert_eq!(local.api_base(), "http://127.0.0.1:8000/v1");
//! ```

mod config;

pub use config::{BailianConfig, Region};
