//! The whole train-to-inference loop on the local backends.
//!
//! | stage | local backend |
//! |---|---|
//! | 1 ingest | [`LocalFileStore`] under `<work>/store`, bucket URIs as in the cloud |
//! | 2 train embeddings | a [`LocalProcessBackend`] job running `ragloop train` (fits the hashed model's IDF) |
//! | 3 fine-tune LLM | skipped: needs a GPU trainer (PAI-DLC or Bailian) |
//! | 4 deploy | skipped: nothing was fine-tuned |
//! | 5 embed | Parquet shards under `vector-indexes/` |
//! | 6 index | [`LocalVectorIndex`] under `<work>/index` |
//! | 7 answer | hybrid retrieval + [`ExtractiveChat`], with citations |
//!
//! With [`LocalLoopConfig::neural_model`] the corpus is also embedded with that
//! sentence-transformers model (embed-runtime), indexed as `rag-index-neural`, evaluated
//! (dense and hybrid rows) and used for the answer's retrieval. With
//! [`LocalLoopConfig::fine_tune`] as well, stage 2 also runs the neural trainer as a job
//! (`ragloop train --mode …` with the base model as `RAGLOOP_BASE_MODEL`, pairs from the
//! queries' `train` split, else mined from the documents); the trained model is fetched from
//! the store, indexed as `rag-index-neural-tuned`, evaluated beside the base and answers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rag_core::eval::RetrievalMetrics;
use rag_core::local::{
    ExtractiveChat, HashedEmbedding, HashedEmbeddingConfig, LocalFileStore, LocalProcessBackend,
    LocalVectorIndex,
};
use rag_core::pipeline::{
    Answer, Backends, Layout, Pipeline, PipelineOptions, Progress, RetrievalMode, Stage,
};
use rag_core::{EmbeddingModel, JobKind, JobSpec, StoreUri, WaitOptions};
use serde::Serialize;

use crate::queries::read_queries;
use crate::train::TrainMode;

/// What the local loop runs on.
#[derive(Debug, Clone)]
pub struct LocalLoopConfig {
    /// The documents to ingest (a directory).
    pub data_dir: PathBuf,
    /// Evaluation queries (JSONL, optionally gzipped), if any.
    pub queries: Option<PathBuf>,
    /// Which split of the queries to evaluate on.
    pub split: String,
    /// Where the store, index and job directories go.
    pub work_dir: PathBuf,
    /// The bucket prefix, as it would be in the cloud.
    pub root: StoreUri,
    /// The question answered at the end.
    pub question: String,
    /// Embedding dimension.
    pub dims: usize,
    /// A sentence-transformers model directory (e.g. `models/all-MiniLM-L6-v2`): when given,
    /// the corpus is also embedded and indexed with it (embed-runtime) and evaluated.
    pub neural_model: Option<PathBuf>,
    /// Fine-tune `neural_model` in stage 2 (needs `neural_model`).
    pub fine_tune: Option<TrainMode>,
    /// The training command, program first; `--data`, `--output`, `--store-root` and `--dims`
    /// are appended.
    pub trainer_command: Vec<String>,
}

/// One stage's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StageLine {
    /// The stage.
    pub stage: Stage,
    /// What happened.
    pub summary: String,
    /// How long it took.
    pub seconds: f64,
    /// LLM tokens the stage used (prompt + completion).
    pub tokens: u64,
}

/// One row of the evaluation table.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsRow {
    /// What retrieved.
    pub retriever: String,
    /// How well.
    pub metrics: RetrievalMetrics,
}

/// What the loop did.
#[derive(Debug, Clone, Serialize)]
pub struct LoopSummary {
    /// Each stage.
    pub stages: Vec<StageLine>,
    /// Retrieval quality per retriever.
    pub evaluation: Vec<MetricsRow>,
    /// The answered question.
    pub answer: Answer,
    /// The evaluation report (`eval-report.md`, with `eval-report.png` beside it) in the work
    /// directory, when queries were evaluated.
    pub report: Option<PathBuf>,
    /// Total wall time.
    pub seconds: f64,
    /// LLM tokens of every stage.
    pub total_tokens: u64,
}

/// Runs the seven stages and the evaluation.
pub async fn run(config: &LocalLoopConfig, progress: Arc<dyn Progress>) -> Result<LoopSummary> {
    let t0 = Instant::now();
    let store_root = config.work_dir.join("store");
    let store = Arc::new(LocalFileStore::new(&store_root));
    let index = Arc::new(
        LocalVectorIndex::open(config.work_dir.join("index"))
            .await
            .context("opening the local index")?,
    );
    let backends = Backends {
        store: store.clone(),
        trainer: Arc::new(LocalProcessBackend::new(config.work_dir.join("jobs"))),
        index,
        chat: Arc::new(ExtractiveChat::new(3)),
        deployer: None,
    };
    let layout = Layout::new(config.root.clone());
    let pipeline = Pipeline::new(backends.clone(), layout.clone(), PipelineOptions::default())
        .with_progress(progress.clone());
    let mut stages = Vec::new();
    let mut timed = |stage: Stage, summary: String, since: Instant| {
        let seconds = since.elapsed().as_secs_f64();
        tracing::info!(%stage, seconds, "{summary}");
        stages.push(StageLine {
            stage,
            summary,
            seconds,
            tokens: 0,
        });
    };

    // 1. Ingest.
    let t = Instant::now();
    let ingest = pipeline.ingest(&config.data_dir).await?;
    if !ingest.failed.is_empty() {
        bail!(
            "ingest failed for {} files: {:?}",
            ingest.failed.len(),
            ingest.failed
        );
    }
    timed(
        Stage::Ingest,
        format!(
            "{} files uploaded, {} unchanged → {}",
            ingest.uploaded,
            ingest.unchanged,
            layout.raw_docs()
        ),
        t,
    );

    // 2. Train the embedding model as a job.
    let t = Instant::now();
    let output = layout.model("emb-v1");
    let mut command = config.trainer_command.clone();
    command.extend([
        "--data".into(),
        layout.raw_docs().to_string(),
        "--output".into(),
        output.to_string(),
        "--store-root".into(),
        store_root.display().to_string(),
        "--dims".into(),
        config.dims.to_string(),
    ]);
    let spec = JobSpec::new(
        "emb-train",
        JobKind::EmbeddingFineTune,
        command,
        output.clone(),
    )
    .with_input("data", layout.raw_docs())
    .with_hyper_parameter("dims", config.dims);
    let wait = WaitOptions {
        interval: Duration::from_millis(50),
        max_interval: Duration::from_secs(1),
        timeout: Duration::from_secs(3600),
    };
    let job = pipeline
        .run_job(Stage::TrainEmbeddings, &spec, wait)
        .await?;
    timed(
        Stage::TrainEmbeddings,
        match &job.job_id {
            Some(id) => format!("job {id} fitted the model → {output}"),
            None => format!("{output} already trained"),
        },
        t,
    );

    // The neural model's training job, when asked for.
    let tuned = match (&config.neural_model, config.fine_tune) {
        (Some(base), Some(mode)) => {
            let t = Instant::now();
            let output = layout.model("emb-neural-v1");
            let base = base
                .canonicalize()
                .with_context(|| format!("the model directory {}", base.display()))?;
            let mut command = config.trainer_command.clone();
            command.extend([
                "--data".into(),
                layout.raw_docs().to_string(),
                "--output".into(),
                output.to_string(),
                "--store-root".into(),
                store_root.display().to_string(),
            ]);
            // Pairs from the queries' train split when there is one (never the evaluated split).
            let train_queries = match &config.queries {
                Some(q)
                    if config.split != "train" && !read_queries(q, Some("train"))?.is_empty() =>
                {
                    Some(q.canonicalize()?)
                }
                _ => None,
            };
            let pairs = match &train_queries {
                Some(q) => {
                    command.extend([
                        "--queries".into(),
                        q.display().to_string(),
                        "--queries-split".into(),
                        "train".into(),
                        "--mine".into(),
                        "none".into(),
                    ]);
                    "the queries' train split"
                }
                None => "pairs mined from the documents",
            };
            let mode_name = match mode {
                TrainMode::Full => "full",
                TrainMode::Adapter => "adapter",
            };
            let spec = JobSpec::new(
                "emb-train-neural",
                JobKind::EmbeddingFineTune,
                command,
                output.clone(),
            )
            .with_input("data", layout.raw_docs())
            .with_base_model(base.display().to_string())
            .with_hyper_parameter("mode", mode_name);
            let job = pipeline
                .run_job(Stage::TrainEmbeddings, &spec, wait)
                .await?;
            let dir = crate::embed::fetch_model_dir(
                &output.to_string(),
                &config.work_dir.join("models"),
                Some(&store_root),
                &crate::stores::OssArgs {
                    endpoint: None,
                    region: String::new(),
                },
            )
            .await?;
            timed(
                Stage::TrainEmbeddings,
                match &job.job_id {
                    Some(id) => format!(
                        "job {id} trained {} ({mode_name}) on {pairs} → {output}",
                        base.display()
                    ),
                    None => format!("{output} already trained"),
                },
                t,
            );
            Some(dir)
        }
        (None, Some(_)) => bail!("fine-tuning needs a neural model (--model)"),
        _ => None,
    };

    // 3 and 4 need an LLM trainer and server; the local loop says so instead of pretending.
    for (stage, why) in [
        (
            Stage::FineTuneLlm,
            "skipped: fine-tuning an LLM needs a GPU trainer (PAI-DLC or Bailian); locally the extractive answerer stands in",
        ),
        (Stage::Deploy, "skipped: no fine-tuned LLM to deploy"),
    ] {
        progress.end(stage, why);
        timed(stage, why.to_string(), Instant::now());
    }

    // 5 and 6 for the trained model, and for the untrained one as the baseline.
    let trained = HashedEmbedding::load(store.as_ref(), &output).await?;
    let base = HashedEmbedding::new(HashedEmbeddingConfig {
        dims: config.dims,
        ..Default::default()
    })?;
    let base_pipeline = Pipeline::new(
        backends,
        layout.clone(),
        PipelineOptions {
            index_name: "rag-index-base".into(),
            ..Default::default()
        },
    )
    .with_progress(Arc::new(rag_core::pipeline::LogProgress));
    let t = Instant::now();
    let embedded = pipeline.embed(&trained).await?;
    base_pipeline.embed(&base).await?;
    timed(
        Stage::Embed,
        format!(
            "{} documents → {} chunks → {} shards ({} written) in {}; {} inputs skipped",
            embedded.documents,
            embedded.chunks,
            embedded.shards_written + embedded.shards_current,
            embedded.shards_written,
            embedded.shards_prefix,
            embedded.skipped_inputs.len()
        ),
        t,
    );
    let t = Instant::now();
    let indexed = pipeline.index(&trained).await?;
    let base_indexed = base_pipeline.index(&base).await?;
    for r in [&indexed, &base_indexed] {
        if !r.failed.is_empty() || !r.unreadable.is_empty() {
            bail!(
                "{} records could not be indexed: {:?}; unreadable vector shards (delete them and \
                 run again to rewrite them): {:?}",
                r.failed.len(),
                r.failed,
                r.unreadable
            );
        }
    }
    timed(
        Stage::Index,
        format!(
            "{} records written; {} in rag-index",
            indexed.written, indexed.count
        ),
        t,
    );

    // The neural models, when given: embedded and indexed beside the hashed ones.
    let mut neural = Vec::new();
    let models = config
        .neural_model
        .iter()
        .map(|d| (d.clone(), "rag-index-neural"))
        .chain(tuned.map(|d| (d, "rag-index-neural-tuned")));
    for (dir, index_name) in models {
        let model = embed_runtime::SentenceEmbedder::load(&dir)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        let neural_pipeline = Pipeline::new(
            pipeline.backends().clone(),
            layout.clone(),
            PipelineOptions {
                index_name: index_name.into(),
                ..Default::default()
            },
        )
        .with_progress(progress.clone());
        let t = Instant::now();
        let e = neural_pipeline.embed(&model).await?;
        let i = neural_pipeline.index(&model).await?;
        timed(
            Stage::Embed,
            format!(
                "{}: {} chunks → {} shards ({} written), {} records indexed",
                model.model_id(),
                e.chunks,
                e.shards_written + e.shards_current,
                e.shards_written,
                i.count
            ),
            t,
        );
        let name = if index_name.ends_with("tuned") {
            format!(
                "{} (fine-tuned)",
                config
                    .neural_model
                    .as_ref()
                    .map_or(dir.display(), |d| d.display())
            )
        } else {
            dir.display().to_string()
        };
        neural.push((name, neural_pipeline, model));
    }

    // Evaluation on the held-out queries.
    let mut evaluation = Vec::new();
    if let Some(path) = &config.queries {
        let queries = read_queries(path, Some(&config.split))?;
        let rows: [(&str, &Pipeline, &dyn EmbeddingModel, RetrievalMode); 4] = [
            ("BM25", &pipeline, &trained, RetrievalMode::Text),
            (
                "hashed, untrained",
                &base_pipeline,
                &base,
                RetrievalMode::Vector,
            ),
            (
                "hashed, trained (IDF)",
                &pipeline,
                &trained,
                RetrievalMode::Vector,
            ),
            (
                "hybrid: BM25 + trained (RRF)",
                &pipeline,
                &trained,
                RetrievalMode::Hybrid,
            ),
        ];
        let mut rows: Vec<(String, &Pipeline, &dyn EmbeddingModel, RetrievalMode)> = rows
            .into_iter()
            .map(|(l, p, m, r)| (l.to_string(), p, m, r))
            .collect();
        for (name, p, m) in &neural {
            rows.push((format!("dense {name}"), p, m, RetrievalMode::Vector));
            rows.push((
                format!("hybrid: BM25 + {name} (RRF)"),
                p,
                m,
                RetrievalMode::Hybrid,
            ));
        }
        for (label, p, model, mode) in rows {
            let metrics = p.evaluate(model, &queries, mode, 50).await?;
            evaluation.push(MetricsRow {
                retriever: label,
                metrics,
            });
        }
    }

    let report = if evaluation.is_empty() {
        None
    } else {
        let title = format!(
            "Retrieval on the {:?} split of {}",
            config.split,
            config
                .queries
                .as_ref()
                .map_or_else(String::new, |q| q.display().to_string())
        );
        let (md, _png) =
            crate::report::write(&config.work_dir, "eval-report", &title, &evaluation)?;
        Some(md)
    };

    // 7. Answer.
    let t = Instant::now();
    // With a neural model the answer retrieves with it (hybrid; the fine-tuned one when there
    // is one), else with the hashed one.
    let answer = match neural.last() {
        Some((_, p, m)) => p.answer(m, &config.question).await?,
        None => pipeline.answer(&trained, &config.question).await?,
    };
    timed(
        Stage::Answer,
        format!(
            "{} citations, {} tokens",
            answer.citations.len(),
            answer.usage.total_tokens
        ),
        t,
    );

    if let Some(last) = stages.last_mut() {
        last.tokens = u64::from(answer.usage.total_tokens);
    }
    let total_tokens = stages.iter().map(|s| s.tokens).sum();
    Ok(LoopSummary {
        stages,
        evaluation,
        answer,
        report,
        seconds: t0.elapsed().as_secs_f64(),
        total_tokens,
    })
}

/// The summary as the terminal shows it.
pub fn render(summary: &LoopSummary) -> String {
    let mut out = render_stages(&summary.stages);
    out.push_str(&render_evaluation(&summary.evaluation));
    out.push_str(&render_answer(&summary.answer));
    if let Some(r) = &summary.report {
        out.push_str(&format!(
            "\nReport: {} (chart: {})\n",
            r.display(),
            r.with_extension("png").display()
        ));
    }
    out.push_str(&format!(
        "\nTotal {:.1}s, {} LLM tokens\n",
        summary.seconds, summary.total_tokens
    ));
    out
}

/// The per-stage lines: wall time, LLM tokens (when any) and what happened.
pub fn render_stages(stages: &[StageLine]) -> String {
    let mut out = String::from("\nStages\n");
    for s in stages {
        let tokens = if s.tokens > 0 {
            format!("{:>6} tok", s.tokens)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {:<20} {:>7.1}s {:>10}  {}\n",
            s.stage.to_string(),
            s.seconds,
            tokens,
            s.summary
        ));
    }
    out
}

/// The retrieval table (empty when nothing was evaluated).
pub fn render_evaluation(rows: &[MetricsRow]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let mut out = format!(
        "\nRetrieval on {} held-out queries (document level)\n",
        first.metrics.queries
    );
    out.push_str("  | retriever | hit@1 | hit@5 | hit@10 | MRR@10 | nDCG@10 |\n");
    out.push_str("  |---|---|---|---|---|---|\n");
    for r in rows {
        let m = r.metrics;
        out.push_str(&format!(
            "  | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
            r.retriever, m.hit_at_1, m.hit_at_5, m.hit_at_10, m.mrr_at_10, m.ndcg_at_10
        ));
    }
    out
}

/// The question, the answer and its citations (chunk id, source, byte offsets).
pub fn render_answer(a: &Answer) -> String {
    let mut out = format!("\nQ: {}\nA: {}\n", a.question, a.text);
    for c in &a.citations {
        out.push_str(&format!(
            "  [{}] {} (bytes {}..{})\n",
            c.chunk_id, c.source, c.start, c.end
        ));
    }
    out.push_str(&format!(
        "  retrieval {:.1} ms, generation {:.1} ms, {} prompt + {} completion tokens\n",
        a.retrieval_time.as_secs_f64() * 1e3,
        a.generation_time.as_secs_f64() * 1e3,
        a.usage.prompt_tokens,
        a.usage.completion_tokens
    ));
    out
}
