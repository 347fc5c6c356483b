//! The one stage runner: the seven stages as a [`LoopConfig`] describes them, on the backends
//! [`Backends::connect`] built. `ragloop run` (with or without `--config`), `ingest`, `index`,
//! `ask` and `qa-pairs` are this module; [`run`] chains the stages and the evaluation.
//!
//! Each stage is a method returning a [`StageLine`] (what happened, wall time, LLM tokens;
//! also a tracing event) and builds a [`Pipeline`] with only the backends it uses. Stage 5
//! runs in this process, or as `embedding.workers` jobs through [`Pipeline::run_jobs`]
//! (resumed like stage 2's). Models: the *base* model is `embedding.model` as named; the
//! *served* one (stages 5–7) is the trained model when stage 2 trains, else the base. When the
//! report has `:base` rows, the base model is embedded and indexed too (`<index>-base`).
//!
//! `mod.rs` holds the types, stages 1–2 and [`run`]; `llm.rs` stages 3–4 and the stage-3
//! dataset; `vectors.rs` the models and stages 5–6; `answer.rs` stage 7 and the evaluation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rag_core::pipeline::{Answer, Layout, Pipeline, PipelineOptions};
use rag_core::{EmbeddingModel, Progress, Stage, StoreUri, WaitOptions};
use serde::Serialize;

use crate::backends::Backends;
use crate::config::{LoopConfig, Which};
use crate::evaluation::MetricsRow;

mod answer;
mod fusion;
mod llm;
mod vectors;

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
    /// Lines under the summary (files skipped, with the reason).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Inputs the stage could not take (`path: reason`). The later stages run without them,
    /// and the command exits non-zero at the end, as `cp -r` does ([`failures`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

impl StageLine {
    pub(crate) fn new(stage: Stage, summary: String, since: Instant, tokens: u64) -> Self {
        let seconds = since.elapsed().as_secs_f64();
        tracing::info!(%stage, seconds, tokens, "{summary}");
        Self {
            stage,
            summary,
            seconds,
            tokens,
            details: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// Adds lines under the summary.
    pub(crate) fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }
}

/// The error a command returns after it printed `stages` in full when some stage could not
/// take some of its inputs (exit status 1), or `Ok` when every input was taken.
pub fn failures(stages: &[StageLine]) -> Result<()> {
    let failed: Vec<&StageLine> = stages.iter().filter(|s| !s.failed.is_empty()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let what: Vec<String> = failed
        .iter()
        .map(|s| format!("{}: {} inputs", s.stage, s.failed.len()))
        .collect();
    bail!(
        "not every input was taken ({}; listed above with the reason); the rest went through",
        what.join(", ")
    )
}

/// At most this many skipped or failed inputs are listed under a stage line; the rest are
/// counted (the JSON summary has every failed one).
pub(crate) const MAX_LISTED: usize = 20;

/// One line per skipped input (`source: reason`), the first [`MAX_LISTED`] of them.
pub(crate) fn skipped_lines(skipped: &[rag_core::loader::Skipped]) -> Vec<String> {
    let mut lines: Vec<String> = skipped
        .iter()
        .take(MAX_LISTED)
        .map(|s| format!("skipped {}: {}", s.source, s.reason))
        .collect();
    if skipped.len() > MAX_LISTED {
        lines.push(format!("… and {} more skipped", skipped.len() - MAX_LISTED));
    }
    lines
}

/// `1100 documents (jsonl: 1 file; html: 3 files, 1 skipped)`.
pub(crate) fn format_counts(
    documents: usize,
    formats: &std::collections::BTreeMap<String, rag_core::parse::FormatCount>,
) -> String {
    let per: Vec<String> = formats
        .iter()
        .map(|(f, c)| {
            let files = if c.files == 1 { "file" } else { "files" };
            let mut s = format!("{f}: {} {files}", c.files);
            if c.documents != c.files {
                s.push_str(&format!(" → {} documents", c.documents));
            }
            if c.skipped > 0 {
                s.push_str(&format!(", {} skipped", c.skipped));
            }
            s
        })
        .collect();
    format!("{documents} documents ({})", per.join("; "))
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

/// An embedding model with the name the report gives it and where a job finds it.
pub struct NamedModel {
    /// The model.
    pub model: Arc<dyn EmbeddingModel>,
    /// How the report calls it.
    pub name: String,
    /// A model directory or store prefix (what an embedding job loads).
    pub location: String,
}

pub(crate) fn wait_options() -> WaitOptions {
    WaitOptions {
        interval: Duration::from_millis(100),
        max_interval: Duration::from_secs(15),
        timeout: Duration::from_secs(24 * 3600),
    }
}

/// The runner: connected backends and the stages over them.
pub struct Runner {
    /// The backends.
    pub backends: Backends,
    pub(crate) layout: Layout,
    /// The fusion `run` chose (`[index] fusion = "auto"`), or loaded from the store.
    fusion: std::sync::Mutex<fusion::Choices>,
    /// The work directory's writer lock, taken by the first stage that writes.
    work_lock: std::sync::Mutex<Option<rag_core::local::DirLock>>,
    /// The `[rerank]` model and its weight, loaded by the first retrieval that uses it.
    reranker: tokio::sync::OnceCell<Option<crate::backends::LoadedReranker>>,
}
impl Runner {
    /// Connects every backend `config` names (see [`Backends::connect`]).
    pub async fn connect(config: LoopConfig, local_command: Vec<String>) -> Result<Self> {
        let backends = Backends::connect(config, local_command).await?;
        Ok(Self {
            layout: Layout::new(backends.config.root.clone()),
            backends,
            fusion: std::sync::Mutex::new(fusion::Choices::new()),
            work_lock: std::sync::Mutex::new(None),
            reranker: tokio::sync::OnceCell::new(),
        })
    }

    /// The `[rerank]` reranker and the weight of its order (`None` with `backend = "none"`),
    /// loaded once.
    pub async fn reranker(&self) -> Result<Option<crate::backends::LoadedReranker>> {
        Ok(self
            .reranker
            .get_or_try_init(|| self.backends.reranker())
            .await?
            .clone())
    }

    /// Takes the work directory's writer lock, held until the runner is dropped (or the
    /// process dies): a second `ragloop run`, `ingest`, `index` … on the same work directory
    /// fails at once, naming this process, instead of racing it. Every stage that writes
    /// calls it; `ask` and evaluation only read and never wait.
    pub fn lock_work_dir(&self) -> Result<()> {
        let mut held = self.work_lock.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            let dir = &self.config().work_dir;
            *held = Some(rag_core::local::DirLock::acquire(
                dir,
                &format!("the work directory {}", dir.display()),
            )?);
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &LoopConfig {
        &self.backends.config
    }

    /// A pipeline on the store, searching `index_name`; stages add the backends they use.
    pub(crate) fn pipeline(&self, index_name: &str, progress: Arc<dyn Progress>) -> Pipeline {
        Pipeline::new(self.backends.store.clone(), self.layout.clone())
            .with_options(PipelineOptions {
                parsers: crate::parsers(),
                index_name: index_name.to_string(),
                top_k: self.config().index.top_k,
                fusion: self.fusion(index_name),
                analyzer: self.config().index.analyzer,
                rerank_candidates: self.config().rerank.candidates,
                ..Default::default()
            })
            .with_progress(progress)
    }

    pub(crate) fn index_name(&self, which: Which) -> String {
        match which {
            Which::Served => self.config().index.name.clone(),
            Which::Base => format!("{}-base", self.config().index.name),
        }
    }

    /// Stage 1: uploads `data` (default `config.data`) to `raw-docs/`.
    pub async fn ingest(
        &self,
        data: Option<&Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<StageLine> {
        let t = Instant::now();
        self.lock_work_dir()?;
        let dir = data.unwrap_or(&self.config().data);
        let report = self
            .pipeline(&self.index_name(Which::Served), progress)
            .ingest(dir)
            .await
            .with_context(|| format!("ingesting {}", dir.display()))?;
        let mut line = StageLine::new(
            Stage::Ingest,
            format!(
                "{} files uploaded ({} bytes), {} unchanged{} → {}; {}",
                report.uploaded,
                report.bytes,
                report.unchanged,
                match report.removed.len() {
                    0 => String::new(),
                    n => format!(", {n} removed (gone from the folder)"),
                },
                self.layout.raw_docs(),
                format_counts(report.documents, &report.formats),
            ),
            t,
            0,
        )
        .with_details(
            skipped_lines(&report.unparsed)
                .into_iter()
                .chain(report.renamed.iter().take(MAX_LISTED).map(|r| {
                    format!(
                        "document id {:?} of {} was taken by another file: indexed as {:?}",
                        r.id, r.source, r.now
                    )
                }))
                .collect(),
        );
        if !report.failed.is_empty() {
            tracing::warn!(
                failed = report.failed.len(),
                "{} of {} files could not be read; the others were uploaded",
                report.failed.len(),
                report.failed.len() + report.uploaded + report.unchanged
            );
            line.failed = report
                .failed
                .iter()
                .map(|(path, why)| format!("{path}: {why}"))
                .collect();
        }
        Ok(line)
    }

    /// Stage 2: trains the embedding model as a job (skipped when its output is complete).
    pub async fn train(&self, progress: Arc<dyn Progress>) -> Result<StageLine> {
        self.lock_work_dir()?;
        let t = Instant::now();
        let Some(spec) = self.backends.plan.training() else {
            let why = self.backends.plan.training_skipped().unwrap_or_else(|| {
                format!(
                    "skipped: {} is used as it is",
                    self.config().embedding.model
                )
            });
            progress.end(Stage::TrainEmbeddings, &why);
            return Ok(StageLine::new(Stage::TrainEmbeddings, why, t, 0));
        };
        let damaged = self.remove_damaged_model(&spec.output).await?;
        let what = match spec.hyper_parameters.get("mode") {
            None => "the hashed model's IDF".to_string(),
            Some(mode) => {
                let pairs = if spec.command.iter().any(|a| a == "--queries") {
                    "the queries' train split"
                } else {
                    "pairs mined from the documents"
                };
                format!("{} ({mode}) on {pairs}", self.config().embedding.model)
            }
        };
        Ok(self
            .training_job(&spec, &what, t, progress)
            .await?
            .with_details(damaged.into_iter().collect()))
    }

    /// Runs one of stage 2's jobs (skipped when its output is complete) as a stage line
    /// saying it trained `what`.
    async fn training_job(
        &self,
        spec: &rag_core::JobSpec,
        what: &str,
        started: Instant,
        progress: Arc<dyn Progress>,
    ) -> Result<StageLine> {
        let job = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_trainer(self.backends.jobs.clone())
            .run_job(Stage::TrainEmbeddings, spec, wait_options())
            .await?;
        Ok(StageLine::new(
            Stage::TrainEmbeddings,
            match &job.job_id {
                Some(id) => format!("job {id} ({}) trained {what} → {}", spec.name, spec.output),
                None => format!("{} already trained", spec.output),
            },
            started,
            0,
        ))
    }

    /// Stage 2's reranker job ([`crate::jobs::JobPlan::reranker_training`]), when the
    /// configuration trains a reranker (skipped when its output is complete).
    pub async fn train_reranker(&self, progress: Arc<dyn Progress>) -> Result<Option<StageLine>> {
        let Some(spec) = self.backends.plan.reranker_training() else {
            return Ok(None);
        };
        self.lock_work_dir()?;
        let what = format!(
            "a cross-encoder reranker from {}",
            spec.base_model.as_deref().unwrap_or_default()
        );
        Ok(Some(
            self.training_job(&spec, &what, Instant::now(), progress)
                .await?,
        ))
    }

    /// When stage 2's output is complete but its model fails its integrity check (a damaged
    /// file: [`rag_core::Error::Corrupt`]), removes the output's `_SUCCESS` so that the job
    /// trains it again, and says so. Any other failure to load is left to the stage that
    /// loads it, with its own message.
    async fn remove_damaged_model(&self, output: &StoreUri) -> Result<Option<String>> {
        let marker = output.as_prefix().join(rag_core::SUCCESS_MARKER)?;
        if !self.backends.store.exists(&marker).await? {
            return Ok(None);
        }
        let e = &self.config().embedding;
        let Err(err) = self.backends.embedding_model(&e.model, Some(output)).await else {
            return Ok(None);
        };
        let Some(damage @ rag_core::Error::Corrupt { .. }) = err
            .chain()
            .find_map(|c| c.downcast_ref::<rag_core::Error>())
        else {
            return Ok(None);
        };
        let line = format!("{damage}: trained again");
        tracing::warn!("{line}");
        self.backends.store.delete(&marker).await?;
        Ok(Some(line))
    }
}

/// Stages 5 and 6 for `m` into the index of `which`, as one line each.
async fn embed_and_index(
    r: &Runner,
    m: &NamedModel,
    which: Which,
    progress: &Arc<dyn Progress>,
) -> Result<(StageLine, StageLine)> {
    let embed = r.embed(m, progress.clone()).await?;
    let index = r.index(m.model.as_ref(), which, progress.clone()).await?;
    Ok((embed, index))
}

/// Runs every stage and the evaluation.
pub async fn run(r: &Runner, progress: Arc<dyn Progress>) -> Result<LoopSummary> {
    let t0 = Instant::now();
    r.lock_work_dir()?;
    // A pretrained model by name is fetched (once, then cached) before anything runs, so the
    // download shows here and every job finds it in the cache.
    if let crate::config::ModelKind::Sentence(m) = r.config().embedding.kind()
        && let Some(p) = crate::embed::pretrained(&m)
    {
        crate::embed::fetch_pretrained(p).await?;
    }
    let mut stages = vec![
        r.ingest(None, progress.clone()).await?,
        r.train(progress.clone()).await?,
    ];
    stages.extend(r.train_reranker(progress.clone()).await?);
    let (ft, tuned) = r.fine_tune_llm(progress.clone()).await?;
    stages.push(ft);
    let (dep, deployed) = r.deploy(tuned.as_ref(), progress.clone()).await?;
    stages.push(dep);
    let served = r.served_model().await?;
    let (mut embed, mut index) = embed_and_index(r, &served, Which::Served, &progress).await?;
    // The base model's rows need its own shards and index.
    let base = if r.evaluates_base() {
        let base = r.base_model().await?;
        let (e, i) = embed_and_index(r, &base, Which::Base, &progress).await?;
        for (line, more) in [(&mut embed, e), (&mut index, i)] {
            line.summary = format!("{}; base model: {}", line.summary, more.summary);
            line.seconds += more.seconds;
            line.details.extend(more.details);
            line.failed.extend(more.failed);
        }
        Some(base)
    } else {
        None
    };
    index
        .details
        .extend(r.choose_fusion(&served, base.as_ref()).await?);
    stages.extend([embed, index]);
    let evaluation = r.evaluate(&served, base.as_ref()).await?;
    let (ans, answer) = r
        .answer(
            served.model.as_ref(),
            &r.config().eval.question,
            deployed.as_deref(),
            progress,
        )
        .await?;
    stages.push(ans);
    let report = match r.config().queries() {
        Some(q) if !evaluation.is_empty() => {
            let title = format!(
                "Retrieval on the {:?} split of {}",
                r.config().eval.split,
                q.display()
            );
            let work = &r.config().work_dir;
            std::fs::create_dir_all(work)
                .with_context(|| format!("creating {}", work.display()))?;
            Some(
                crate::report::write(
                    &r.config().work_dir,
                    "eval-report",
                    &title,
                    &evaluation,
                    Some(&answer),
                )?
                .0,
            )
        }
        _ => None,
    };
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
