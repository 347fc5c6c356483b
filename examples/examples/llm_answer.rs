//! The RAG answer step against any OpenAI-compatible LLM (DashScope, vLLM, llama.cpp server,
//! Ollama), configured by environment variables.
//!
//! ```sh
//! DASHSCOPE_API_KEY=sk-… cargo run -p examples --example llm_answer -- "How do I duplicate a file descriptor?"
//! RAGLOOP_LLM_BASE_URL=http://127.0.0.1:11434/v1 RAGLOOP_LLM_MODEL=qwen2.5 cargo run -p examples --example llm_answer
//! ```
//!
//! Retrieval runs on the local backends over the bundled man pages; the LLM answers from the
//! retrieved chunks and cites them.
//!
//! | variable | meaning |
//! |---|---|
//! | `RAGLOOP_LLM_BASE_URL` | OpenAI-compatible base URL (`http://127.0.0.1:8000/v1`); unset: DashScope |
//! | `DASHSCOPE_API_KEY` | the API key (DashScope needs one; local servers usually not) |
//! | `RAGLOOP_LLM_MODEL` | the model (`qwen-plus` by default on DashScope; required elsewhere) |
//! | `DASHSCOPE_REGION` | `beijing` (default) or `singapore` |

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use bailian_client::ChatClient;
use rag_core::local::{HashedEmbedding, HashedEmbeddingConfig, InMemoryStore, LocalVectorIndex};
use rag_core::pipeline::{Answer, Layout, Pipeline};
use ragloop::llm_env::{LlmEnv, NOT_CONFIGURED};

/// Indexes the documents in `data_dir` locally and answers `question` with the LLM.
pub async fn answer(env: LlmEnv, data_dir: PathBuf, question: &str) -> Result<Answer> {
    let index_dir = tempfile::tempdir().context("creating a temporary index directory")?;
    let chat = ChatClient::new(env.config, env.model)?;
    let pipeline = Pipeline::new(
        Arc::new(InMemoryStore::new()),
        Layout::new("mem://ragloop-demo/".parse()?),
    )
    .with_index(Arc::new(
        LocalVectorIndex::open(index_dir.path().join("index")).await?,
    ))
    .with_chat(Arc::new(chat));
    pipeline.ingest(&data_dir).await?;
    let model = HashedEmbedding::new(HashedEmbeddingConfig::default())?;
    pipeline.embed(&model).await?;
    pipeline.index(&model).await?;
    Ok(pipeline.answer(&model, question).await?)
}

#[allow(dead_code)] // the test that includes this file calls `answer` only
#[tokio::main]
async fn main() -> ExitCode {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "How do I duplicate a file descriptor?".into());
    let env = match LlmEnv::from_vars(|k| std::env::var(k).ok()) {
        Ok(Some(env)) => env,
        Ok(None) => {
            eprintln!("{NOT_CONFIGURED}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/manpages/docs");
    match answer(env, data, &question).await {
        Ok(a) => {
            println!("Q: {}\nA: {}", a.question, a.text);
            for c in &a.citations {
                println!(
                    "  [{}] {} (bytes {}..{})",
                    c.chunk_id, c.source, c.start, c.end
                );
            }
            println!(
                "  retrieval {:.1} ms, generation {:.1} ms, {} prompt + {} completion tokens",
                a.retrieval_time.as_secs_f64() * 1e3,
                a.generation_time.as_secs_f64() * 1e3,
                a.usage.prompt_tokens,
                a.usage.completion_tokens
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
