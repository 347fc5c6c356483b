//! The loop as a [`LoopConfig`] describes it: each stage on the backend its section names —
//! local files or OSS, local processes or PAI-DLC, the embedded index or Elasticsearch /
//! OpenSearch, the extractive answerer or Bailian. `ragloop run --config`, `ragloop ingest`,
//! `ragloop index` and `ragloop ask` are this module.
//!
//! [`Connected::connect`] builds every backend first, so a missing credential or a bad
//! combination fails before anything runs, in one line naming the variable. Each stage is a
//! method returning a [`StageLine`] (what happened, wall time, LLM tokens); [`run`] chains
//! them. Stage 5 runs in this process, or with `embedding.workers = N` as N batch-embedding
//! jobs (`ragloop embed --worker i --workers N`, each writing its own shards) on `[jobs]`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bailian_client::{
    BailianConfig, BailianDeployer, BailianFineTunes, ChatClient, EmbeddingClient,
    EmbeddingOptions, ModelStudio, Region,
};
use pai_client::{DlcDefaults, PaiBackend, PaiClient, PaiConfig};
use rag_core::local::{
    ExtractiveChat, HashedEmbedding, HashedEmbeddingConfig, LocalDeployer, LocalFileStore,
    LocalProcessBackend, LocalVectorIndex,
};
use rag_core::pipeline::{
    Answer, Backends, Layout, Pipeline, PipelineOptions, Progress, RetrievalMode, Stage,
};
use rag_core::training::Framework;
use rag_core::{
    AccessKey, ChatModel, DeploySpec, EmbeddingModel, JobKind, JobSpec, ModelDeployer, ObjectStore,
    Secret, StoreUri, TrainingBackend, VectorIndex, WaitOptions,
};

use crate::config::{
    DeployBackend, IndexBackend, JobsBackend, LlmBackend, LlmFineTuneBackend, LoopConfig,
    ModelKind, StoreBackend, Training,
};
use crate::local_loop::{MetricsRow, StageLine};
use crate::queries::read_queries;

/// Every backend the configuration names, connected.
pub struct Connected {
    /// The configuration.
    pub config: LoopConfig,
    /// Where the data lives.
    pub layout: Layout,
    /// The local store's root directory (`<work_dir>/store`), when the store is local.
    pub store_root: Option<PathBuf>,
    /// Stage 1's store.
    pub store: Arc<dyn ObjectStore>,
    /// Where jobs run.
    pub jobs: Arc<dyn TrainingBackend>,
    /// Where the LLM is fine-tuned, when stage 3 is on.
    pub llm_trainer: Option<Arc<dyn TrainingBackend>>,
    /// Who deploys, when stage 4 is on.
    pub deployer: Option<Arc<dyn ModelDeployer>>,
    /// The vector index.
    pub index: Arc<dyn VectorIndex>,
    /// The `ragloop` program jobs run.
    pub job_command: Vec<String>,
}

/// What the configured loop did: the same summary as the local loop's.
pub type ConfiguredSummary = crate::local_loop::LoopSummary;

fn wait_options() -> WaitOptions {
    WaitOptions {
        interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(15),
        timeout: Duration::from_secs(24 * 3600),
    }
}

fn line(stage: Stage, summary: String, since: Instant, tokens: u64) -> StageLine {
    let seconds = since.elapsed().as_secs_f64();
    tracing::info!(%stage, seconds, tokens, "{summary}");
    StageLine {
        stage,
        summary,
        seconds,
        tokens,
    }
}

fn access_key(what: &str) -> Result<AccessKey> {
    AccessKey::from_env().with_context(|| {
        format!(
            "{what} needs an Alibaba Cloud AccessKey in {} and {}",
            AccessKey::ENV_ID,
            AccessKey::ENV_SECRET
        )
    })
}

fn env_or(value: &Option<String>, var: &str) -> Option<String> {
    value
        .clone()
        .or_else(|| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

fn region(name: Option<&str>) -> Result<Region> {
    Ok(match name {
        None | Some("beijing" | "cn-beijing") => Region::Beijing,
        Some("singapore" | "ap-southeast-1") => Region::Singapore,
        Some(other) => bail!("llm.region = {other:?}: use beijing or singapore"),
    })
}

/// DashScope's configuration with the key from `DASHSCOPE_API_KEY`.
fn dashscope(what: &str, region_name: Option<&str>) -> Result<BailianConfig> {
    BailianConfig::from_env(region(region_name)?).with_context(|| {
        format!(
            "{what} needs {} (the DashScope API key)",
            BailianConfig::ENV_API_KEY
        )
    })
}

impl Connected {
    /// Builds every backend `config` names. `local_command` is the `ragloop` program local
    /// jobs run (the running binary, usually); PAI jobs run `jobs.command` or `ragloop`.
    pub async fn connect(config: LoopConfig, local_command: Vec<String>) -> Result<Self> {
        config.validate()?;
        let layout = Layout::new(config.root.clone());
        let (store, store_root): (Arc<dyn ObjectStore>, _) = match config.store.backend {
            StoreBackend::Local => {
                let root = config.work_dir.join("store");
                (Arc::new(LocalFileStore::new(&root)), Some(root))
            }
            StoreBackend::Oss => {
                let args = crate::stores::OssArgs {
                    endpoint: env_or(&config.store.endpoint, "OSS_ENDPOINT"),
                    region: env_or(&config.store.region, "OSS_REGION")
                        .unwrap_or_else(|| "cn-hangzhou".into()),
                };
                access_key("store.backend = \"oss\"")?;
                (Arc::new(args.store()?), None)
            }
        };
        let (jobs, job_command): (Arc<dyn TrainingBackend>, _) = match config.jobs.backend {
            JobsBackend::Local => {
                let mut b = LocalProcessBackend::new(config.work_dir.join("jobs"));
                if let Some(root) = &store_root {
                    b = b.with_env("RAGLOOP_STORE_ROOT", absolute(root)?.display().to_string());
                }
                let command = config.jobs.command.clone().unwrap_or(local_command);
                (Arc::new(b), command)
            }
            JobsBackend::Pai => (
                Arc::new(pai_backend(&config)?),
                config
                    .jobs
                    .command
                    .clone()
                    .unwrap_or_else(|| vec!["ragloop".into()]),
            ),
        };
        let llm_trainer: Option<Arc<dyn TrainingBackend>> = match config.llm_fine_tune.backend {
            LlmFineTuneBackend::None => None,
            LlmFineTuneBackend::Pai => Some(Arc::new(pai_backend(&config)?)),
            LlmFineTuneBackend::Local => {
                let mut b = LocalProcessBackend::new(config.work_dir.join("llm-jobs"));
                if let Some(root) = &store_root {
                    b = b.with_env("RAGLOOP_STORE_ROOT", absolute(root)?.display().to_string());
                }
                Some(Arc::new(b))
            }
            LlmFineTuneBackend::Bailian => {
                let api = ModelStudio::new(dashscope(
                    "llm_fine_tune.backend = \"bailian\"",
                    config.llm.region.as_deref(),
                )?)?;
                Some(Arc::new(BailianFineTunes::new(api, store.clone())))
            }
        };
        let deployer: Option<Arc<dyn ModelDeployer>> = match config.deploy.backend {
            DeployBackend::None => None,
            DeployBackend::Local => Some(Arc::new(LocalDeployer::new(
                config.work_dir.join("deployments.json"),
                store.clone(),
            ))),
            DeployBackend::Bailian => {
                let api = ModelStudio::new(dashscope(
                    "deploy.backend = \"bailian\"",
                    config.llm.region.as_deref(),
                )?)?;
                Some(Arc::new(BailianDeployer::new(api, Some(store.clone()))))
            }
        };
        // Credentials of the answering and embedding APIs are checked now, not at stage 7.
        if config.llm.backend == LlmBackend::Bailian {
            dashscope("llm.backend = \"bailian\"", config.llm.region.as_deref())?;
        }
        if matches!(config.embedding.kind(), ModelKind::Bailian(_)) {
            dashscope(
                "embedding.model = \"bailian:…\"",
                config.llm.region.as_deref(),
            )?;
        }
        let index = open_index(&config).await?;
        Ok(Self {
            layout,
            store_root,
            store,
            jobs,
            llm_trainer,
            deployer,
            index,
            job_command,
            config,
        })
    }

    /// A pipeline over these backends answering with `chat`.
    pub fn pipeline(&self, chat: Arc<dyn ChatModel>, progress: Arc<dyn Progress>) -> Pipeline {
        let backends = Backends {
            store: self.store.clone(),
            trainer: self.jobs.clone(),
            index: self.index.clone(),
            chat,
            deployer: self.deployer.clone(),
        };
        Pipeline::new(
            backends,
            self.layout.clone(),
            PipelineOptions {
                index_name: self.config.index.name.clone(),
                top_k: self.config.index.top_k,
                ..Default::default()
            },
        )
        .with_progress(progress)
    }

    /// The answering model: `[llm]`, or the deployed model when `llm.model` is unset.
    pub fn chat(&self, deployed: Option<&str>) -> Result<Arc<dyn ChatModel>> {
        let llm = &self.config.llm;
        Ok(match llm.backend {
            LlmBackend::Extractive => Arc::new(ExtractiveChat::new(3)),
            LlmBackend::Bailian => {
                let model = llm
                    .model
                    .clone()
                    .or(deployed.map(String::from))
                    .unwrap_or_else(|| "qwen-plus".into());
                let config = dashscope("llm.backend = \"bailian\"", llm.region.as_deref())?;
                Arc::new(ChatClient::new(config, model)?)
            }
            LlmBackend::Openai => {
                let base = llm.base_url.clone().context("llm.base_url")?;
                let mut config = BailianConfig::openai_compatible(base);
                if let Some(key) = Secret::from_env("RAGLOOP_LLM_API_KEY") {
                    config = config.with_api_key(key);
                }
                let model = llm.model.clone().context("llm.model")?;
                Arc::new(ChatClient::new(config, model)?)
            }
        })
    }

    /// Where a job finds the store: OSS's region and endpoint travel in the job's environment
    /// (credentials never do: a job has its own, e.g. a RAM role on PAI).
    fn with_store_env(&self, mut spec: JobSpec) -> JobSpec {
        if self.config.store.backend == StoreBackend::Oss {
            if let Some(r) = env_or(&self.config.store.region, "OSS_REGION") {
                spec = spec.with_env("OSS_REGION", r);
            }
            if let Some(e) = env_or(&self.config.store.endpoint, "OSS_ENDPOINT") {
                spec = spec.with_env("OSS_ENDPOINT", e);
            }
        }
        spec
    }

    fn store_args(&self) -> Vec<String> {
        match &self.store_root {
            Some(root) => vec![
                "--store-root".into(),
                absolute(root)
                    .unwrap_or_else(|_| root.clone())
                    .display()
                    .to_string(),
            ],
            None => Vec::new(),
        }
    }

    /// Stage 1: uploads `data` (default `config.data`) to `raw-docs/`.
    pub async fn ingest(
        &self,
        data: Option<&Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<StageLine> {
        let t = Instant::now();
        let dir = data.unwrap_or(&self.config.data);
        let pipeline = self.pipeline(Arc::new(ExtractiveChat::new(1)), progress);
        let report = pipeline
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
        Ok(line(
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

    /// The stage-2 job's spec, if the configuration trains.
    pub fn training_spec(&self) -> Option<JobSpec> {
        let e = &self.config.embedding;
        let output = self.config.model_output();
        let mut command = self.job_command.clone();
        command.extend([
            "train".into(),
            "--data".into(),
            self.layout.raw_docs().to_string(),
            "--output".into(),
            output.to_string(),
        ]);
        command.extend(self.store_args());
        let spec = match (e.kind(), e.training()) {
            (_, Training::None) => return None,
            (ModelKind::Hashed, _) => {
                command.extend(["--dims".into(), e.dims.to_string()]);
                JobSpec::new("emb-train", JobKind::EmbeddingFineTune, command, output)
                    .with_hyper_parameter("dims", e.dims)
            }
            (ModelKind::Sentence(base), mode) => {
                let base = match base.parse::<StoreUri>() {
                    Ok(uri) => uri.to_string(),
                    // A job runs elsewhere: give it an absolute path (as given if that fails).
                    Err(_) => absolute(Path::new(&base))
                        .unwrap_or_else(|_| PathBuf::from(&base))
                        .display()
                        .to_string(),
                };
                let mode = if mode == Training::Full {
                    "full"
                } else {
                    "adapter"
                };
                // Pairs from the queries' train split when the evaluated split is another.
                let queries = self.config.eval.queries.as_ref().filter(|q| {
                    self.config.eval.split != "train"
                        && self.store_root.is_some()
                        && read_queries(q, Some("train")).is_ok_and(|v| !v.is_empty())
                });
                if let Some(q) = queries.map(|q| absolute(q).unwrap_or_else(|_| q.clone())) {
                    command.extend([
                        "--queries".into(),
                        q.display().to_string(),
                        "--queries-split".into(),
                        "train".into(),
                        "--mine".into(),
                        "none".into(),
                    ]);
                }
                JobSpec::new(
                    format!("{}-train", e.name),
                    JobKind::EmbeddingFineTune,
                    command,
                    output,
                )
                .with_base_model(base)
                .with_hyper_parameter("mode", mode)
            }
            (ModelKind::Bailian(_), _) => return None,
        };
        Some(self.with_store_env(spec.with_input("data", self.layout.raw_docs())))
    }

    /// Stage 2: trains the embedding model as a job (skipped when its output is complete).
    pub async fn train(&self, progress: Arc<dyn Progress>) -> Result<StageLine> {
        let t = Instant::now();
        let Some(spec) = self.training_spec() else {
            let why = format!("skipped: {} is used as it is", self.config.embedding.model);
            progress.end(Stage::TrainEmbeddings, &why);
            return Ok(line(Stage::TrainEmbeddings, why, t, 0));
        };
        let pipeline = self.pipeline(Arc::new(ExtractiveChat::new(1)), progress);
        let job = pipeline
            .run_job(Stage::TrainEmbeddings, &spec, wait_options())
            .await?;
        Ok(line(
            Stage::TrainEmbeddings,
            match &job.job_id {
                Some(id) => format!("job {id} ({}) trained → {}", spec.name, spec.output),
                None => format!("{} already trained", spec.output),
            },
            t,
            0,
        ))
    }

    /// Stage 3's job spec, when `[llm_fine_tune]` is on.
    pub fn llm_fine_tune_spec(&self) -> Option<JobSpec> {
        let f = &self.config.llm_fine_tune;
        if f.backend == LlmFineTuneBackend::None {
            return None;
        }
        let name = f.name.clone().unwrap_or_else(|| "llm-ft".into());
        let output = self.layout.model(&name);
        let data = self.layout.qa_pairs();
        let base = f.base_model.clone().unwrap_or_default();
        let mut command = f.command.clone().unwrap_or_default();
        if !command.is_empty() {
            command.extend([
                "--data".into(),
                data.to_string(),
                "--output".into(),
                output.to_string(),
                "--base-model".into(),
                base.clone(),
            ]);
        }
        let mut spec = self.with_store_env(
            JobSpec::new(&name, JobKind::LlmFineTune, command, output)
                .with_input("data", data)
                .with_base_model(base),
        );
        spec.framework = Framework::DeepSpeed;
        for (k, v) in &f.hyper_parameters {
            let v = match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            spec = spec.with_hyper_parameter(k, v);
        }
        Some(spec)
    }

    /// Stage 3: fine-tunes the LLM on `qa-pairs/`; returns the output prefix.
    pub async fn fine_tune_llm(
        &self,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Option<StoreUri>)> {
        let t = Instant::now();
        let (Some(spec), Some(trainer)) = (self.llm_fine_tune_spec(), &self.llm_trainer) else {
            let why = "skipped: no [llm_fine_tune] backend configured".to_string();
            progress.end(Stage::FineTuneLlm, &why);
            return Ok((line(Stage::FineTuneLlm, why, t, 0), None));
        };
        let mut spec = spec;
        let data = self.layout.qa_pairs();
        let train = data.join("train.jsonl")?;
        if self.store.exists(&train).await? {
            // The dataset `ragloop qa-pairs` wrote. Bailian uploads files: its train and
            // validation files, not the manifest beside them. PAI and local jobs get the
            // directory (DLC mounts prefixes), with both files in it.
            if self.config.llm_fine_tune.backend == LlmFineTuneBackend::Bailian {
                spec.inputs.insert("data".into(), train);
                let validation = data.join("validation.jsonl")?;
                if self.store.exists(&validation).await? {
                    spec.inputs.insert("validation".into(), validation);
                }
            }
        } else if self
            .store
            .list_page(&data, None, 1)
            .await?
            .objects
            .is_empty()
        {
            return Err(anyhow::Error::new(rag_core::Error::not_found(format!(
                "stage 3: no training data under {data}: build it with `ragloop qa-pairs`, or put \
                 chat-format JSONL there (one {{\"messages\": [...]}} per line)"
            ))));
        }
        let mut pipeline = self.pipeline(Arc::new(ExtractiveChat::new(1)), progress);
        let mut backends = pipeline.backends().clone();
        backends.trainer = trainer.clone();
        pipeline = Pipeline::new(backends, self.layout.clone(), PipelineOptions::default())
            .with_progress(Arc::new(rag_core::pipeline::LogProgress));
        let job = pipeline
            .run_job(Stage::FineTuneLlm, &spec, wait_options())
            .await?;
        Ok((
            line(
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
        if self.config.llm.backend == LlmBackend::Extractive {
            options.questions = rag_core::qa::QuestionSource::Headings;
        }
        let chat = self.chat(None)?;
        let pipeline = self.pipeline(chat.clone(), progress);
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
            self.store.as_ref(),
            &self.layout.qa_pairs(),
            &dataset,
            &rag_core::qa::corpus_hash(&chunks),
            &generator,
        )
        .await?;
        Ok((
            line(
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

    /// Stage 4: deploys the fine-tuned model (or `deploy.model_path`); returns the name
    /// clients call.
    pub async fn deploy(
        &self,
        fine_tuned: Option<&StoreUri>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Option<String>)> {
        let t = Instant::now();
        let d = &self.config.deploy;
        let model_path = d.model_path.clone().or(fine_tuned.map(|u| u.to_string()));
        let (Some(_), Some(model_path)) = (&self.deployer, model_path) else {
            let why = "skipped: no [deploy] backend configured".to_string();
            progress.end(Stage::Deploy, &why);
            return Ok((line(Stage::Deploy, why, t, 0), None));
        };
        let spec = DeploySpec {
            model_name: d.model_name.clone().unwrap_or_else(|| {
                self.config
                    .llm_fine_tune
                    .name
                    .clone()
                    .unwrap_or_else(|| "llm-ft".into())
            }),
            model_path,
            capacity: d.capacity.unwrap_or(1),
        };
        let pipeline = self.pipeline(Arc::new(ExtractiveChat::new(1)), progress);
        let deployment = pipeline
            .deploy(
                &spec,
                WaitOptions {
                    interval: Duration::from_millis(200),
                    max_interval: Duration::from_secs(15),
                    timeout: Duration::from_secs(d.timeout_secs.unwrap_or(3600)),
                },
            )
            .await?;
        Ok((
            line(
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

    /// The embedding model stages 5–7 use: the trained one when stage 2 trains (its output
    /// must be complete), else `embedding.model` itself.
    pub async fn embedding_model(&self) -> Result<Arc<dyn EmbeddingModel>> {
        let e = &self.config.embedding;
        let trained = self.training_spec().map(|s| s.output);
        Ok(match e.kind() {
            ModelKind::Hashed => match trained {
                Some(dir) => Arc::new(
                    HashedEmbedding::load(self.store.as_ref(), &dir)
                        .await
                        .with_context(|| {
                            format!(
                                "loading the trained model from {dir} (run stage 2: `ragloop run`)"
                            )
                        })?,
                ),
                None => Arc::new(HashedEmbedding::new(HashedEmbeddingConfig {
                    dims: e.dims,
                    ..Default::default()
                })?),
            },
            ModelKind::Sentence(base) => {
                let location = trained.map_or(base, |u| u.to_string());
                let dir = self.fetch_model(&location).await?;
                Arc::new(
                    embed_runtime::SentenceEmbedder::load(&dir)
                        .with_context(|| format!("loading the model in {}", dir.display()))?,
                )
            }
            ModelKind::Bailian(name) => {
                let config = dashscope(
                    "embedding.model = \"bailian:…\"",
                    self.config.llm.region.as_deref(),
                )?;
                Arc::new(EmbeddingClient::new(
                    config,
                    name,
                    e.dims,
                    EmbeddingOptions::default(),
                )?)
            }
        })
    }

    async fn fetch_model(&self, location: &str) -> Result<PathBuf> {
        let Ok(uri) = location.parse::<StoreUri>() else {
            return Ok(PathBuf::from(location));
        };
        crate::embed::fetch_model_from(
            self.store.as_ref(),
            &uri.as_prefix(),
            &self.config.work_dir.join("models"),
        )
        .await
    }

    /// The stage-5 jobs' specs (`embedding.workers` of them), writing under `shards`.
    pub fn embed_specs(&self, shards: &StoreUri) -> Vec<JobSpec> {
        let e = &self.config.embedding;
        let model = match self.training_spec() {
            Some(spec) => spec.output.to_string(),
            None => match e.model.parse::<StoreUri>() {
                Ok(uri) => uri.to_string(),
                Err(_) => absolute(Path::new(&e.model))
                    .map_or(e.model.clone(), |p| p.display().to_string()),
            },
        };
        (0..e.workers)
            .map(|i| {
                let mut command = self.job_command.clone();
                command.extend([
                    "embed".into(),
                    "--model".into(),
                    model.clone(),
                    "--input".into(),
                    self.layout.raw_docs().to_string(),
                    "--output".into(),
                    shards.to_string(),
                    "--worker".into(),
                    i.to_string(),
                    "--workers".into(),
                    e.workers.to_string(),
                ]);
                command.extend(self.store_args());
                self.with_store_env(
                    JobSpec::new(
                        format!("embed-{}-of-{}", i + 1, e.workers),
                        JobKind::Script,
                        command,
                        shards.clone(),
                    )
                    .with_input("data", self.layout.raw_docs()),
                )
            })
            .collect()
    }

    /// Stage 5: chunks and embeds `raw-docs/` into Parquet shards, here or as jobs.
    pub async fn embed(
        &self,
        model: &dyn EmbeddingModel,
        progress: Arc<dyn Progress>,
    ) -> Result<StageLine> {
        let t = Instant::now();
        if self.config.embedding.workers == 0 {
            let pipeline = self.pipeline(Arc::new(ExtractiveChat::new(1)), progress);
            let r = pipeline.embed(model).await?;
            return Ok(line(
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
        let specs = self.embed_specs(&shards);
        progress.begin(Stage::Embed, None);
        let mut ids = Vec::new();
        for spec in &specs {
            ids.push(self.jobs.submit(spec).await?);
        }
        let waits = ids.iter().map(|id| self.jobs.wait(id, wait_options()));
        let statuses = futures::future::join_all(waits).await;
        let mut failed = Vec::new();
        for ((spec, id), status) in specs.iter().zip(&ids).zip(statuses) {
            match status {
                Ok(rag_core::JobStatus::Succeeded) => {}
                other => {
                    let log = self.jobs.logs(id).await.unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    failed.push(format!(
                        "{} ({id}): {other:?}; log ends: {}",
                        spec.name,
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ));
                }
            }
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} embedding jobs failed (re-running resumes from the shards written): {}",
                failed.len(),
                specs.len(),
                failed.join("; ")
            );
        }
        let written = self.store.list_page(&shards, None, 1).await?.objects.len();
        if written == 0 {
            bail!("the embedding jobs succeeded but wrote nothing under {shards}");
        }
        let why = format!("{} jobs embedded the corpus → {shards}", specs.len());
        progress.end(Stage::Embed, &why);
        Ok(line(Stage::Embed, why, t, 0))
    }

    /// Stage 6: upserts the shards of `model` into the index.
    pub async fn index(
        &self,
        model: &dyn EmbeddingModel,
        progress: Arc<dyn Progress>,
    ) -> Result<StageLine> {
        let t = Instant::now();
        let shards = self.layout.vector_shards(model.model_id());
        if self
            .store
            .list_page(&shards, None, 1)
            .await?
            .objects
            .is_empty()
        {
            bail!(
                "no vector shards under {shards}: embed first (`ragloop run`, or `ragloop embed`)"
            );
        }
        let pipeline = self.pipeline(Arc::new(ExtractiveChat::new(1)), progress);
        let r = pipeline.index(model).await?;
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
        Ok(line(
            Stage::Index,
            format!(
                "{} records from {} shards written; {} in {}",
                r.written, r.shards, r.count, self.config.index.name
            ),
            t,
            0,
        ))
    }

    /// Stage 7: answers `question` with citations.
    pub async fn answer(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        deployed: Option<&str>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Answer)> {
        let t = Instant::now();
        let pipeline = self.pipeline(self.chat(deployed)?, progress);
        let answer = pipeline.answer(model, question).await?;
        let tokens = u64::from(answer.usage.total_tokens);
        Ok((
            line(
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

    /// BM25, dense and hybrid retrieval on `[eval] queries`.
    pub async fn evaluate(&self, model: &dyn EmbeddingModel) -> Result<Vec<MetricsRow>> {
        let Some(path) = &self.config.eval.queries else {
            return Ok(Vec::new());
        };
        let queries = read_queries(path, Some(&self.config.eval.split))?;
        let pipeline = self.pipeline(
            Arc::new(ExtractiveChat::new(1)),
            Arc::new(rag_core::pipeline::LogProgress),
        );
        let mut rows = Vec::new();
        for (label, mode) in [
            ("BM25".to_string(), RetrievalMode::Text),
            (format!("dense {}", model.model_id()), RetrievalMode::Vector),
            (
                format!("hybrid: BM25 + {} (RRF)", model.model_id()),
                RetrievalMode::Hybrid,
            ),
        ] {
            rows.push(MetricsRow {
                retriever: label,
                metrics: pipeline.evaluate(model, &queries, mode, 50).await?,
            });
        }
        Ok(rows)
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn pai_backend(config: &LoopConfig) -> Result<PaiBackend> {
    let j = &config.jobs;
    let region = env_or(&j.region, "PAI_REGION").unwrap_or_else(|| "cn-hangzhou".into());
    let workspace = env_or(&j.workspace_id, "PAI_WORKSPACE_ID")
        .context("PAI needs jobs.workspace_id (or PAI_WORKSPACE_ID)")?;
    let image = env_or(&j.image, "PAI_IMAGE")
        .context("PAI needs jobs.image (or PAI_IMAGE): an image with ragloop on its PATH")?;
    let mut pai = PaiConfig::new(&region, &workspace)?.with_credentials(access_key("PAI")?);
    if let Some(e) = env_or(&j.endpoint, "PAI_DLC_ENDPOINT") {
        pai = pai.with_endpoint(e);
    }
    let oss_region = env_or(&config.store.region, "OSS_REGION").unwrap_or_else(|| region.clone());
    Ok(PaiBackend::new(
        PaiClient::new(pai)?,
        DlcDefaults {
            image,
            resource_id: j.resource_id.clone(),
            ecs_spec: j
                .ecs_spec
                .clone()
                .unwrap_or_else(|| "ecs.gn7i-c8g1.2xlarge".into()),
            oss_region,
        },
    ))
}

async fn open_index(config: &LoopConfig) -> Result<Arc<dyn VectorIndex>> {
    let dir = config.work_dir.join("index");
    Ok(match config.index.backend {
        IndexBackend::Local => Arc::new(
            LocalVectorIndex::open(&dir)
                .await
                .with_context(|| format!("opening the index in {}", dir.display()))?,
        ),
        IndexBackend::Hnsw => Arc::new(
            vector_store::open_ann_index(&dir, vector_store::AnnParams::default())
                .await
                .with_context(|| format!("opening the index in {}", dir.display()))?,
        ),
        IndexBackend::Elasticsearch | IndexBackend::Opensearch => {
            let url = env_or(&config.index.url, "RAGLOOP_SEARCH_URL").with_context(|| {
                format!(
                    "index.backend = {:?} needs index.url (or RAGLOOP_SEARCH_URL)",
                    config.index.backend
                )
            })?;
            let engine = if config.index.backend == IndexBackend::Elasticsearch {
                vector_store::Engine::Elasticsearch8
            } else {
                vector_store::Engine::OpenSearch2
            };
            let search = vector_store::SearchConfig::new(url, engine)
                .with_auth(vector_store::Auth::from_env()?);
            Arc::new(vector_store::SearchIndex::new(search)?)
        }
    })
}

/// Runs every stage and the evaluation.
pub async fn run(connected: &Connected, progress: Arc<dyn Progress>) -> Result<ConfiguredSummary> {
    let t0 = Instant::now();
    let c = connected;
    let mut stages = vec![
        c.ingest(None, progress.clone()).await?,
        c.train(progress.clone()).await?,
    ];
    let (ft, tuned) = c.fine_tune_llm(progress.clone()).await?;
    stages.push(ft);
    let (dep, deployed) = c.deploy(tuned.as_ref(), progress.clone()).await?;
    stages.push(dep);
    let model = c.embedding_model().await?;
    stages.push(c.embed(model.as_ref(), progress.clone()).await?);
    stages.push(c.index(model.as_ref(), progress.clone()).await?);
    let evaluation = c.evaluate(model.as_ref()).await?;
    let report = if evaluation.is_empty() {
        None
    } else {
        let title = format!(
            "Retrieval on the {:?} split of {}",
            c.config.eval.split,
            c.config
                .eval
                .queries
                .as_ref()
                .map_or_else(String::new, |q| q.display().to_string())
        );
        std::fs::create_dir_all(&c.config.work_dir)?;
        Some(crate::report::write(&c.config.work_dir, "eval-report", &title, &evaluation)?.0)
    };
    let (ans, answer) = c
        .answer(
            model.as_ref(),
            &c.config.eval.question,
            deployed.as_deref(),
            progress,
        )
        .await?;
    stages.push(ans);
    let total_tokens = stages.iter().map(|s| s.tokens).sum();
    Ok(ConfiguredSummary {
        stages,
        evaluation,
        answer,
        report,
        seconds: t0.elapsed().as_secs_f64(),
        total_tokens,
    })
}

/// What `--dry-run` prints: each stage's backend and the jobs it would submit, with no call
/// made and no credential needed.
pub fn plan(config: &LoopConfig, local_command: Vec<String>) -> Result<String> {
    config.validate()?;
    let layout = Layout::new(config.root.clone());
    let store = match config.store.backend {
        StoreBackend::Local => format!(
            "local files under {}",
            config.work_dir.join("store").display()
        ),
        StoreBackend::Oss => format!(
            "OSS ({})",
            config
                .store
                .endpoint
                .clone()
                .or(config.store.region.clone())
                .unwrap_or_else(|| "cn-hangzhou".into())
        ),
    };
    let jobs = match config.jobs.backend {
        JobsBackend::Local => "local processes".to_string(),
        JobsBackend::Pai => format!(
            "PAI-DLC workspace {}",
            config
                .jobs
                .workspace_id
                .as_deref()
                .unwrap_or("$PAI_WORKSPACE_ID")
        ),
    };
    let mut out = format!(
        "Plan for {} (store: {store}; jobs: {jobs})\n",
        layout.root()
    );
    let mut stage =
        |s: Stage, what: String| out.push_str(&format!("  {:<20} {what}\n", s.to_string()));
    stage(
        Stage::Ingest,
        format!("{} → {}", config.data.display(), layout.raw_docs()),
    );
    // The specs need no connection: a connection-free stand-in builds them.
    let offline = Offline::new(config, local_command);
    match offline.training_spec() {
        Some(spec) => stage(
            Stage::TrainEmbeddings,
            format!(
                "job {} → {}: {}",
                spec.name,
                spec.output,
                spec.command.join(" ")
            ),
        ),
        None => stage(
            Stage::TrainEmbeddings,
            format!("none ({} as it is)", config.embedding.model),
        ),
    }
    match offline.llm_fine_tune_spec() {
        Some(spec) => stage(
            Stage::FineTuneLlm,
            format!(
                "{:?} fine-tune of {} on {} → {}",
                config.llm_fine_tune.backend,
                spec.base_model.as_deref().unwrap_or("?"),
                layout.qa_pairs(),
                spec.output
            ),
        ),
        None => stage(Stage::FineTuneLlm, "skipped".into()),
    }
    stage(
        Stage::Deploy,
        match config.deploy.backend {
            DeployBackend::None => "skipped".into(),
            b => format!("{b:?} deployment, waits until it serves"),
        },
    );
    stage(
        Stage::Embed,
        if config.embedding.workers == 0 {
            format!(
                "in this process with {} → {}",
                config.embedding.model,
                layout
                    .root()
                    .as_prefix()
                    .join("vector-indexes/<model id>/")
                    .map_or_else(|_| String::new(), |u| u.to_string())
            )
        } else {
            let specs = offline.embed_specs(&layout.vector_shards("MODEL_ID"));
            format!(
                "{} jobs, e.g. {}",
                specs.len(),
                specs
                    .first()
                    .map_or_else(String::new, |s| s.command.join(" "))
            )
        },
    );
    stage(
        Stage::Index,
        format!("{:?} index {:?}", config.index.backend, config.index.name),
    );
    stage(
        Stage::Answer,
        format!(
            "{:?} LLM{}, top {} chunks, hybrid retrieval",
            config.llm.backend,
            config
                .llm
                .model
                .as_ref()
                .map_or_else(String::new, |m| format!(" {m}")),
            config.index.top_k
        ),
    );
    Ok(out)
}

/// Builds job specs from a configuration without connecting anything (for [`plan`]).
struct Offline(Connected);

impl Offline {
    fn new(config: &LoopConfig, local_command: Vec<String>) -> Self {
        let unreachable: Arc<dyn ObjectStore> = Arc::new(rag_core::local::InMemoryStore::new());
        let job_command = match config.jobs.backend {
            JobsBackend::Local => config.jobs.command.clone().unwrap_or(local_command),
            JobsBackend::Pai => config
                .jobs
                .command
                .clone()
                .unwrap_or_else(|| vec!["ragloop".into()]),
        };
        Self(Connected {
            layout: Layout::new(config.root.clone()),
            store_root: (config.store.backend == StoreBackend::Local)
                .then(|| config.work_dir.join("store")),
            store: unreachable,
            jobs: Arc::new(LocalProcessBackend::new(config.work_dir.join("jobs"))),
            llm_trainer: None,
            deployer: None,
            index: Arc::new(LocalVectorIndex::in_memory()),
            job_command,
            config: config.clone(),
        })
    }
}

impl std::ops::Deref for Offline {
    type Target = Connected;
    fn deref(&self) -> &Connected {
        &self.0
    }
}

/// The summary as the terminal shows it.
pub fn render(s: &ConfiguredSummary) -> String {
    crate::local_loop::render(s)
}
