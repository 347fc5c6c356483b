//! Which LLM the commands that need one outside the loop's configuration use (`ragloop train
//! --synthetic`, the `llm_answer` example): any OpenAI-compatible server or DashScope, from
//! environment variables.
//!
//! | variable | meaning |
//! |---|---|
//! | `RAGLOOP_LLM_BASE_URL` | OpenAI-compatible base URL (`http://127.0.0.1:8000/v1`); unset: DashScope |
//! | `DASHSCOPE_API_KEY` | the API key (DashScope needs one; local servers usually not) |
//! | `RAGLOOP_LLM_API_KEY` | the key of an OpenAI-compatible server (what `[llm] backend = "openai"` reads); before `DASHSCOPE_API_KEY` there |
//! | `RAGLOOP_LLM_MODEL` | the model (`qwen-plus` by default on DashScope; required elsewhere) |
//! | `DASHSCOPE_REGION` | `beijing` (default) or `singapore` |

use anyhow::{Context, Result};
use bailian_client::{BailianConfig, Region};

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
        let region: Region = match get("DASHSCOPE_REGION").filter(|r| !r.is_empty()) {
            None => Region::Beijing,
            Some(r) => r.parse().context("DASHSCOPE_REGION")?,
        };
        let (config, model) = match (base, key) {
            (None, None) => return Ok(None),
            (Some(base), key) => {
                let model = model.context("RAGLOOP_LLM_MODEL must name the model the server at RAGLOOP_LLM_BASE_URL serves")?;
                let mut c = BailianConfig::new(region).with_api_base(base);
                // The loop's `[llm] backend = "openai"` key variable, else DashScope's.
                let key = get("RAGLOOP_LLM_API_KEY").filter(|k| !k.is_empty()).or(key);
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
