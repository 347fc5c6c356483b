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

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use rag_core::embed_job::shard_number;
use rag_core::pipeline::{Answer, Layout, Pipeline, PipelineOptions, RetrievalMode};
use rag_core::{DeploySpec, EmbeddingModel, Progress, Stage, StoreUri, WaitOptions};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backends::Backends;
use crate::config::{LlmBackend, LlmFineTuneBackend, LoopConfig, ModelKind, Retriever, Which};
use crate::evaluation::{self, MetricsRow};
use crate::queries::read_queries;

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

impl StageLine {
    fn new(stage: Stage, summary: String, since: Instant, tokens: u64) -> Self {
        let seconds = since.elapsed().as_secs_f64();
        tracing::info!(%stage, seconds, tokens, "{summary}");
        Self {
            stage,
            summary,
            seconds,
            tokens,
        }
    }
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

fn wait_options() -> WaitOptions {
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
    layout: Layout,
}

impl Runner {
    /// Connects every backend `config` names (see [`Backends::connect`]).
    pub async fn connect(config: LoopConfig, local_command: Vec<String>) -> Result<Self> {
        let backends = Backends::connect(config, local_command).await?;
        Ok(Self {
            layout: Layout::new(backends.config.root.clone()),
            backends,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoopConfig {
        &self.backends.config
    }

    /// A pipeline on the store, searching `index_name`; stages add the backends they use.
    fn pipeline(&self, index_name: &str, progress: Arc<dyn Progress>) -> Pipeline {
        Pipeline::new(self.backends.store.clone(), self.layout.clone())
            .with_options(PipelineOptions {
                index_name: index_name.to_string(),
                top_k: self.config().index.top_k,
                ..Default::default()
            })
            .with_progress(progress)
    }

    fn index_name(&self, which: Which) -> String {
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
        let dir = data.unwrap_or(&self.config().data);
        let report = self
            .pipeline(&self.index_name(Which::Served), progress)
            .ingest(dir)
            .await
            .with_context(|| format!("ingesting {}", dir.display()))?;
        if !report.failed.is_empty() {
            bail!(
                "ingest failed for {} of {} files (the others were uploaded): {:?}",
                report.failed.len(),
                report.failed.len() + report.uploaded + report.unchanged,
                report.failed
            );
        }
        Ok(StageLine::new(
            Stage::Ingest,
            format!(
                "{} files uploaded ({} bytes), {} unchanged → {}",
                report.uploaded,
                report.bytes,
                report.unchanged,
                self.layout.raw_docs()
            ),
            t,
            0,
        ))
    }

    /// Stage 2: trains the embedding model as a job (skipped when its output is complete).
    pub async fn train(&self, progress: Arc<dyn Progress>) -> Result<StageLine> {
        let t = Instant::now();
        let Some(spec) = self.backends.plan.training() else {
            let why = format!(
                "skipped: {} is used as it is",
                self.config().embedding.model
            );
            progress.end(Stage::TrainEmbeddings, &why);
            return Ok(StageLine::new(Stage::TrainEmbeddings, why, t, 0));
        };
        let job = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_trainer(self.backends.jobs.clone())
            .run_job(Stage::TrainEmbeddings, &spec, wait_options())
            .await?;
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
        Ok(StageLine::new(
            Stage::TrainEmbeddings,
            match &job.job_id {
                Some(id) => format!("job {id} ({}) trained {what} → {}", spec.name, spec.output),
                None => format!("{} already trained", spec.output),
            },
            t,
            0,
        ))
    }

    /// Stage 3: fine-tunes the LLM on `qa-pairs/`; returns the output prefix.
    pub async fn fine_tune_llm(
        &self,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Option<StoreUri>)> {
        let t = Instant::now();
        let (Some(mut spec), Some(trainer)) = (
            self.backends.plan.llm_fine_tune(),
            &self.backends.llm_trainer,
        ) else {
            let why = "skipped: no [llm_fine_tune] backend configured".to_string();
            progress.end(Stage::FineTuneLlm, &why);
            return Ok((StageLine::new(Stage::FineTuneLlm, why, t, 0), None));
        };
        let store = &self.backends.store;
        let data = self.layout.qa_pairs();
        let train = data.join("train.jsonl")?;
        if store.exists(&train).await? {
            // The dataset `ragloop qa-pairs` wrote. Bailian uploads files: its train and
            // validation files, not the manifest beside them. PAI and local jobs get the
            // directory (DLC mounts prefixes), with both files in it.
            if self.config().llm_fine_tune.backend == LlmFineTuneBackend::Bailian {
                spec.inputs.insert("data".into(), train);
                let validation = data.join("validation.jsonl")?;
                if store.exists(&validation).await? {
                    spec.inputs.insert("validation".into(), validation);
                }
            }
        } else if store.list_page(&data, None, 1).await?.objects.is_empty() {
            return Err(anyhow::Error::new(rag_core::Error::not_found(format!(
                "stage 3: no training data under {data}: build it with `ragloop qa-pairs`, or put \
                 chat-format JSONL there (one {{\"messages\": [...]}} per line)"
            ))));
        }
        let job = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_trainer(trainer.clone())
            .run_job(Stage::FineTuneLlm, &spec, wait_options())
            .await?;
        Ok((
            StageLine::new(
                Stage::FineTuneLlm,
                match &job.job_id {
                    Some(id) => format!(
                        "job {id} fine-tuned {} → {}",
                        spec.base_model.as_deref().unwrap_or("?"),
                        spec.output
                    ),
                    None => format!("{} already fine-tuned", spec.output),
                },
                t,
                0,
            ),
            Some(spec.output.clone()),
        ))
    }

    /// Stage 4: deploys the fine-tuned model (or `deploy.model_path`); returns the name
    /// clients call.
    pub async fn deploy(
        &self,
        fine_tuned: Option<&StoreUri>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Option<String>)> {
        let t = Instant::now();
        let d = &self.config().deploy;
        let model_path = d.model_path.clone().or(fine_tuned.map(|u| u.to_string()));
        let (Some(deployer), Some(model_path)) = (&self.backends.deployer, model_path) else {
            let why = "skipped: no [deploy] backend configured".to_string();
            progress.end(Stage::Deploy, &why);
            return Ok((StageLine::new(Stage::Deploy, why, t, 0), None));
        };
        let spec = DeploySpec {
            model_name: d.model_name.clone().unwrap_or_else(|| {
                self.config()
                    .llm_fine_tune
                    .name
                    .clone()
                    .unwrap_or_else(|| "llm-ft".into())
            }),
            model_path,
            capacity: d.capacity.unwrap_or(1),
        };
        let wait = WaitOptions {
            interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(d.timeout_secs.unwrap_or(3600)),
        };
        let deployment = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_deployer(deployer.clone())
            .deploy(&spec, wait)
            .await?;
        Ok((
            StageLine::new(
                Stage::Deploy,
                format!(
                    "{} serves {} as {}",
                    deployment.id, spec.model_path, deployment.model_name
                ),
                t,
                0,
            ),
            // The compatible API calls a deployment by its id (`deployed_model`).
            Some(deployment.id),
        ))
    }

    /// The model stages 5–7 use: the trained one when stage 2 trains (its output must be
    /// complete), else `embedding.model` itself.
    pub async fn served_model(&self) -> Result<NamedModel> {
        let e = &self.config().embedding;
        let Some(spec) = self.backends.plan.training() else {
            return self.base_model().await;
        };
        let model = self
            .backends
            .embedding_model(&e.model, Some(&spec.output))
            .await?;
        let name = match e.kind() {
            ModelKind::Hashed => "hashed, trained (IDF)".to_string(),
            _ => format!(
                "{} fine-tuned ({})",
                short_name(&e.model),
                spec.hyper_parameters
                    .get("mode")
                    .map_or("adapter", String::as_str)
            ),
        };
        Ok(NamedModel {
            model,
            name,
            location: spec.output.to_string(),
        })
    }

    /// `embedding.model` as named, before any training.
    pub async fn base_model(&self) -> Result<NamedModel> {
        let e = &self.config().embedding;
        let model = self.backends.embedding_model(&e.model, None).await?;
        let trains = self.backends.plan.training().is_some();
        let name = match e.kind() {
            ModelKind::Hashed if trains => "hashed, untrained".to_string(),
            ModelKind::Hashed => "hashed".to_string(),
            _ => short_name(&e.model),
        };
        Ok(NamedModel {
            model,
            name,
            location: e.model.clone(),
        })
    }

    /// Stage 5: chunks and embeds `raw-docs/` with `m` into Parquet shards, here or as jobs.
    pub async fn embed(&self, m: &NamedModel, progress: Arc<dyn Progress>) -> Result<StageLine> {
        let t = Instant::now();
        let model = m.model.as_ref();
        let pipeline = self.pipeline(&self.index_name(Which::Served), progress);
        if self.config().embedding.workers == 0 {
            let r = pipeline.embed(model).await?;
            return Ok(StageLine::new(
                Stage::Embed,
                format!(
                    "{} documents → {} chunks → {} shards ({} written) in {} with {}; {} inputs skipped",
                    r.documents,
                    r.chunks,
                    r.shards_written + r.shards_current,
                    r.shards_written,
                    r.shards_prefix,
                    r.model_id,
                    r.skipped_inputs.len()
                ),
                t,
                0,
            ));
        }
        let shards = self.layout.vector_shards(model.model_id());
        let corpus = self.corpus_fingerprint().await?;
        let specs = self
            .backends
            .plan
            .embedding_workers(&m.location, &shards, &corpus);
        let outcomes = pipeline
            .with_trainer(self.backends.jobs.clone())
            .run_jobs(Stage::Embed, &specs, wait_options())
            .await?;
        let written = self.shard_count(&shards).await?;
        if written == 0 {
            bail!("the embedding jobs succeeded but wrote no shards under {shards}");
        }
        let ran = outcomes.iter().filter(|o| !o.skipped).count();
        Ok(StageLine::new(
            Stage::Embed,
            format!(
                "{} jobs embedded the corpus with {} → {written} shards in {shards} ({ran} run, {} \
                 already done)",
                specs.len(),
                model.model_id(),
                specs.len() - ran
            ),
            t,
            0,
        ))
    }

    /// A fingerprint of `raw-docs/` (keys, sizes, ETags): what the stage-5 jobs' completion
    /// markers are keyed by.
    async fn corpus_fingerprint(&self) -> Result<String> {
        let raw = self.layout.raw_docs();
        let objects: Vec<_> = self.backends.store.list(&raw).try_collect().await?;
        let mut h = Sha256::new();
        for o in &objects {
            h.update(o.uri.key().as_bytes());
            h.update(o.size.to_le_bytes());
            h.update(o.e_tag.as_deref().unwrap_or("").as_bytes());
            h.update([0]);
        }
        Ok(hex::encode(&h.finalize()[..8]))
    }

    async fn shard_count(&self, shards: &StoreUri) -> Result<usize> {
        let objects: Vec<_> = self.backends.store.list(shards).try_collect().await?;
        Ok(objects
            .iter()
            .filter(|o| shard_number(o.uri.file_name()).is_some())
            .count())
    }

    /// Stage 6: upserts the shards of `model` into the index of `which` model.
    pub async fn index(
        &self,
        model: &dyn EmbeddingModel,
        which: Which,
        progress: Arc<dyn Progress>,
    ) -> Result<StageLine> {
        let t = Instant::now();
        let shards = self.layout.vector_shards(model.model_id());
        if self.shard_count(&shards).await? == 0 {
            bail!(
                "no vector shards under {shards}: embed first (`ragloop run`, or `ragloop embed`)"
            );
        }
        let name = self.index_name(which);
        let r = self
            .pipeline(&name, progress)
            .with_index(self.backends.index.clone())
            .index(model)
            .await?;
        if !r.unreadable.is_empty() {
            bail!(
                "{} vector shards are not readable Parquet (the other shards were indexed; delete \
                 these and run the embed stage again to rewrite them): {:?}",
                r.unreadable.len(),
                r.unreadable
            );
        }
        if !r.failed.is_empty() {
            bail!(
                "{} records could not be indexed ({} were): {:?}",
                r.failed.len(),
                r.written,
                r.failed.iter().take(10).collect::<Vec<_>>()
            );
        }
        Ok(StageLine::new(
            Stage::Index,
            format!(
                "{} records from {} shards written; {} in {name}",
                r.written, r.shards, r.count
            ),
            t,
            0,
        ))
    }

    /// Stage 7: answers `question` with citations, retrieving with `model`.
    pub async fn answer(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        deployed: Option<&str>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Answer)> {
        let t = Instant::now();
        let answer = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_index(self.backends.index.clone())
            .with_chat(self.backends.chat(deployed)?)
            .answer(model, question)
            .await?;
        let tokens = u64::from(answer.usage.total_tokens);
        Ok((
            StageLine::new(
                Stage::Answer,
                format!(
                    "{} citations; retrieval {:.0} ms, generation {:.0} ms, {} prompt + {} completion tokens",
                    answer.citations.len(),
                    answer.retrieval_time.as_secs_f64() * 1e3,
                    answer.generation_time.as_secs_f64() * 1e3,
                    answer.usage.prompt_tokens,
                    answer.usage.completion_tokens
                ),
                t,
                tokens,
            ),
            answer,
        ))
    }

    /// Whether the report evaluates the base model beside a trained one (which then needs its
    /// own shards and index).
    pub fn evaluates_base(&self) -> bool {
        self.config().queries().is_some()
            && self.backends.plan.training().is_some()
            && self.config().retrievers().iter().any(|r| {
                matches!(
                    r,
                    Retriever::Dense(Which::Base) | Retriever::Hybrid(Which::Base)
                )
            })
    }

    /// The report's rows on `eval.queries` (none without a query set).
    pub async fn evaluate(
        &self,
        served: &NamedModel,
        base: Option<&NamedModel>,
    ) -> Result<Vec<MetricsRow>> {
        let Some(path) = self.config().queries() else {
            return Ok(Vec::new());
        };
        let queries = read_queries(path, Some(&self.config().eval.split))?;
        if queries.is_empty() {
            return Err(crate::exit::UsageError(format!(
                "{} has no queries in split {:?}",
                path.display(),
                self.config().eval.split
            ))
            .into());
        }
        let progress: Arc<dyn Progress> = Arc::new(rag_core::LogProgress);
        let mut rows = Vec::new();
        for r in self.config().retrievers() {
            let (mode, which) = match r {
                Retriever::Bm25 => (RetrievalMode::Text, Which::Served),
                Retriever::Dense(w) => (RetrievalMode::Vector, w),
                Retriever::Hybrid(w) => (RetrievalMode::Hybrid, w),
            };
            // Without training the base model is the served one, in the served index.
            let (m, which) = match (which, base) {
                (Which::Base, Some(b)) => (b, Which::Base),
                _ => (served, Which::Served),
            };
            let pipeline = self
                .pipeline(&self.index_name(which), progress.clone())
                .with_index(self.backends.index.clone());
            rows.push(evaluation::row(&pipeline, m.model.as_ref(), &m.name, mode, &queries).await?);
        }
        Ok(rows)
    }

    /// Stage 3's dataset: grounded question/answer pairs from the chunks of `raw-docs/`,
    /// written to `qa-pairs/` (train, validation, manifest) with `[llm]` writing questions and
    /// answers (the extractive model answers questions templated from titles).
    ///
    /// With `user_pairs` (a JSONL file of `{"question", "answer", "chunk_id" | "context"}`),
    /// those are checked and written instead, and no LLM is called.
    pub async fn build_qa_pairs(
        &self,
        mut options: rag_core::qa::QaOptions,
        user_pairs: Option<&Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, rag_core::qa::Manifest)> {
        let t = Instant::now();
        if self.config().llm.backend == LlmBackend::Extractive {
            options.questions = rag_core::qa::QuestionSource::Headings;
        }
        let chat = self.backends.chat(None)?;
        let pipeline = self.pipeline(&self.index_name(Which::Served), progress);
        let loaded = pipeline.load_documents().await?;
        if loaded.documents.is_empty() {
            bail!(
                "no documents under {}: ingest first",
                self.layout.raw_docs()
            );
        }
        let chunks = pipeline.chunk_all(&loaded);
        let (pairs, mut dropped, usage, generator) = match user_pairs {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the pairs in {}", path.display()))?;
                let (pairs, dropped) = rag_core::qa::user_pairs(&text, &chunks);
                (
                    pairs,
                    dropped,
                    rag_core::Usage::default(),
                    "user".to_string(),
                )
            }
            None => {
                let (p, d, u) = rag_core::qa::generate(chat.as_ref(), &chunks, &options).await?;
                (p, d, u, chat.model_id().to_string())
            }
        };
        let mut dataset = rag_core::qa::validate(pairs, &options);
        dropped.append(&mut dataset.dropped);
        dataset.dropped = dropped;
        dataset.usage = usage;
        let manifest = rag_core::qa::write_dataset(
            self.backends.store.as_ref(),
            &self.layout.qa_pairs(),
            &dataset,
            &rag_core::qa::corpus_hash(&chunks),
            &generator,
        )
        .await?;
        Ok((
            StageLine::new(
                Stage::FineTuneLlm,
                format!(
                    "{} train + {} validation examples → {}; dropped {:?}",
                    manifest.train,
                    manifest.validation,
                    self.layout.qa_pairs(),
                    manifest.dropped
                ),
                t,
                u64::from(usage.total_tokens),
            ),
            manifest,
        ))
    }
}

/// The last path segment of a model location (`models/all-MiniLM-L6-v2` → `all-MiniLM-L6-v2`).
fn short_name(location: &str) -> String {
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(location)
        .to_string()
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
    let mut stages = vec![
        r.ingest(None, progress.clone()).await?,
        r.train(progress.clone()).await?,
    ];
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
        }
        Some(base)
    } else {
        None
    };
    stages.extend([embed, index]);
    let evaluation = r.evaluate(&served, base.as_ref()).await?;
    let report = match r.config().queries() {
        Some(q) if !evaluation.is_empty() => {
            let title = format!(
                "Retrieval on the {:?} split of {}",
                r.config().eval.split,
                q.display()
            );
            std::fs::create_dir_all(&r.config().work_dir)?;
            Some(crate::report::write(&r.config().work_dir, "eval-report", &title, &evaluation)?.0)
        }
        _ => None,
    };
    let (ans, answer) = r
        .answer(
            served.model.as_ref(),
            &r.config().eval.question,
            deployed.as_deref(),
            progress,
        )
        .await?;
    stages.push(ans);
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
