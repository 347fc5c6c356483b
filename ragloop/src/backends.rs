//! The one backend factory: every backend a [`LoopConfig`] names, built up front so that a
//! missing credential or a bad combination fails before stage 1, in one line naming the
//! variable. The runner, `ingest`, `index`, `ask` and `qa-pairs` all start here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bailian_client::{
    BailianConfig, BailianDeployer, BailianFineTunes, ChatClient, EmbeddingClient,
    EmbeddingOptions, ModelStudio, Region, RerankClient,
};
use pai_client::{DlcDefaults, PaiBackend, PaiClient, PaiConfig};

use crate::program::Program;
use rag_core::local::{
    ExtractiveChat, HashedEmbedding, HashedEmbeddingConfig, LocalDeployer, LocalProcessBackend,
};
use rag_core::rerank::Reranker;
use rag_core::{
    AccessKey, ChatModel, EmbeddingModel, ModelDeployer, ObjectStore, Secret, StoreUri,
    TrainingBackend, VectorIndex,
};

use crate::config::{
    DeployBackend, IndexBackend, JobsBackend, LlmBackend, LlmFineTuneBackend, LoopConfig,
    ModelKind, RerankBackend, StoreBackend,
};
use crate::jobs::JobPlan;
use crate::stores::StoreSpec;

/// Every backend the configuration names, connected.
pub struct Backends {
    /// The configuration.
    pub config: LoopConfig,
    /// The store, as jobs receive it.
    pub store_spec: StoreSpec,
    /// The store every stage reads and writes.
    pub store: Arc<dyn ObjectStore>,
    /// Where jobs run (stage 2, stage 5 as jobs).
    pub jobs: Arc<dyn TrainingBackend>,
    /// Where the LLM is fine-tuned, when stage 3 is on.
    pub llm_trainer: Option<Arc<dyn TrainingBackend>>,
    /// Who deploys, when stage 4 is on.
    pub deployer: Option<Arc<dyn ModelDeployer>>,
    /// The vector index.
    pub index: Arc<dyn VectorIndex>,
    /// The jobs the loop submits.
    pub plan: JobPlan,
}

/// The store description `config` names: local files under `<work_dir>/store`, or OSS.
pub fn store_spec(config: &LoopConfig) -> Result<StoreSpec> {
    Ok(match config.store.backend {
        StoreBackend::Local => StoreSpec::local(&config.work_dir.join("store"))?,
        StoreBackend::Oss => StoreSpec::Oss {
            region: env_or(&config.store.region, "OSS_REGION")
                .unwrap_or_else(|| "cn-hangzhou".into()),
            endpoint: env_or(&config.store.endpoint, "OSS_ENDPOINT"),
        },
    })
}

/// The `ragloop` program jobs on `[jobs]` run: `jobs.command`, else `local` (this binary)
/// for local jobs and `ragloop` on the image's `PATH` for PAI (image-free PAI jobs run
/// [`Program::command`] instead: [`image_free`]).
pub fn job_command(config: &LoopConfig, local: Vec<String>) -> Vec<String> {
    config
        .jobs
        .command
        .clone()
        .unwrap_or(match config.jobs.backend {
            JobsBackend::Local => local,
            JobsBackend::Pai => vec!["ragloop".into()],
        })
}

impl Backends {
    /// Builds every backend `config` names. `local_command` is the `ragloop` program local
    /// jobs run (the running binary, usually).
    pub async fn connect(config: LoopConfig, local_command: Vec<String>) -> Result<Self> {
        config.validate()?;
        let store_spec = store_spec(&config)?;
        if config.store.backend == StoreBackend::Oss {
            access_key("store.backend = \"oss\"")?;
        }
        let store = store_spec.open()?;
        if config.rerank.backend == RerankBackend::Bailian {
            dashscope(
                "rerank.backend = \"bailian\"",
                config.rerank.region.as_deref(),
            )?;
        }
        // Image-free PAI jobs: this binary, uploaded once, mounted into a stock image.
        let program = match image_free(&config, &local_command)? {
            Some(p) => {
                let uploaded = p.publish(store.as_ref()).await?;
                tracing::info!(
                    binary = %p.path.display(),
                    object = %p.uri,
                    uploaded,
                    "image-free PAI jobs run this binary from the bucket"
                );
                Some(p)
            }
            None => None,
        };
        let jobs: Arc<dyn TrainingBackend> = match config.jobs.backend {
            JobsBackend::Local => Arc::new(LocalProcessBackend::new(config.work_dir.join("jobs"))),
            JobsBackend::Pai => Arc::new(pai_backend(&config, program.as_ref())?),
        };
        let llm_trainer: Option<Arc<dyn TrainingBackend>> = match config.llm_fine_tune.backend {
            LlmFineTuneBackend::None => None,
            LlmFineTuneBackend::Pai => Some(Arc::new(pai_backend(&config, program.as_ref())?)),
            LlmFineTuneBackend::Local => Some(Arc::new(LocalProcessBackend::new(
                config.work_dir.join("llm-jobs"),
            ))),
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
                let mut deployer = BailianDeployer::new(api, Some(store.clone()));
                if let Some(plan) = &config.deploy.plan {
                    deployer = deployer.with_plan(plan.parse().context("deploy.plan")?);
                }
                if let Some(suffix) = &config.deploy.suffix {
                    deployer = deployer.with_suffix(suffix.clone());
                }
                Some(Arc::new(deployer))
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
        let command = match (&program, &config.jobs.command) {
            (Some(p), None) => p.command(),
            _ => job_command(&config, local_command),
        };
        let plan = JobPlan::new(&config, command, store_spec.clone());
        Ok(Self {
            store_spec,
            store,
            jobs,
            llm_trainer,
            deployer,
            index,
            plan,
            config,
        })
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

    /// The `[rerank]` reranker: `None` for `backend = "none"`, a local cross-encoder
    /// directory, or DashScope's text-rerank.
    pub async fn reranker(&self) -> Result<Option<LoadedReranker>> {
        let r = &self.config.rerank;
        let (model, chosen): (Arc<dyn Reranker>, Option<f32>) = match r.backend {
            RerankBackend::None => return Ok(None),
            RerankBackend::Local => {
                let location = match (&r.model, self.config.reranker_output()) {
                    (Some(m), _) => m.clone(),
                    (None, Some(trained)) => trained.to_string(),
                    (None, None) => anyhow::bail!(
                        "rerank.model: the cross-encoder directory (`ragloop train --reranker` writes one)"
                    ),
                };
                let dir = self.fetch_model(&location).await?;
                let options = embed_runtime::CrossEncoderOptions {
                    quantize: r.quantize,
                    ..Default::default()
                };
                let model = embed_runtime::CrossEncoder::load_with(&dir, options)
                    .with_context(|| format!("loading the reranker {location}"))?;
                let chosen = crate::evaluation::RerankChoice::read(&dir)?.map(|c| c.weight);
                (Arc::new(model), chosen)
            }
            RerankBackend::Bailian => {
                let config = dashscope("rerank.backend = \"bailian\"", r.region.as_deref())?;
                let model = r.model.clone().unwrap_or_else(|| "gte-rerank-v2".into());
                let client = RerankClient::new(config, model, Default::default())?;
                (Arc::new(client), None)
            }
        };
        Ok(Some(LoadedReranker {
            model,
            weight: r.weight.or(chosen).unwrap_or(1.0),
        }))
    }

    /// The embedding model at `location` (`hashed`, a model directory or store prefix, or
    /// `bailian:<name>`); a trained hashed model is loaded from the store prefix `trained`.
    /// A sentence-transformers model keeps its encoder's pooled vectors in
    /// `<work_dir>/cache/pooled/`, so the base model and an adapter trained on it encode the
    /// corpus once between them, and a rerun encodes nothing it has seen.
    pub async fn embedding_model(
        &self,
        location: &str,
        trained: Option<&StoreUri>,
    ) -> Result<Arc<dyn EmbeddingModel>> {
        let e = &self.config.embedding;
        let kind = crate::config::EmbeddingSection {
            model: location.to_string(),
            ..e.clone()
        }
        .kind();
        Ok(match kind {
            ModelKind::Hashed => match trained {
                Some(dir) => Arc::new(
                    HashedEmbedding::load(self.store.as_ref(), dir)
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
            ModelKind::Sentence(location) => {
                let location = trained.map_or(location, |u| u.to_string());
                let dir = self.fetch_model(&location).await?;
                let options = embed_runtime::EmbedderOptions {
                    cache_dir: Some(self.config.work_dir.join("cache/pooled")),
                    quantize: e.quantize,
                    device: e.device,
                    ..Default::default()
                };
                Arc::new(
                    embed_runtime::SentenceEmbedder::load_with(&dir, options)
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

    /// A model directory: `location` itself, or a copy of the store prefix it names.
    async fn fetch_model(&self, location: &str) -> Result<PathBuf> {
        if let Some(p) = crate::embed::pretrained(location) {
            return crate::embed::fetch_pretrained(p).await;
        }
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
}

/// A reranker and how much its order counts against the search's (`[rerank] weight`, else the
/// weight its training job chose, else 1).
#[derive(Clone)]
pub struct LoadedReranker {
    /// The model.
    pub model: Arc<dyn Reranker>,
    /// Its weight ([`rag_core::pipeline::PipelineOptions::rerank_weight`]).
    pub weight: f32,
}

impl std::fmt::Debug for LoadedReranker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedReranker")
            .field("model", &self.model.model_id())
            .field("weight", &self.weight)
            .finish()
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

/// `value`, else the environment variable `var` when set and not blank.
pub(crate) fn env_or(value: &Option<String>, var: &str) -> Option<String> {
    value
        .clone()
        .or_else(|| std::env::var(var).ok().filter(|v| !v.trim().is_empty()))
}

/// DashScope's configuration with the key from `DASHSCOPE_API_KEY`.
fn dashscope(what: &str, region: Option<&str>) -> Result<BailianConfig> {
    let region: Region = match region {
        None => Region::Beijing,
        Some(r) => r.parse().context("llm.region")?,
    };
    BailianConfig::from_env(region).with_context(|| {
        format!(
            "{what} needs {} (the DashScope API key)",
            BailianConfig::ENV_API_KEY
        )
    })
}

/// PAI's region for `config`'s jobs.
pub(crate) fn pai_region(config: &LoopConfig) -> String {
    env_or(&config.jobs.region, "PAI_REGION").unwrap_or_else(|| "cn-hangzhou".into())
}

/// The binary image-free PAI jobs run, when some job runs on PAI with no `jobs.image` (nor
/// `PAI_IMAGE`): `jobs.binary`, else the running `ragloop` (`local_command[0]`), named under
/// `<root>bin/` (nothing is uploaded here). A binary that needs a newer glibc than the
/// default stock image has is refused with what to do.
pub fn image_free(config: &LoopConfig, local_command: &[String]) -> Result<Option<Program>> {
    let on_pai = config.jobs.backend == JobsBackend::Pai
        || config.llm_fine_tune.backend == LlmFineTuneBackend::Pai;
    if !on_pai || env_or(&config.jobs.image, "PAI_IMAGE").is_some() {
        return Ok(None);
    }
    let binary = match (&config.jobs.binary, local_command.first()) {
        (Some(b), _) => b.clone(),
        (None, Some(exe)) => std::path::PathBuf::from(exe),
        (None, None) => bail!("image-free PAI jobs need jobs.binary (the ragloop to upload)"),
    };
    let stock = config
        .jobs
        .base_image
        .is_none()
        .then_some(crate::program::STOCK_GLIBC);
    Ok(Some(Program::describe(&config.root, &binary, stock)?))
}

fn pai_backend(config: &LoopConfig, program: Option<&Program>) -> Result<PaiBackend> {
    let j = &config.jobs;
    let region = pai_region(config);
    let workspace = env_or(&j.workspace_id, "PAI_WORKSPACE_ID")
        .context("PAI needs jobs.workspace_id (or PAI_WORKSPACE_ID)")?;
    let (image, mounts) = match program {
        Some(p) => (
            j.base_image
                .clone()
                .unwrap_or_else(|| crate::program::stock_image(&region)),
            vec![(p.prefix(), crate::program::MOUNT.to_string())],
        ),
        None => (
            env_or(&j.image, "PAI_IMAGE").context(
                "PAI needs jobs.image (or PAI_IMAGE): an image with ragloop on its PATH",
            )?,
            Vec::new(),
        ),
    };
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
            mounts,
        },
    ))
}

async fn open_index(config: &LoopConfig) -> Result<Arc<dyn VectorIndex>> {
    let dir = config.work_dir.join("index");
    Ok(match config.index.backend {
        IndexBackend::Local => Arc::new(
            vector_store::open_local_index(&dir, None)
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
            let mut search = vector_store::SearchConfig::new(url, engine)
                .with_auth(vector_store::Auth::from_env()?);
            if let Some(name) = &config.index.cluster_analyzer {
                search = search.with_text_analyzer(name.clone());
            }
            Arc::new(vector_store::SearchIndex::new(search)?)
        }
    })
}
