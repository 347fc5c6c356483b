//! `ragloop`: run the train-to-inference loop, or one of its stages or jobs. This file parses
//! the command line and dispatches; each command is a module of `cmd/`, and the work is done by
//! the `ragloop` library.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

#[derive(Subcommand)]
enum Command {
    /// Answer a question from the index with citations (stage 7): retrieval with the
    /// configuration's embedding model and index, the answer from its LLM.
    Ask(cmd::ask::Args),
    /// Bailian (Model Studio) deployments: deploy a fine-tuned model, show status.
    #[command(subcommand)]
    Bailian(cmd::bailian::BailianCommand),
    /// Copy a directory tree to or from OSS, like `ossutil cp -r`: one side is a local path,
    /// the other an `oss://bucket/prefix/` URI. Reads OSS_REGION (or --endpoint) and
    /// ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
    Cp(cmd::cp::CpArgs),
    /// The batch embedding job: documents (local path or store prefix) → chunks → vectors with
    /// a sentence-transformers model → Parquet shards under --output. Re-running resumes.
    Embed(ragloop::embed::EmbedArgs),
    /// Retrieval quality on a query set: BM25, the hashed model and each --model (dense and
    /// hybrid), as a Markdown table and a PNG chart (hit@k curves, nDCG@10) under --out.
    Eval(ragloop::eval::EvalArgs),
    /// Index the vector shards of the configuration's embedding model (stage 6).
    Index(cmd::index::Args),
    /// Upload a directory of documents to the store's `raw-docs/` (stage 1); unchanged files
    /// are skipped.
    Ingest(cmd::ingest::Args),
    /// PAI-DLC training jobs: submit (the seed's `pai submit`), status, logs, stop.
    /// Reads PAI_REGION, PAI_WORKSPACE_ID and the Alibaba Cloud AccessKey from the environment.
    #[command(subcommand)]
    Pai(cmd::pai::PaiCommand),
    /// Build stage 3's dataset: grounded question/answer pairs in chat `messages` JSONL from
    /// the chunks in the store (questions and answers from `[llm]`; the extractive model
    /// answers questions made from titles), checked (empty, refused, uncited, duplicate,
    /// too long) and split by document into `<root>qa-pairs/{train,validation}.jsonl` with a
    /// `manifest.json`.
    QaPairs(cmd::qa_pairs::Args),
    /// Run the whole loop: ingest, train, (fine-tune, deploy,) embed, index, evaluate,
    /// answer — each stage on the backend the configuration names (the local loop when there
    /// is none); the flags change single fields of it.
    Run(cmd::run::Args),
    /// Serve stage 7 over HTTP on what `run` built: POST /v1/retrieve, /v1/answer (streamed
    /// with "stream": true), /v1/chat/completions (OpenAI-compatible); GET / (a page to ask
    /// from), /healthz, /readyz, /metrics, /openapi.json. RAGLOOP_API_TOKEN, when set, is the
    /// bearer token clients must send.
    Serve(cmd::serve::Args),
    /// The embedding training job (what `run` submits, and what a PAI-DLC job runs): with
    /// `--base-model` fine-tunes a sentence-transformers model on pairs mined from the
    /// documents under `--data` (plus `--queries`/`--pairs`), else fits the hashed model.
    Train(Box<ragloop::train::TrainArgs>),
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in mimalloc.h; the sys crate names
/// only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory mapped instead of returning it to the OS after 10 ms — for the trainer
/// only. It frees and allocates tensors of tens of MiB many times a step; returned pages come
/// back as page faults the kernel must zero — 27 % of a training step (7.3 s vs 10.0 s
/// measured). Every other command keeps mimalloc's default, so what a stage frees goes back
/// to the OS: with purging off everywhere, stage 6 at 300,000 chunks kept 369 MiB resident
/// for a heap that peaked at 151 (343 with the default; BENCHMARKS.md).
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option before any thread is started; the option
    // is a plain integer mimalloc reads on its next purge decision.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Train(_)) {
        keep_freed_memory();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main(cli))
}

async fn async_main(cli: Cli) -> ExitCode {
    ragloop::logging::init();
    let result = match cli.command {
        Command::Ask(args) => cmd::ask::run(args).await,
        Command::Bailian(c) => cmd::bailian::run(c).await,
        Command::Cp(args) => cmd::cp::run(args).await,
        Command::Embed(args) => cmd::embed::run(args).await,
        Command::Eval(args) => cmd::eval::run(args).await,
        Command::Index(args) => cmd::index::run(args).await,
        Command::Ingest(args) => cmd::ingest::run(args).await,
        Command::Pai(c) => cmd::pai::run(c).await,
        Command::QaPairs(args) => cmd::qa_pairs::run(args).await,
        Command::Run(args) => cmd::run::run(args).await,
        Command::Serve(args) => cmd::serve::run(args).await,
        Command::Train(args) => ragloop::train::run(*args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(ragloop::exit::code(&e))
        }
    }
}
