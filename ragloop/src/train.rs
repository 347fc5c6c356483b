//! `ragloop train`: the embedding training job (seed step 2) — what the local loop submits as a
//! job and what a PAI-DLC container runs (`--data`/`--output` from the seed, or the
//! `RAGLOOP_INPUT_DATA`/`RAGLOOP_OUTPUT` a `TrainingBackend` sets).
//!
//! With `--base-model` it fine-tunes a sentence-transformers model with
//! [`embed_runtime::train`]: pairs mined from the raw documents, plus optional query sets
//! (`--queries`, e.g. the `train` split) and user pairs (`--pairs`), evaluation of the base and
//! the trained model on `--eval-queries`, and a sentence-transformers directory, a report
//! (`training-report.json` + `.md`) and `_SUCCESS` written under `--output`. Without it, it fits
//! the local hashed model (the default of `ragloop run`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use embed_runtime::SentenceEmbedder;
use embed_runtime::train::hard::HardOptions;
use embed_runtime::train::pairs::{self, MiningOptions, Pair, PairOrigin};
use embed_runtime::train::synthetic::{SyntheticOptions, SyntheticReport, synthetic_pairs};
use embed_runtime::train::{
    AdapterTrainer, EmbeddingTrainer, Objective, StepLog, TrainConfig, TrainReport, evaluate,
    evaluate_sets,
};
use indicatif::{ProgressBar, ProgressStyle};
use rag_core::eval::{EvalQuery, RetrievalMetrics};
use rag_core::local::{HashedEmbedding, HashedEmbeddingConfig};
use rag_core::training::SUCCESS_MARKER;
use rag_core::{Document, ObjectStore, StoreUri};
use serde::Serialize;

/// What `ragloop train --base-model` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMode {
    /// Fine-tune every weight of the encoder.
    Full,
    /// Keep the encoder frozen and fit a linear adapter (a `Dense` module) on its embeddings:
    /// seconds instead of minutes, for small data.
    Adapter,
}

use crate::stores::{self, StoreArgs};

mod fusion;
mod merge;
mod negatives;
mod passages;
mod reranker;

pub use merge::{Merge, MergeReport};
pub use negatives::{NegativeReport, RoundTripReport};
pub use passages::PassageReport;
pub use reranker::RerankerSummary;

/// What labelled queries train on as their positives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Passages {
    /// The document's chunk (as stage 5 cuts them) the base model ranks highest for the
    /// query — what the loop retrieves; the vectors come from and go to the pooled-vector
    /// cache. The adapter also mines its hard negatives among the other documents' chunks;
    /// full fine-tuning uses it for pairs from `--queries` (mined, synthetic and user pairs
    /// keep their passages).
    Chunks,
    /// The start of the document (title and text, truncated), in-batch negatives only.
    Documents,
    /// Full fine-tuning only: two pairs per labelled query, its document's best chunk and
    /// the document's start — the chunk the loop ranks and the page as a whole (on held-out
    /// train-split queries over the chunks, 0.798 nDCG@10 against 0.781 for best chunks
    /// alone at the same number of steps; BENCHMARKS.md).
    Both,
}

/// The loss of full fine-tuning (`--loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Loss {
    /// Multiple-negatives ranking: each query's document against the batch's other passages
    /// and its hard negatives.
    Contrastive,
    /// GPL's distillation: the student's cosine margin between each positive and hard
    /// negative regressed onto a hybrid teacher's (base model + BM25); needs `--negatives`.
    MarginMse,
    /// Both terms, summed; needs `--negatives`.
    Both,
}

impl From<Loss> for Objective {
    fn from(l: Loss) -> Self {
        match l {
            Loss::Contrastive => Objective::Contrastive,
            Loss::MarginMse => Objective::MarginMse,
            Loss::Both => Objective::Both,
        }
    }
}

/// Arguments of `ragloop train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Documents: a store prefix (`oss://bucket/raw-docs/`) or a local path.
    #[arg(long, env = "RAGLOOP_INPUT_DATA")]
    pub data: String,
    /// Model output prefix (`oss://bucket/models/emb-v1/`) or a local directory.
    #[arg(long, env = "RAGLOOP_OUTPUT")]
    pub output: String,
    /// Train a cross-encoder reranker (for `[rerank] backend = "local"`) instead of the
    /// embedding model, starting from `--base-model`'s encoder: each query's positive is its
    /// document's best chunk and its `--negatives` (default 3) other documents' chunks, as the
    /// base model ranks them; `--epochs`, `--batch-size` (queries per step, default 8),
    /// `--learning-rate` (3e-5) and `--max-passage-tokens` (pair length, 256) apply.
    #[arg(long)]
    pub reranker: bool,
    /// A sentence-transformers model to fine-tune (local directory or store prefix). Without
    /// it the local hashed model is fitted instead.
    #[arg(long, env = "RAGLOOP_BASE_MODEL")]
    pub base_model: Option<String>,
    /// `full` fine-tuning or a linear `adapter` on the frozen encoder.
    #[arg(long, value_enum, default_value_t = TrainMode::Full, env = "RAGLOOP_HP_MODE")]
    pub mode: TrainMode,
    /// Embedding dimension of the hashed model (without `--base-model`).
    #[arg(long, default_value_t = 768, value_parser = crate::bounded(1, rag_core::MAX_DIMS as u64))]
    pub dims: usize,
    /// Queries with known relevant documents to train on (JSONL or JSONL.gz of `{"text",
    /// "relevant", "split"}`; path or store URI).
    #[arg(long)]
    pub queries: Option<String>,
    /// Which split of `--queries` to train on.
    #[arg(long, default_value = "train")]
    pub queries_split: String,
    /// User pairs: JSONL of `{"query", "passage"}` (path or store URI).
    #[arg(long)]
    pub pairs: Option<String>,
    /// Questions to ask an LLM to write per document (synthetic pairs; 0 = none). The LLM is
    /// the one `llm_answer` uses: `RAGLOOP_LLM_BASE_URL` (any OpenAI-compatible server) and
    /// `RAGLOOP_LLM_MODEL`, or `DASHSCOPE_API_KEY` for Bailian.
    #[arg(long, default_value_t = 0)]
    pub synthetic: usize,
    /// Documents to ask the LLM about (spread evenly over the corpus; default: all).
    #[arg(long)]
    pub synthetic_docs: Option<usize>,
    /// Token budget of the synthetic questions (prompt + completion as the server reports
    /// them): no new call starts once it is spent. Default: no limit.
    #[arg(long)]
    pub synthetic_tokens: Option<u64>,
    /// What to mine from the documents: any of `titles,headings,cloze,leads`, or `none`.
    #[arg(long, default_value = "titles,headings,cloze")]
    pub mine: String,
    /// Share of the documents whose pairs are held out of training and evaluated on.
    #[arg(long, default_value_t = 0.05)]
    pub hold_out: f64,
    /// Queries to evaluate the base and trained models on (path or store URI).
    #[arg(long)]
    pub eval_queries: Option<String>,
    /// Which split(s) of `--eval-queries` to evaluate on, comma-separated (never train on them).
    #[arg(long, default_value = "test")]
    pub eval_split: String,
    /// Passes over the pairs [default: 1; when every pair is a labelled query 5 (3 with
    /// `--passages documents`); adapter 30].
    #[arg(long, value_parser = crate::bounded(1, 10_000))]
    pub epochs: Option<usize>,
    /// Pairs per step [default: 32, adapter 64].
    #[arg(long, value_parser = crate::bounded(1, 65_536))]
    pub batch_size: Option<usize>,
    /// Peak learning rate [default: 2e-5; 1e-4 when every pair is a labelled query; adapter
    /// 1e-3].
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// AdamW weight decay (for the adapter: towards the base model) [default: 0.01].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Share of the steps warming the learning rate up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Tokens of a query kept.
    #[arg(long, default_value_t = 64, value_parser = crate::bounded(1, 8_192))]
    pub max_query_tokens: usize,
    /// Tokens of a passage kept [default: 128; 256 for full fine-tuning on chunk positives,
    /// where a chunk is up to the model's 256].
    #[arg(long, value_parser = crate::bounded(1, 8_192))]
    pub max_passage_tokens: Option<usize>,
    /// Dropout (default: the model's).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Seed of mining, shuffling and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop after this many steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// How BM25 cuts text into terms where training ranks by it (hard negatives, the
    /// round trip, the teacher, the hybrid fusion an adapter chooses): the loop's `[index]
    /// analyzer`, so the fusion is chosen for the BM25 the index will run.
    #[arg(long, default_value_t = rag_core::Analyzer::English, value_parser = parse_analyzer)]
    pub analyzer: rag_core::Analyzer,
    /// Labelled queries' positives: `chunks` (the document's best chunk, as the loop ranks
    /// chunks; for the adapter also hard negatives from the others), `documents` (the
    /// document's start) or `both` (full fine-tuning: a pair with each).
    /// [default: both for full fine-tuning, chunks for the adapter]
    #[arg(long, value_enum)]
    pub passages: Option<Passages>,
    /// Hard negatives per pair (0: in-batch negatives only). Full fine-tuning mines them from
    /// whole documents ranked by the base model and BM25; the adapter (`--passages chunks`)
    /// from chunks (there 3 per pair lost 4.4 points of nDCG@10 on held-out train-split
    /// queries, so its default is 0 — BENCHMARKS.md).
    /// Default: 1 for full fine-tuning from raw documents alone (no `--queries`, no
    /// `--pairs`), else 0.
    #[arg(long)]
    pub negatives: Option<usize>,
    /// A negative candidate scoring at least this share of the positive's cosine is dropped
    /// as a likely false negative.
    #[arg(long, default_value_t = 0.95)]
    pub negative_ratio: f32,
    /// Round-trip filtering of pseudo-queries (mined and synthetic pairs; 0 = off): a pair is
    /// kept only if the base model and BM25 together (RRF) rank its document within the first
    /// K of all documents — the filter GPL and InPars apply to generated queries.
    /// Default: 3 for full fine-tuning from raw documents alone, else 0.
    #[arg(long)]
    pub round_trip: Option<usize>,
    /// Full fine-tuning: merge the trained weights with the base model's against forgetting
    /// (LM-Cocktail), `base + α·(trained − base)`. `auto` tries α = 0, 0.5, 0.75, 1 on the
    /// held-out queries (else the held-out pairs) over every document and keeps the best;
    /// `off` keeps the trained weights; a number in 0..=1 fixes α.
    #[arg(long, default_value = "auto")]
    pub merge: Merge,
    /// Full fine-tuning's loss. `margin-mse` and `both` distil the hybrid teacher's margins
    /// over the mined negatives (GPL), so they need `--negatives 1` or more.
    #[arg(long, value_enum, default_value_t = Loss::Contrastive)]
    pub loss: Loss,
    /// The pooled-vector cache shared with stage 5 (the loop passes `<work_dir>/cache/pooled`).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// `int8`: the frozen encoder embeds the passages and held-out queries in int8, as the
    /// loop's stage 5 will (`embedding.quantize`). Full fine-tuning itself stays f32.
    #[arg(long, default_value = "none", env = "RAGLOOP_QUANTIZE")]
    pub quantize: embed_runtime::Quantization,
    /// Where the model trains and encodes: `auto` (a CUDA GPU when built with `--features
    /// cuda` and one is visible, else the CPU), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto", env = "RAGLOOP_DEVICE")]
    pub device: embed_runtime::DeviceChoice,
    /// Where a base model from a store is downloaded.
    #[arg(long, default_value = "target/ragloop-models")]
    pub model_cache: PathBuf,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Which store serves the locations.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Retrieval before and after training.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// What was evaluated.
    pub set: String,
    /// The base model.
    pub base: RetrievalMetrics,
    /// The trained model.
    pub trained: RetrievalMetrics,
}

/// What `ragloop train` did with a neural model.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// The base model.
    pub base_model: String,
    /// What was trained.
    pub mode: TrainMode,
    /// Where the trained model was written.
    pub output: String,
    /// Documents read.
    pub documents: usize,
    /// Training pairs by origin.
    pub pairs_by_origin: Vec<(PairOrigin, usize)>,
    /// Pairs trained on.
    pub train_pairs: usize,
    /// Pairs held out.
    pub held_out_pairs: usize,
    /// Relevant ids of `--queries` not among the documents.
    pub missing_relevant: usize,
    /// The LLM's questions, when `--synthetic` asked for them.
    pub synthetic: Option<SyntheticReport>,
    /// The chunk positives and hard negatives (`--passages chunks`).
    pub passages: Option<PassageReport>,
    /// The document hard negatives of full fine-tuning (`--negatives N`).
    pub negatives: Option<NegativeReport>,
    /// What round-trip filtering kept of the pseudo-queries (`--round-trip K`).
    pub round_trip: Option<RoundTripReport>,
    /// How the trained weights were merged with the base model's (full fine-tuning).
    pub merge: Option<MergeReport>,
    /// The hybrid fusion chosen out of fold for the trained adapter (saved as
    /// `fusion.json` beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fusion: Option<crate::evaluation::FusionChoice>,
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Loss per step and timings.
    pub report: TrainReport,
    /// Evaluations (held-out pairs, `--eval-queries`).
    pub evaluations: Vec<Comparison>,
    /// Wall time of the whole job.
    pub seconds: f64,
}

/// Runs the job; prints a human summary (or JSON) on stdout.
pub async fn run(args: TrainArgs) -> Result<()> {
    if args.reranker {
        return reranker::run(&args).await;
    }
    if args.base_model.is_none() {
        return train_hashed(&args).await;
    }
    let summary = train_neural(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary));
    }
    Ok(())
}

async fn train_hashed(args: &TrainArgs) -> Result<()> {
    let data = stores::location(&args.data)?;
    let (store, output) = args.store.locate(&args.output)?;
    let output = output.as_prefix();
    let config = HashedEmbeddingConfig {
        dims: args.dims,
        ..Default::default()
    };
    let report =
        HashedEmbedding::train_job(store.as_ref(), &data, &output, config, &crate::parsers())
            .await?;
    println!(
        "fitted {} on {} documents ({} inputs skipped) in {:.2}s → {output}",
        report.model_id, report.documents, report.skipped_inputs, report.seconds
    );
    Ok(())
}

/// The queries of `split` in `arg`; an evaluation split (`strict`) must hold some.
async fn read_queries(
    args: &TrainArgs,
    arg: &str,
    split: &str,
    strict: bool,
) -> Result<Vec<EvalQuery>> {
    let text = crate::queries::decode_text(arg, args.store.read(arg).await?)?;
    if strict {
        crate::queries::parse_split(&text, arg, split)
    } else {
        crate::queries::parse_queries(&text, arg, Some(split))
    }
}

async fn train_neural(args: &TrainArgs) -> Result<TrainSummary> {
    let started = Instant::now();
    let passages = match (args.mode, args.passages) {
        (TrainMode::Adapter, Some(Passages::Both)) => {
            return Err(crate::exit::UsageError(
                "--passages both is for full fine-tuning (--mode full); the adapter takes \
                 chunks or documents"
                    .into(),
            )
            .into());
        }
        (_, Some(p)) => p,
        (TrainMode::Full, None) => Passages::Both,
        (TrainMode::Adapter, None) => Passages::Chunks,
    };
    let (dst, output) = args.store.locate(&args.output)?;
    let output = output.as_prefix();
    let base_arg = args.base_model.clone().unwrap_or_default();
    let base_dir = crate::embed::fetch_model_dir(&base_arg, &args.model_cache, &args.store).await?;
    let docs = read_documents(args).await?;

    // Training pairs: mined, from queries, from the user; deduplicated; some documents held out.
    let (all, missing_relevant, synthetic) = gather_pairs(args, &docs).await?;
    let mining = mining_options(&args.mine, args.seed)?;

    // One evaluation set per split named in `--eval-split` (e.g. `train,test`: a validation
    // split beside the test split when nothing trains on the train split).
    let mut eval_queries: Vec<(String, Vec<EvalQuery>)> = Vec::new();
    if let Some(q) = &args.eval_queries {
        for split in args.eval_split.split(',').map(str::trim) {
            eval_queries.push((split.to_string(), read_queries(args, q, split, true).await?));
        }
    }
    let options = embed_runtime::EmbedderOptions {
        cache_dir: args.cache.clone(),
        quantize: args.quantize,
        device: args.device,
        ..Default::default()
    };
    let base = SentenceEmbedder::load_with(&base_dir, options)
        .with_context(|| format!("loading {}", base_dir.display()))?;
    // The documents as the base model and BM25 see them, for round-trip filtering and
    // document hard negatives.
    // From raw documents alone, full fine-tuning defaults to the recipe that did best on
    // validation queries (BENCHMARKS.md, issue 24): one hard negative, round trip in the top 3.
    let raw_only = args.mode == TrainMode::Full && args.queries.is_none() && args.pairs.is_none();
    let negative_count = args.negatives.unwrap_or(if raw_only { 1 } else { 0 });
    let round_trip_k = args.round_trip.unwrap_or(if raw_only { 3 } else { 0 });
    let full_negatives = args.mode == TrainMode::Full && negative_count > 0;
    if args.loss != Loss::Contrastive && !full_negatives {
        bail!(
            "--loss {} distils a teacher's margins over hard negatives: add --negatives 1 (full fine-tuning)",
            args.loss
                .to_possible_value()
                .map_or("?".into(), |v| v.get_name().to_string())
        );
    }
    let view = if round_trip_k > 0 || full_negatives {
        Some(negatives::DocumentView::build(
            &base,
            &docs,
            mining.max_passage_chars,
            args.analyzer,
            job_progress(args.json),
        )?)
    } else {
        None
    };
    let (all, round_trip) = match &view {
        Some(v) if round_trip_k > 0 => {
            let (kept, report) = v.round_trip(all, round_trip_k)?;
            (kept, Some(report))
        }
        _ => (all, None),
    };
    let mut by_origin: Vec<(PairOrigin, usize)> = Vec::new();
    for p in &all {
        match by_origin.iter_mut().find(|(o, _)| *o == p.origin) {
            Some((_, n)) => *n += 1,
            None => by_origin.push((p.origin, 1)),
        }
    }
    let (train, held) = pairs::hold_out(all, args.hold_out);
    if train.len() < 2 {
        bail!(
            "only {} training pairs: add documents, --queries or --pairs",
            train.len()
        );
    }
    // An adapter trained on chunks compares the held-out queries over the chunks, as the
    // loop retrieves; ranking whole documents as well would cost an encoder pass over them.
    let over_chunks = args.mode == TrainMode::Adapter && passages != Passages::Documents;
    let before = evaluations(&base, &docs, &eval_queries, &held, !over_chunks).await?;
    let (negatives, negative_report) = match &view {
        Some(v) if full_negatives => {
            let options = HardOptions {
                negatives: negative_count,
                max_ratio: args.negative_ratio,
                ..HardOptions::default()
            };
            let (lists, report) = v.negatives(&train, &options)?;
            (lists, Some(report))
        }
        _ => (Vec::new(), None),
    };
    drop(view);

    let defaults = match args.mode {
        // Labelled queries alone are few pairs (hundreds: ~26 steps an epoch): one epoch at
        // 2e-5 barely moves the model. At 1e-4, 3 epochs were best on page starts and 5 on
        // chunk positives read whole (256 tokens) joined by the page starts, on held-out
        // train-split queries over the chunks (BENCHMARKS.md); mined and synthetic pairs,
        // thousands, keep the defaults.
        TrainMode::Full if train.iter().all(|p| p.origin == PairOrigin::Query) => {
            let documents = passages == Passages::Documents;
            TrainConfig {
                epochs: if documents { 3 } else { 5 },
                learning_rate: 1e-4,
                max_passage_tokens: if documents {
                    TrainConfig::default().max_passage_tokens
                } else {
                    256
                },
                ..TrainConfig::default()
            }
        }
        TrainMode::Full => TrainConfig::default(),
        TrainMode::Adapter => TrainConfig::adapter(),
    };
    let config = TrainConfig {
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        learning_rate: args.learning_rate.unwrap_or(defaults.learning_rate),
        weight_decay: args.weight_decay.unwrap_or(defaults.weight_decay),
        warmup_ratio: args.warmup_ratio,
        max_query_tokens: args.max_query_tokens,
        max_passage_tokens: args
            .max_passage_tokens
            .unwrap_or(defaults.max_passage_tokens),
        dropout: args.dropout,
        seed: args.seed,
        max_steps: args.max_steps,
        objective: args.loss.into(),
        ..defaults
    };
    let mut steps_shown = StepProgress::new(args.json);
    let bar = steps_shown.bar.clone();
    let mut on_step = |s: &StepLog| steps_shown.step(s);
    let out_dir = tempfile::tempdir()?;
    let loading = || format!("loading {} for training", base_dir.display());
    let mut passage_report = None;
    let mut merge_report = None;
    let mut fusion_choice = None;
    let mut chunk_eval = None;
    let mut full_chunks: Option<passages::ChunkPositives> = None;
    let report = match args.mode {
        TrainMode::Full => {
            // With labelled queries the corpus's chunks are embedded with the base model
            // (through the pooled cache: stage 5's base pass) to judge both models over the
            // chunks the loop ranks; with `--passages chunks` each query's positive is also
            // its document's best chunk rather than the document's start, with `both` the
            // query trains on each.
            let chunked =
                passages::chunk_positives(&base, &docs, &train, &held, job_progress(args.json))?;
            let (train, negatives) = match &chunked {
                Some(c) if passages != Passages::Documents => {
                    let pairs = c.pairs(&train, &docs, passages == Passages::Both);
                    // Each hard-negative list follows its pair's query and document into the
                    // new list: other documents' passages, whichever passage is the positive
                    // (a teacher's margin stays the one it gave against the document's start).
                    let negatives = passages::carry_negatives(&train, &negatives, &pairs);
                    (pairs, negatives)
                }
                _ => (train.clone(), negatives),
            };
            drop(base);
            let device = args.device.resolve()?;
            tracing::info!(
                "full fine-tuning on {}",
                embed_runtime::device::device_name(&device)
            );
            let mut trainer =
                EmbeddingTrainer::load_on(&base_dir, &device).with_context(loading)?;
            let report = trainer.train_with_negatives(&train, &negatives, &config, &mut on_step)?;
            bar.finish_and_clear();
            let options = embed_runtime::EmbedderOptions {
                quantize: args.quantize,
                device: args.device,
                ..Default::default()
            };
            merge_report = merge::save(
                &trainer,
                args.merge,
                &docs,
                &held,
                chunked.as_ref().map(|c| (c, args.analyzer)),
                &options,
                out_dir.path(),
            )
            .await?;
            full_chunks = chunked;
            report
        }
        TrainMode::Adapter if passages != Passages::Documents => {
            let options = HardOptions {
                negatives: negative_count,
                max_ratio: args.negative_ratio,
                ..HardOptions::default()
            };
            let prepared =
                passages::prepare(&base, &docs, &train, &options, job_progress(args.json))?;
            // The held-out queries over the whole chunked corpus, base against trained, from
            // the vectors already here: the check that picks nothing on test queries.
            // Real queries when some are held out (mined pairs are easier and would flatter).
            let real: Vec<Pair> = held
                .iter()
                .filter(|p| p.origin == PairOrigin::Query)
                .cloned()
                .collect();
            let judged = if real.is_empty() { &held } else { &real };
            let (texts, relevant) = passages::queries_of(judged, &docs);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let held_raw = base.embed_unnormalized(&refs, true)?;
            let mut trainer =
                AdapterTrainer::from_embedder(&base_dir, base).with_context(loading)?;
            fusion_choice = fusion::cross_fit(&mut trainer, &prepared, &config, args.analyzer)?;
            let mut report = trainer.train_hard(
                &prepared.queries,
                &prepared.chunks,
                &prepared.chunk_docs,
                &prepared.pairs,
                &config,
                &mut on_step,
            )?;
            report.prepare_seconds = prepared.report.seconds;
            if !texts.is_empty() {
                let raw = held_raw;
                let cd = &prepared.chunk_docs;
                let base_m = passages::chunk_metrics(
                    &passages::normalized(&raw),
                    &relevant,
                    &passages::normalized(&prepared.chunks),
                    cd,
                );
                let trained_m = passages::chunk_metrics(
                    &trainer.apply(&raw)?,
                    &relevant,
                    &trainer.apply(&prepared.chunks)?,
                    cd,
                );
                chunk_eval = Some(Comparison {
                    set: format!(
                        "{} held-out queries over the {} chunks",
                        texts.len(),
                        cd.len()
                    ),
                    base: base_m,
                    trained: trained_m,
                });
            }
            passage_report = Some(prepared.report);
            trainer.save(out_dir.path())?;
            if let Some(f) = &fusion_choice {
                std::fs::write(
                    out_dir.path().join("fusion.json"),
                    serde_json::to_vec_pretty(f)?,
                )?;
            }
            report
        }
        TrainMode::Adapter => {
            bar.set_message("embedding the pairs with the frozen model");
            let mut trainer =
                AdapterTrainer::from_embedder(&base_dir, base).with_context(loading)?;
            let report = trainer.train(&train, &config, &mut on_step)?;
            trainer.save(out_dir.path())?;
            report
        }
    };
    bar.finish_and_clear();
    // Through the cache: an adapter's encoder is the base model's, so its evaluation encodes
    // nothing the base evaluation did not (a full fine-tune's encoder is new: all misses).
    let trained = SentenceEmbedder::load_with(
        out_dir.path(),
        embed_runtime::EmbedderOptions {
            quantize: args.quantize,
            cache_dir: args.cache.clone(),
            device: args.device,
            ..Default::default()
        },
    )?;
    let after = evaluations(&trained, &docs, &eval_queries, &held, !over_chunks).await?;
    // A full model trained on chunks is also judged over them; embedding the chunks with it
    // here fills the cache stage 5 reads, so the loop encodes them once all the same.
    // Its hybrid fusion is chosen there too, on the held-out queries: the base model's weight
    // undervalues a better dense list.
    if let Some(c) = &full_chunks {
        let (comparison, fusion) = c.compare(&trained, args.analyzer, job_progress(args.json))?;
        chunk_eval = comparison;
        if let Some(f) = &fusion {
            std::fs::write(
                out_dir.path().join("fusion.json"),
                serde_json::to_vec_pretty(f)?,
            )?;
            fusion_choice = fusion;
        }
    }
    let evaluations = before
        .into_iter()
        .zip(after)
        .map(|((set, base), (_, trained))| Comparison { set, base, trained })
        .chain(chunk_eval)
        .collect();

    let summary = TrainSummary {
        base_model: base_arg,
        mode: args.mode,
        output: output.to_string(),
        documents: docs.len(),
        pairs_by_origin: by_origin,
        train_pairs: train.len(),
        held_out_pairs: held.len(),
        missing_relevant,
        synthetic,
        passages: passage_report,
        negatives: negative_report,
        round_trip,
        merge: merge_report,
        fusion: fusion_choice,
        config,
        report,
        evaluations,
        seconds: started.elapsed().as_secs_f64(),
    };
    publish(
        dst.as_ref(),
        out_dir.path(),
        &output,
        &summary,
        render(&summary),
    )
    .await?;
    Ok(summary)
}

/// Uploads a trained model directory to `output`, then its report (`training-report.json` and
/// `.md`) and, last, `_SUCCESS`.
async fn publish(
    store: &dyn ObjectStore,
    dir: &Path,
    output: &StoreUri,
    summary: &impl Serialize,
    markdown: String,
) -> Result<()> {
    upload_dir(store, dir, output).await?;
    store
        .put(
            &output.join("training-report.json")?,
            Bytes::from(serde_json::to_vec_pretty(summary)?),
        )
        .await?;
    store
        .put(&output.join("training-report.md")?, Bytes::from(markdown))
        .await?;
    store
        .put(&output.join(SUCCESS_MARKER)?, Bytes::new())
        .await?;
    Ok(())
}

/// Shows training steps: a bar on a terminal, a line every few seconds otherwise (a job's
/// log, CI), nothing with `--json`; every step is also traced.
struct StepProgress {
    bar: ProgressBar,
    lines: bool,
    /// Step time from the steps' own durations: what precedes the first step (an encoder
    /// pass, loading) has its own progress lines and would make the ETA absurd.
    step_seconds: f64,
    last_line: Option<Instant>,
}

impl StepProgress {
    fn new(json: bool) -> Self {
        let bar = if json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "train {bar:30} {pos}/{len} steps {msg} [{elapsed}<{eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self {
            bar,
            lines: !json && !std::io::IsTerminal::is_terminal(&std::io::stderr()),
            step_seconds: 0.0,
            last_line: None,
        }
    }

    fn step(&mut self, s: &StepLog) {
        self.bar.set_length(s.total as u64);
        self.bar.set_position(s.step as u64);
        self.bar.set_message(format!("loss {:.4}", s.loss));
        self.step_seconds += s.seconds;
        if self.lines
            && (s.step == s.total || self.last_line.is_none_or(|t| t.elapsed().as_secs() >= 5))
        {
            self.last_line = Some(Instant::now());
            let per_step = self.step_seconds / s.step.max(1) as f64;
            eprintln!(
                "[{}] step {}/{} ({:.0} %), loss {:.4}, {per_step:.2} s/step, ETA {:.0}s",
                rag_core::pipeline::Stage::TrainEmbeddings,
                s.step,
                s.total,
                100.0 * s.step as f64 / s.total.max(1) as f64,
                s.loss,
                per_step * s.total.saturating_sub(s.step) as f64
            );
        }
        tracing::info!(
            step = s.step,
            loss = s.loss,
            lr = s.learning_rate,
            grad_norm = s.grad_norm,
            seconds = s.seconds,
            "train step"
        );
    }
}

/// The documents of `--data`, parsed; none at all is an error.
async fn read_documents(args: &TrainArgs) -> Result<Vec<Document>> {
    let (src, data) = args.store.locate(&args.data)?;
    let loaded = rag_core::loader::load_documents_with(src.as_ref(), &data, &crate::parsers())
        .await
        .with_context(|| format!("reading documents from {data}"))?;
    if loaded.documents.is_empty() {
        bail!(
            "no documents under {data} ({} inputs skipped)",
            loaded.skipped.len()
        );
    }
    Ok(loaded.documents)
}

/// Every training pair the arguments name: mined from `docs` (`--mine`), from `--queries`,
/// `--synthetic` questions and `--pairs`, deduplicated; with the count of relevant ids of
/// `--queries` not among the documents and the synthetic report.
async fn gather_pairs(
    args: &TrainArgs,
    docs: &[Document],
) -> Result<(Vec<Pair>, usize, Option<SyntheticReport>)> {
    let mining = mining_options(&args.mine, args.seed)?;
    let mut all = pairs::mine_pairs(docs, &mining);
    let mut missing_relevant = 0;
    if let Some(q) = &args.queries {
        let queries = read_queries(args, q, &args.queries_split, false).await?;
        if queries.is_empty() {
            bail!("{q} has no queries in split {:?}", args.queries_split);
        }
        let (from_queries, missing) =
            pairs::pairs_from_queries(&queries, docs, mining.max_passage_chars);
        missing_relevant = missing;
        all.extend(from_queries);
    }
    let synthetic = if args.synthetic > 0 {
        let (made, report) = synthetic_questions(args, docs).await?;
        all.extend(made);
        Some(report)
    } else {
        None
    };
    if let Some(p) = &args.pairs {
        let text = crate::queries::decode_text(p, args.store.read(p).await?)?;
        all.extend(pairs::read_pairs_jsonl(&text)?);
    }
    Ok((pairs::dedup(all), missing_relevant, synthetic))
}

/// A bar on a terminal, periodic lines otherwise; nothing with `--json`.
/// `--analyzer`: one of [`rag_core::Analyzer`]'s names.
fn parse_analyzer(s: &str) -> std::result::Result<rag_core::Analyzer, String> {
    s.parse().map_err(|e: rag_core::Error| e.to_string())
}

fn job_progress(json: bool) -> std::sync::Arc<dyn rag_core::pipeline::Progress> {
    if json {
        std::sync::Arc::new(crate::progress::BarProgress::quiet())
    } else {
        std::sync::Arc::new(crate::progress::BarProgress::new())
    }
}

/// Asks the configured LLM for `--synthetic` questions about `--synthetic-docs` documents.
async fn synthetic_questions(
    args: &TrainArgs,
    docs: &[Document],
) -> Result<(Vec<Pair>, SyntheticReport)> {
    let env = crate::llm_env::LlmEnv::from_vars(|k| std::env::var(k).ok())?.with_context(|| {
        format!(
            "--synthetic needs an LLM: {}",
            crate::llm_env::NOT_CONFIGURED
        )
    })?;
    let chat = bailian_client::ChatClient::new(env.config, env.model)?;
    // Spread evenly, so a capped run still covers the whole corpus.
    let n = args.synthetic_docs.unwrap_or(docs.len()).min(docs.len());
    let chosen: Vec<Document> = (0..n).map(|i| docs[i * docs.len() / n].clone()).collect();
    let options = SyntheticOptions {
        questions_per_doc: args.synthetic,
        max_tokens: args.synthetic_tokens,
        ..Default::default()
    };
    tracing::info!(
        documents = chosen.len(),
        per_doc = args.synthetic,
        "asking the LLM for questions"
    );
    let (made, report) = synthetic_pairs(&chat, &chosen, &options)
        .await
        .context("writing synthetic questions")?;
    for (doc, error) in &report.failed {
        tracing::warn!(doc, error, "no synthetic questions for this document");
    }
    Ok((made, report))
}

fn mining_options(spec: &str, seed: u64) -> Result<MiningOptions> {
    let mut o = MiningOptions {
        titles: false,
        headings_per_doc: 0,
        cloze_per_doc: 0,
        leads_per_doc: 0,
        seed,
        ..Default::default()
    };
    let d = MiningOptions::default();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match part {
            "none" => {}
            "titles" => o.titles = true,
            "headings" => o.headings_per_doc = d.headings_per_doc,
            "cloze" => o.cloze_per_doc = d.cloze_per_doc,
            "leads" => o.leads_per_doc = d.leads_per_doc,
            other => {
                bail!("--mine: unknown kind {other:?} (titles, headings, cloze, leads or none)")
            }
        }
    }
    Ok(o)
}

/// (set name, metrics) for the held-out pairs and the evaluation queries.
async fn evaluations(
    model: &SentenceEmbedder,
    docs: &[Document],
    queries: &[(String, Vec<EvalQuery>)],
    held: &[Pair],
    held_over_documents: bool,
) -> Result<Vec<(String, RetrievalMetrics)>> {
    let mut out = Vec::new();
    if !held.is_empty() {
        // Each held-out pair's passage is a document; its query must find it among them.
        let passages: Vec<Document> = held
            .iter()
            .enumerate()
            .map(|(i, p)| Document {
                id: format!("held-{i}"),
                title: String::new(),
                text: p.passage.clone(),
                source: String::new(),
                ..Default::default()
            })
            .collect();
        let queries: Vec<EvalQuery> = held
            .iter()
            .enumerate()
            .map(|(i, p)| EvalQuery {
                id: format!("held-{i}"),
                text: p.query.clone(),
                relevant: vec![format!("held-{i}")],
                split: "held-out".into(),
            })
            .collect();
        out.push((
            format!("{} held-out pairs", held.len()),
            evaluate(model, &passages, &queries, 4_000).await?,
        ));
    }
    // The held-out queries over every document: what picks settings, never the test split.
    let held_queries = merge::held_queries(held, docs, true);
    let mut sets: Vec<(String, &[EvalQuery])> = Vec::new();
    if held_over_documents && !held_queries.is_empty() {
        sets.push((
            format!(
                "{} held-out queries over {} documents",
                held_queries.len(),
                docs.len()
            ),
            &held_queries,
        ));
    }
    for (split, q) in queries {
        sets.push((
            format!(
                "{} evaluation queries ({split}) over {} documents",
                q.len(),
                docs.len()
            ),
            q,
        ));
    }
    if !sets.is_empty() {
        let only: Vec<&[EvalQuery]> = sets.iter().map(|(_, q)| *q).collect();
        let metrics = evaluate_sets(model, docs, &only, 4_000).await?;
        out.extend(sets.into_iter().map(|(name, _)| name).zip(metrics));
    }
    Ok(out)
}

async fn upload_dir(store: &dyn ObjectStore, dir: &Path, prefix: &StoreUri) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let listing = || format!("listing {}", d.display());
        for entry in std::fs::read_dir(&d).with_context(listing)? {
            let entry = entry.with_context(listing)?;
            let path = entry.path();
            if entry.file_type().with_context(listing)?.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
            let bytes = Bytes::from(
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            );
            store.put(&prefix.join(&rel)?, bytes).await?;
        }
    }
    Ok(())
}

/// The Markdown report (also `training-report.md` next to the model).
pub fn render(s: &TrainSummary) -> String {
    let mut out = format!(
        "# Embedding training report\n\nbase model `{}` → `{}` ({})\n\n\
         {} documents; {} training pairs, {} held out ({}); {} relevant ids not found\n\n",
        s.base_model,
        s.output,
        match s.mode {
            TrainMode::Full => "every weight fine-tuned",
            TrainMode::Adapter => "frozen encoder + linear adapter",
        },
        s.documents,
        s.train_pairs,
        s.held_out_pairs,
        s.pairs_by_origin
            .iter()
            .map(|(o, n)| format!("{o:?}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        s.missing_relevant,
    );
    if let Some(p) = &s.passages {
        out.push_str(&format!(
            "positives: the best of {} chunks ({} from the cache) for {} queries → {} pairs; {} hard negatives ({} candidates dropped as likely false negatives, {} of relevant documents skipped)\n\n",
            p.chunks,
            p.cached,
            p.queries,
            p.mining.pairs - p.dropped_only_source,
            p.mining.negatives,
            p.mining.dropped_false_negatives,
            p.mining.skipped_relevant
        ));
        if p.moved_off_source + p.dropped_only_source > 0 {
            out.push_str(&format!(
                "pseudo-queries copied from a chunk: {} paired with another chunk of their document, {} dropped (no other chunk)\n\n",
                p.moved_off_source, p.dropped_only_source
            ));
        }
    }
    if let Some(n) = &s.negatives {
        out.push_str(&format!(
            "hard negatives: {} for {} of the pairs ({} queries over {} documents; {} only BM25 ranked high; {} candidates dropped as likely false negatives, {} of relevant documents skipped), {:.0} s\n\n",
            n.mining.negatives,
            n.pairs_with_negatives,
            n.queries,
            n.documents,
            n.mining.from_lexical,
            n.mining.dropped_false_negatives,
            n.mining.skipped_relevant,
            n.seconds
        ));
        if s.config.objective != Objective::Contrastive {
            out.push_str(&format!(
                "loss: {:?} — the hybrid teacher's (base model + BM25) margins, mean {:.3}; it prefers the negative in {} of {}\n\n",
                s.config.objective,
                n.teacher_margin_mean,
                n.teacher_prefers_negative,
                n.mining.negatives
            ));
        }
    }
    if let Some(r) = &s.round_trip {
        out.push_str(&format!(
            "round-trip filter (own document in the hybrid top {}): kept {} of {} pseudo-queries ({})\n\n",
            r.top_k,
            r.kept,
            r.checked,
            r.by_origin
                .iter()
                .map(|(o, k, d)| format!("{o:?}: {k} kept, {d} dropped"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    if let Some(m) = &s.merge {
        let tried = m
            .tried
            .iter()
            .map(|(a, n)| format!("α {a}: {n:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&match m.selected_on.as_str() {
            "" => format!("merged with the base model at α {} (given)\n\n", m.alpha),
            on => format!(
                "merged with the base model at α {} (nDCG@10 on {on}: {tried})\n\n",
                m.alpha
            ),
        });
    }
    if let Some(f) = &s.fusion {
        out.push_str(&format!("hybrid fusion: {}\n\n", f.reason));
    }
    if let Some(y) = &s.synthetic {
        out.push_str(&format!(
            "synthetic questions: {} pairs from {} documents ({} failed, {} lines rejected), \
             {} tokens, {:.0} s{}\n\n",
            y.pairs,
            y.documents,
            y.failed.len(),
            y.rejected_lines,
            y.usage.total_tokens,
            y.seconds,
            if y.skipped_for_budget > 0 {
                format!(
                    "; the token budget was spent: {} documents not asked",
                    y.skipped_for_budget
                )
            } else {
                String::new()
            }
        ));
    }
    let r = &s.report;
    let first = r.steps.first().map_or(f64::NAN, |x| x.loss);
    let last_n = r.steps.len().clamp(1, 5);
    let last = r
        .steps
        .iter()
        .rev()
        .take(last_n)
        .map(|x| x.loss)
        .sum::<f64>()
        / last_n as f64;
    let inputs = match s.mode {
        TrainMode::Full => format!(
            "queries ≤ {} / passages ≤ {} tokens",
            s.config.max_query_tokens, s.config.max_passage_tokens
        ),
        TrainMode::Adapter => format!(
            "embeddings of the frozen model, {:.0} s to compute",
            r.prepare_seconds
        ),
    };
    out.push_str(&format!(
        "{} steps (epochs {}, batch {}, lr {:.0e}, {inputs}, seed {}): \
         loss {first:.4} → {last:.4} (mean of the last {last_n}); {:.2} s/step; {:.0} s in all \
         ({:.0} s training)\n\n",
        r.steps.len(),
        s.config.epochs,
        s.config.batch_size,
        s.config.learning_rate,
        s.config.seed,
        r.mean_step_seconds(),
        s.seconds,
        r.seconds,
    ));
    out.push_str("| set | model | hit@1 | hit@5 | hit@10 | MRR@10 | nDCG@10 |\n|---|---|---|---|---|---|---|\n");
    for c in &s.evaluations {
        for (name, m) in [("base", &c.base), ("trained", &c.trained)] {
            out.push_str(&format!(
                "| {} | {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
                c.set, m.hit_at_1, m.hit_at_5, m.hit_at_10, m.mrr_at_10, m.ndcg_at_10
            ));
        }
    }
    out.push_str("\nloss per step: ");
    out.push_str(
        &r.steps
            .iter()
            .map(|x| format!("{:.3}", x.loss))
            .collect::<Vec<_>>()
            .join(" "),
    );
    out.push('\n');
    out
}
