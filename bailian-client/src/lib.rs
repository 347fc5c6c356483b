//! # bailian-client
//!
//! Alibaba Cloud Model Studio (Bailian / DashScope) for ragloop: the LLM that answers (seed
//! step 7), the embeddings API, fine-tunes (step 3) and deployments (step 4).
//!
//! - [`ChatClient`] implements [`rag_core::ChatModel`] over the OpenAI-compatible
//!   `/chat/completions`: non-streaming, and streaming over SSE with
//!   `stream_options.include_usage` (the final usage-only chunk with empty `choices`, then
//!   `data: [DONE]`); temperature/top_p/max_tokens/stop/seed.
//! - [`EmbeddingClient`] implements [`rag_core::EmbeddingModel`] over `/embeddings`
//!   (text-embedding-v3/v4 with `dimensions`), in batches of at most 10 texts, with bounded
//!   concurrency.
//! - [`RerankClient`] implements [`rag_core::Reranker`] over DashScope's text-rerank API
//!   (`/services/rerank/text-rerank/text-rerank`, the GTE-Rerank models), in batches, scores
//!   put back in input order.
//! - [`ModelStudio`]: the native API — file upload (`purpose=fine-tune`), fine-tune jobs
//!   (create with typed hyper-parameters, status, logs, cancel), deployments (the deployable
//!   models and their base capacity, create with a [`DeployPlan`], status, list, scale,
//!   delete) and the seed's model-import call (`POST /api/v1/models`, not in the vendor's
//!   reference: the documented way is deploying the fine-tune's output). Model Studio
//!   documents fine-tunes and deployments for the China (Beijing) region only; errors from
//!   another region say so.
//! - [`BailianFineTunes`] implements [`rag_core::TrainingBackend`] for LLM fine-tune jobs: the
//!   JSONL files under the job's `data` (and `validation`) input are uploaded from any
//!   [`rag_core::ObjectStore`], the job is created on `base_model`, and on success the
//!   fine-tuned model's id is written to `<output>/bailian-model.json` before `_SUCCESS`.
//!   [`BailianDeployer`] implements [`rag_core::ModelDeployer`]: `model_path` is a model id or
//!   such an output prefix, so the pipeline's deploy stage picks up what the fine-tune made;
//!   its capacity counts instances of the model's base capacity; deploying the same model
//!   twice returns the live deployment.
//! - Errors: DashScope's error JSON (both the compatible `{"error": {…}}` and the native
//!   `{"code", "message", "request_id"}` shapes) becomes a typed [`rag_core::Error`] that keeps
//!   the code, message and request id; content-filter refusals are
//!   [`rag_core::Error::ContentFiltered`]; 429, 5xx, time-outs and lost connections are retried
//!   with exponential backoff honouring `Retry-After`.
//!
//! Base URL, key, region, workspace (`X-DashScope-WorkSpace`, for keys of a non-default
//! workspace), time-outs and retry policy are [`BailianConfig`], so the same client
//! serves DashScope (Beijing or Singapore), vLLM, llama.cpp server or Ollama. The API key is a
//! [`rag_core::Secret`]: it never appears in `Debug`, logs or errors.
//!
//! ```no_run
//! use bailian_client::{BailianConfig, ChatClient, Region};
//! use rag_core::{ChatModel, ChatRequest};
//!
//! # async fn demo() -> rag_core::Result<()> {
//! let config = BailianConfig::from_env(Region::Beijing)?; // DASHSCOPE_API_KEY
//! let llm = ChatClient::new(config, "qwen-plus")?;
//! let answer = llm.chat(&ChatRequest::user("Context: …\nQuestion: …")).await?;
//! println!("{} ({} tokens)", answer.content, answer.usage.total_tokens);
//! # Ok(()) }
//! ```

mod backend;
mod chat;
mod config;
mod embeddings;
mod error;
mod http;
mod rerank;
pub mod sse;
mod studio;

pub use backend::{BailianDeployer, BailianFineTunes, MODEL_RECORD, SUFFIX_KEY};
pub use chat::ChatClient;
pub use config::{BailianConfig, Region};
pub use embeddings::{EmbeddingClient, EmbeddingOptions};
pub use error::ApiError;
pub use rerank::{RerankClient, RerankOptions};
pub use studio::{
    CreateDeployment, CreateFineTune, DeployPlan, DeployableModel, DeploymentInfo,
    FINE_TUNE_PURPOSE, FineTuneJob, MAX_SUFFIX_CHARS, ModelStudio,
};
