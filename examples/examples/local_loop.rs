//! The README's main job as a program: the local loop (`LoopConfig::default()`: files on disk,
//! a process per training job, the embedded index, the extractive answerer) run by the same
//! runner as `ragloop run`, evaluated on the bundled man-page queries.
//!
//! `cargo run --release -p examples --example local_loop [-- --data DIR --queries FILE]`
//!
//! Stage 2 runs as a job that re-runs this program with `train` (what `ragloop train` does),
//! the way a PAI-DLC job runs the same command in a container.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use ragloop::config::{LoopConfig, Overrides};
use ragloop::progress::BarProgress;
use ragloop::runner::{self, LoopSummary, Runner};

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
    /// The embedding model (a pretrained name, a directory, or `hashed`).
    #[arg(long, default_value = "all-MiniLM-L6-v2")]
    pub model: String,
    /// Embedding dimension of the hashed model.
    #[arg(long, default_value_t = 768)]
    pub dims: usize,
}

/// The training job's entry point (`<this program> train …`).
#[allow(dead_code)] // used by `main` only
#[derive(Debug, Parser)]
struct Train {
    #[command(flatten)]
    args: ragloop::train::TrainArgs,
}

/// Runs the loop; `job_command` is the program its jobs run (it must understand `train`).
pub async fn run(opts: Opts, job_command: Vec<String>) -> Result<LoopSummary> {
    let config = LoopConfig::default().with_overrides(Overrides {
        data: Some(opts.data),
        queries: Some(opts.queries),
        work_dir: Some(opts.work_dir),
        question: Some(opts.question),
        dims: Some(opts.dims),
        model: Some(opts.model),
        ..Default::default()
    })?;
    let runner = Runner::connect(config, job_command).await?;
    runner::run(&runner, Arc::new(BarProgress::new())).await
}

#[allow(dead_code)] // the test that includes this file calls `run` only
fn main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        ragloop::logging::init();
        if std::env::args().nth(1).as_deref() == Some("train") {
            let train = Train::parse_from(std::env::args().skip(1));
            return ragloop::train::run(train.args).await;
        }
        let exe = std::env::current_exe().context("locating this program")?;
        let summary = run(Opts::parse(), vec![exe.display().to_string()]).await?;
        print!("{}", ragloop::render::render(&summary));
        Ok(())
    })
}
