//! The RAG answer step against any OpenAI-compatible LLM (DashScope, vLLM, llama.cpp server,
//! Ollama), configured by environment variables; see `examples::llm_answer`.
//!
//! ```sh
//! DASHSCOPE_API_KEY=sk-… cargo run -p examples --example llm_answer -- "How do I duplicate a file descriptor?"
//! RAGLOOP_LLM_BASE_URL=http://127.0.0.1:11434/v1 RAGLOOP_LLM_MODEL=qwen2.5 cargo run -p examples --example llm_answer
//! ```

use std::process::ExitCode;

use examples::llm_answer::{LlmEnv, NOT_CONFIGURED, answer};

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
