//! `ragloop run`: the whole loop. Without `--config` it runs `LoopConfig::default()` (or
//! `./ragloop.toml`), with it the file; the flags change single fields of either, and
//! `--dry-run` prints the plan of exactly what would run.

use std::path::PathBuf;

use anyhow::Result;
use ragloop::config::{Overrides, Training};
use ragloop::rag_core::StoreUri;
use ragloop::runner::{self, Runner};
use ragloop::train::TrainMode;

use super::{ConfigArg, job_command, progress};

/// Arguments of `ragloop run`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Print what each stage would do and on which backend, and call nothing.
    #[arg(long)]
    dry_run: bool,
    /// Directory of documents to ingest [config: data; default: data/manpages/docs].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Evaluation queries (JSONL or JSONL.gz); `none` to skip evaluation [config:
    /// eval.queries; default: the bundled queries with the bundled documents].
    #[arg(long)]
    queries: Option<PathBuf>,
    /// Query split to evaluate on [config: eval.split; default: test].
    #[arg(long)]
    split: Option<String>,
    /// Working directory for the local store, index and jobs [config: work_dir; default:
    /// .ragloop].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Bucket prefix, as in the cloud (the local store maps it under the work dir) [config:
    /// root; default: oss://ragloop-demo/].
    #[arg(long)]
    root: Option<StoreUri>,
    /// The question to answer at the end [config: eval.question].
    #[arg(long)]
    question: Option<String>,
    /// Dimension of the hashed model [config: embedding.dims; default: 768].
    #[arg(long)]
    dims: Option<usize>,
    /// A sentence-transformers model (directory or store prefix) instead of the hashed one
    /// [config: embedding.model] (`scripts/fetch-model.sh` fetches all-MiniLM-L6-v2 into
    /// models/).
    #[arg(long)]
    model: Option<String>,
    /// Fine-tune --model in stage 2 (a training job: `adapter` takes seconds, `full`
    /// minutes) and evaluate the result beside the base model [config: embedding.train].
    #[arg(long, value_enum)]
    fine_tune: Option<TrainMode>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs the loop (or prints its plan).
pub async fn run(args: Args) -> Result<()> {
    let overrides = Overrides {
        data: args.data,
        queries: args.queries,
        split: args.split,
        work_dir: args.work_dir,
        root: args.root,
        question: args.question,
        dims: args.dims,
        model: args.model,
        train: args.fine_tune.map(|m| match m {
            TrainMode::Full => Training::Full,
            TrainMode::Adapter => Training::Adapter,
        }),
    };
    let config = args.config.load()?.with_overrides(overrides)?;
    if args.dry_run {
        print!("{}", ragloop::plan::plan(&config, job_command()?)?);
        return Ok(());
    }
    let runner = Runner::connect(config, job_command()?).await?;
    let summary = runner::run(&runner, progress(args.json)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", ragloop::render::render(&summary));
    }
    Ok(())
}
