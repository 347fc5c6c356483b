//! `ragloop`: run the train-to-inference loop, or one of its jobs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use examples::config::LoopConfig;
use examples::config_loop::{self, Connected};
use examples::local_loop::{self, LocalLoopConfig};
use examples::progress::BarProgress;
use rag_core::StoreUri;

#[derive(Parser)]
#[command(
    name = "ragloop",
    version,
    about = "Train-to-inference RAG loop",
    after_help = "Exit status: 0 done, 1 failed, 2 bad invocation/configuration/input, \
                  3 credentials missing or refused, 4 not found, 5 service unavailable or timed out."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the loop's configuration comes from (ingest, index, ask, run).
#[derive(clap::Args)]
struct ConfigArg {
    /// The loop's configuration (TOML; see `examples/configs/`). Default: `./ragloop.toml`
    /// when it exists, else the local loop's settings (what `ragloop run` uses).
    #[arg(long, short = 'c', env = "RAGLOOP_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Answer a question from the index with citations (stage 7): retrieval with the
    /// configuration's embedding model and index, the answer from its LLM.
    Ask {
        /// The question.
        question: String,
        #[command(flatten)]
        config: ConfigArg,
        /// Print the answer as JSON (text, citations with source and byte offsets, usage).
        #[arg(long)]
        json: bool,
    },
    /// Bailian (Model Studio) deployments: deploy a fine-tuned model, show status.
    #[command(subcommand)]
    Bailian(examples::bailian::BailianCommand),
    /// Copy a directory tree to or from OSS, like `ossutil cp -r`: one side is a local path,
    /// the other an `oss://bucket/prefix/` URI. Reads OSS_REGION (or --endpoint) and
    /// ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
    Cp(examples::cp::CpArgs),
    /// The batch embedding job: documents (local path or store prefix) → chunks → vectors with
    /// a sentence-transformers model → Parquet shards under --output. Re-running resumes.
    Embed(examples::embed::EmbedArgs),
    /// Retrieval quality on a query set: BM25, the hashed model and each --model (dense and
    /// hybrid), as a Markdown table and a PNG chart (hit@k curves, nDCG@10) under --out.
    Eval(examples::eval::EvalArgs),
    /// Index the vector shards of the configuration's embedding model (stage 6).
    Index {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the stage's summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload a directory of documents to the store's `raw-docs/` (stage 1); unchanged files
    /// are skipped.
    Ingest {
        /// The documents (default: the configuration's `data`).
        #[arg(long)]
        data: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
        /// Print the stage's summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// PAI-DLC training jobs: submit (the seed's `pai submit`), status, logs, stop.
    /// Reads PAI_REGION, PAI_WORKSPACE_ID and the Alibaba Cloud AccessKey from the environment.
    #[command(subcommand)]
    Pai(examples::pai::PaiCommand),
    /// Build stage 3's dataset: grounded question/answer pairs in chat `messages` JSONL from
    /// the chunks in the store (questions and answers from `[llm]`; the extractive model
    /// answers questions made from titles), checked (empty, refused, uncited, duplicate,
    /// too long) and split by document into `<root>qa-pairs/{train,validation}.jsonl` with a
    /// `manifest.json`.
    QaPairs {
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
    },
    /// Run the whole loop: ingest, train, (fine-tune, deploy,) embed, index, evaluate,
    /// answer. Without --config, locally with the flags below; with --config, each stage on
    /// the backend the file names (local or Alibaba Cloud).
    Run {
        /// The loop's configuration (TOML; see `examples/configs/`).
        #[arg(long, short = 'c', env = "RAGLOOP_CONFIG", conflicts_with_all = ["data", "queries", "split", "work_dir", "root", "question", "dims", "model", "fine_tune"])]
        config: Option<PathBuf>,
        /// Print what each stage would do and on which backend, and call nothing.
        #[arg(long)]
        dry_run: bool,
        /// Directory of documents to ingest.
        #[arg(long, default_value = "data/manpages/docs")]
        data: PathBuf,
        /// Evaluation queries (JSONL or JSONL.gz); `none` to skip evaluation.
        #[arg(long, default_value = "data/manpages/queries.jsonl.gz")]
        queries: String,
        /// Query split to evaluate on.
        #[arg(long, default_value = "test")]
        split: String,
        /// Working directory for the local store, index and jobs.
        #[arg(long, default_value = ".ragloop")]
        work_dir: PathBuf,
        /// Bucket prefix, as in the cloud (the local store maps it under the work dir).
        #[arg(long, default_value = "oss://ragloop-demo/")]
        root: StoreUri,
        /// The question to answer at the end.
        #[arg(long, default_value = "How do I duplicate a file descriptor?")]
        question: String,
        /// Embedding dimension.
        #[arg(long, default_value_t = 768)]
        dims: usize,
        /// Also embed, index and evaluate with this sentence-transformers model
        /// (`scripts/fetch-model.sh` fetches all-MiniLM-L6-v2 into models/).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Also fine-tune --model in stage 2 (a training job: `adapter` takes seconds, `full`
        /// minutes) and evaluate the result beside it.
        #[arg(long, value_enum, requires = "model")]
        fine_tune: Option<examples::train::TrainMode>,
        /// Print the summary as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The embedding training job (what `run` submits, and what a PAI-DLC job runs): with
    /// `--base-model` fine-tunes a sentence-transformers model on pairs mined from the
    /// documents under `--data` (plus `--queries`/`--pairs`), else fits the hashed model.
    Train(Box<examples::train::TrainArgs>),
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in mimalloc.h; the sys crate names
/// only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the OS after 10 ms. The trainer frees
/// and allocates tensors of tens of MiB many times a step; returned pages come back as page
/// faults the kernel must zero — 27 % of a training step (7.3 s vs 10.0 s measured).
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option before any thread is started; the option
    // is a plain integer mimalloc reads on its next purge decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

async fn async_main() -> ExitCode {
    examples::logging::init();
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(examples::exit::code(&e))
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Cp(args) => examples::cp::run(args).await?,
        Command::Embed(args) => {
            let json = args.json;
            let progress = if json {
                BarProgress::quiet()
            } else {
                BarProgress::new()
            };
            let summary = examples::embed::run(args, &progress).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", examples::embed::render(&summary));
            }
        }
        Command::Eval(args) => {
            let progress = if args.json {
                BarProgress::quiet()
            } else {
                BarProgress::new()
            };
            let summary = examples::eval::run(&args, Arc::new(progress)).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", std::fs::read_to_string(&summary.report)?);
                println!(
                    "\nReport: {} (chart: {})",
                    summary.report.display(),
                    summary.chart.display()
                );
            }
        }
        Command::Pai(cmd) => examples::pai::run(cmd).await?,
        Command::Bailian(cmd) => examples::bailian::run(cmd).await?,
        Command::Ingest { data, config, json } => {
            let c = connect(&config).await?;
            let stage = c.ingest(data.as_deref(), progress(json)).await?;
            print_stage(&stage, json)?;
        }
        Command::QaPairs {
            config,
            max_chunks,
            questions_per_chunk,
            max_tokens,
            validation,
            pairs,
            allow_uncited,
            json,
        } => {
            if !(0.0..1.0).contains(&validation) {
                return Err(examples::exit::UsageError(format!(
                    "--validation {validation}: a share in [0, 1)"
                ))
                .into());
            }
            let c = connect(&config).await?;
            let options = rag_core::qa::QaOptions {
                max_chunks,
                questions_per_chunk,
                max_tokens,
                validation_fraction: validation,
                require_citation: !allow_uncited,
                ..Default::default()
            };
            let (stage, manifest) = c
                .build_qa_pairs(options, pairs.as_deref(), progress(json))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&manifest)?);
            } else {
                print!(
                    "{}",
                    local_loop::render_stages(std::slice::from_ref(&stage))
                );
            }
        }
        Command::Index { config, json } => {
            let c = connect(&config).await?;
            let model = c.embedding_model().await?;
            let stage = c.index(model.as_ref(), progress(json)).await?;
            print_stage(&stage, json)?;
        }
        Command::Ask {
            question,
            config,
            json,
        } => {
            let c = connect(&config).await?;
            let model = c.embedding_model().await?;
            let (_, answer) = c
                .answer(model.as_ref(), &question, None, progress(true))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", local_loop::render_answer(&answer));
            }
        }
        Command::Run {
            config: Some(path),
            dry_run,
            json,
            ..
        } => {
            let config = LoopConfig::from_file(&path)?;
            if dry_run {
                print!("{}", config_loop::plan(&config, job_command()?)?);
                return Ok(());
            }
            let c = Connected::connect(config, job_command()?).await?;
            let summary = config_loop::run(&c, progress(json)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", config_loop::render(&summary));
            }
        }
        Command::Run { dry_run: true, .. } => {
            print!(
                "{}",
                config_loop::plan(&LoopConfig::default(), job_command()?)?
            );
        }
        Command::Run {
            data,
            queries,
            split,
            work_dir,
            root,
            question,
            dims,
            model,
            fine_tune,
            json,
            ..
        } => {
            let exe = std::env::current_exe().context("locating the ragloop binary")?;
            let config = LocalLoopConfig {
                data_dir: data,
                queries: (queries != "none").then(|| PathBuf::from(queries)),
                split,
                work_dir,
                root,
                question,
                dims,
                neural_model: model,
                fine_tune,
                trainer_command: vec![exe.display().to_string(), "train".into()],
            };
            let progress = if json {
                BarProgress::quiet()
            } else {
                BarProgress::new()
            };
            let summary = local_loop::run(&config, Arc::new(progress)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", local_loop::render(&summary));
            }
        }
        Command::Train(args) => examples::train::run(*args).await?,
    }
    Ok(())
}

/// The command local jobs run: this binary.
fn job_command() -> Result<Vec<String>> {
    let exe = std::env::current_exe().context("locating the ragloop binary")?;
    Ok(vec![exe.display().to_string()])
}

async fn connect(arg: &ConfigArg) -> Result<Connected> {
    let config = LoopConfig::load(arg.config.as_deref())?;
    Connected::connect(config, job_command()?).await
}

fn progress(quiet: bool) -> Arc<BarProgress> {
    Arc::new(if quiet {
        BarProgress::quiet()
    } else {
        BarProgress::new()
    })
}

fn print_stage(stage: &examples::local_loop::StageLine, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(stage)?);
    } else {
        print!("{}", local_loop::render_stages(std::slice::from_ref(stage)));
    }
    Ok(())
}
