//! The README's main job as a program: the seven stages on the local backends (files on disk,
//! a process per training job, the embedded index, the extractive answerer), evaluated on the
//! bundled man-page queries.
//!
//! `cargo run --release -p examples --example local_loop [-- --data DIR --queries FILE]`
//!
//! Stage 2 runs as a job that re-runs this program with `train` (what `ragloop train` does),
//! the way a PAI-DLC job runs the same command in a container.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use examples::local_loop::{self, LocalLoopConfig, LoopSummary};
use examples::progress::BarProgress;

/// The example's flags.
#[derive(Debug, Parser)]
pub struct Opts {
    /// Directory of documents.
    #[arg(long, default_value = "data/manpages/docs")]
    pub data: PathBuf,
    /// Evaluation queries (JSONL[.gz]).
    #[arg(long, default_value = "data/manpages/queries.jsonl.gz")]
    pub queries: PathBuf,
    /// Working directory (store, index, jobs).
    #[arg(long, default_value = ".ragloop-example")]
    pub work_dir: PathBuf,
    /// The question answered at the end.
    #[arg(long, default_value = "How do I duplicate a file descriptor?")]
    pub question: String,
    /// Embedding dimension of the hashed model.
    #[arg(long, default_value_t = 768)]
    pub dims: usize,
}

/// The training job's entry point (`<this program> train …`).
#[allow(dead_code)] // used by `main` only
#[derive(Debug, Parser)]
struct Train {
    #[command(flatten)]
    args: examples::train::TrainArgs,
}

/// Runs the loop; `trainer` is the training command, program first.
pub async fn run(opts: Opts, trainer: Vec<String>) -> Result<LoopSummary> {
    let config = LocalLoopConfig {
        data_dir: opts.data,
        queries: Some(opts.queries),
        split: "test".into(),
        work_dir: opts.work_dir,
        root: "oss://ragloop-demo/".parse()?,
        question: opts.question,
        dims: opts.dims,
        neural_model: None,
        fine_tune: None,
        trainer_command: trainer,
    };
    local_loop::run(&config, Arc::new(BarProgress::new())).await
}

#[allow(dead_code)] // the test that includes this file calls `run` only
fn main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        examples::logging::init();
        if std::env::args().nth(1).as_deref() == Some("train") {
            let train = Train::parse_from(std::env::args().skip(1));
            return examples::train::run(train.args).await;
        }
        let exe = std::env::current_exe().context("locating this program")?;
        let summary = run(
            Opts::parse(),
            vec![exe.display().to_string(), "train".into()],
        )
        .await?;
        print!("{}", local_loop::render(&summary));
        Ok(())
    })
}
