//! The RAG answer step (seed step 7) against a real LLM: any OpenAI-compatible server —
//! DashScope (Bailian), vLLM, llama.cpp server, Ollama — configured by environment variables.
//! Retrieval runs on the local backends over the bundled man pages; the LLM answers from the
//! retrieved chunks and cites them. `cargo run -p examples --example llm_answer -- "question"`.
//!
//! | variable | meaning |
//! |---|---|
//! | `RAGLOOP_LLM_BASE_URL` | OpenAI-compatible base URL (`http://127.0.0.1:8000/v1`); unset: DashScope |
//! | `DASHSCOPE_API_KEY` | the API key (DashScope needs one; local servers usually not) |
//! | `RAGLOOP_LLM_MODEL` | the model (`qwen-plus` by default on DashScope; required elsewhere) |
//! | `DASHSCOPE_REGION` | `beijing` (default) or `singapore` |

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bailian_client::{BailianConfig, ChatClient, Region};
use rag_core::local::{HashedEmbedding, HashedEmbeddingConfig, InMemoryStore, LocalVectorIndex};
use rag_core::pipeline::{Answer, Backends, Layout, LogProgress, Pipeline, PipelineOptions};

/// Where the LLM is, read from the environment.
#[derive(Debug, Clone)]
pub struct LlmEnv {
    /// The client configuration (key redacted in `Debug`).
    pub config: BailianConfig,
    /// The model name.
    pub model: String,
}

/// What to say when no LLM is configured (the example's whole output then).
pub const NOT_CONFIGURED: &str = "no LLM configured: set RAGLOOP_LLM_BASE_URL (an OpenAI-compatible \
server such as vLLM, llama.cpp server or Ollama, plus RAGLOOP_LLM_MODEL) or DASHSCOPE_API_KEY \
(Bailian/DashScope; RAGLOOP_LLM_MODEL defaults to qwen-plus)";

impl LlmEnv {
    /// Reads the variables through `get` (`std::env::var` in the example; a map in tests).
    /// `Ok(None)` when nothing is configured.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let key = get(BailianConfig::ENV_API_KEY).filter(|k| !k.is_empty());
        let base = get("RAGLOOP_LLM_BASE_URL").filter(|b| !b.is_empty());
        let model = get("RAGLOOP_LLM_MODEL").filter(|m| !m.is_empty());
        let region = match get("DASHSCOPE_REGION").as_deref() {
            None | Some("") | Some("beijing") | Some("cn-beijing") => Region::Beijing,
            Some("singapore") | Some("ap-southeast-1") => Region::Singapore,
            Some(other) => bail!("DASHSCOPE_REGION={other}: use beijing or singapore"),
        };
        let (config, model) = match (base, key) {
            (None, None) => return Ok(None),
            (Some(base), key) => {
                let model = model.context("RAGLOOP_LLM_MODEL must name the model the server at RAGLOOP_LLM_BASE_URL serves")?;
                let mut c = BailianConfig::new(region).with_api_base(base);
                if let Some(k) = key {
                    c = c.with_api_key(rag_core::Secret::new(k));
                }
                (c, model)
            }
            (None, Some(key)) => (
                BailianConfig::new(region).with_api_key(rag_core::Secret::new(key)),
                model.unwrap_or_else(|| "qwen-plus".into()),
            ),
        };
        Ok(Some(Self { config, model }))
    }
}

/// Indexes the documents in `data_dir` locally and answers `question` with the LLM.
pub async fn answer(env: LlmEnv, data_dir: PathBuf, question: &str) -> Result<Answer> {
    let index_dir = tempfile::tempdir().context("creating a temporary index directory")?;
    let chat = ChatClient::new(env.config, env.model)?;
    let backends = Backends {
        store: Arc::new(InMemoryStore::new()),
        trainer: Arc::new(rag_core::local::LocalProcessBackend::new(
            index_dir.path().join("jobs"),
        )),
        index: Arc::new(LocalVectorIndex::open(index_dir.path().join("index")).await?),
        chat: Arc::new(chat),
        deployer: None,
    };
    let pipeline = Pipeline::new(
        backends,
        Layout::new("mem://ragloop-demo/".parse()?),
        PipelineOptions::default(),
    )
    .with_progress(Arc::new(LogProgress));
    pipeline.ingest(&data_dir).await?;
    let model = HashedEmbedding::new(HashedEmbeddingConfig::default())?;
    pipeline.embed(&model).await?;
    pipeline.index(&model).await?;
    Ok(pipeline.answer(&model, question).await?)
}
