//! `ragloop qa-pairs`: stage 3's dataset.

use std::path::PathBuf;

use anyhow::Result;

use super::{ConfigArg, print_stage, progress};

/// Arguments of `ragloop qa-pairs`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Chunks to use at most (an even sample over the corpus).
    #[arg(long, default_value_t = 1000)]
    max_chunks: usize,
    /// Questions per chunk.
    #[arg(long, default_value_t = 1)]
    questions_per_chunk: usize,
    /// The base model's limit on one example, in tokens (estimated conservatively).
    #[arg(long, default_value_t = 2048)]
    max_tokens: usize,
    /// Share of documents held out for validation.
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// Your own pairs instead of generated ones: JSONL of {"question", "answer",
    /// "chunk_id" | "context"[, "doc_id"]}, checked and written the same way.
    #[arg(long)]
    pairs: Option<PathBuf>,
    /// Keep answers that cite no chunk.
    #[arg(long)]
    allow_uncited: bool,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

/// Builds and writes the dataset.
pub async fn run(args: Args) -> Result<()> {
    if !(0.0..1.0).contains(&args.validation) {
        return Err(ragloop::exit::UsageError(format!(
            "--validation {}: a share in [0, 1)",
            args.validation
        ))
        .into());
    }
    let runner = args.config.connect().await?;
    let options = ragloop::rag_core::qa::QaOptions {
        max_chunks: args.max_chunks,
        questions_per_chunk: args.questions_per_chunk,
        max_tokens: args.max_tokens,
        validation_fraction: args.validation,
        require_citation: !args.allow_uncited,
        ..Default::default()
    };
    let (stage, manifest) = runner
        .build_qa_pairs(options, args.pairs.as_deref(), progress(args.json))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
        Ok(())
    } else {
        print_stage(&stage, false)
    }
}
