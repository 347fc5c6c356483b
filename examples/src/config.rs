//! The loop's configuration file (`ragloop.toml`): which backend serves each stage.
//!
//! Every section is optional; what is left out is the local default, so an empty file is the
//! local loop. Relative paths are relative to the directory `ragloop` runs in. Credentials
//! never go in the file: they come from the environment (named in each section below), and a
//! missing one is reported in one line naming the variable.
//!
//! ```toml
//! root = "oss://my-bucket/rag/"     # everything lives under this prefix
//! data = "data/manpages/docs"       # stage 1 uploads this directory to <root>raw-docs/
//! work_dir = ".ragloop"             # local store, index, jobs and model cache
//!
//! [store]                           # local | oss   (ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET)
//! backend = "oss"
//! region = "cn-hangzhou"
//!
//! [jobs]                            # where stage 2 and batch-embedding jobs run: local | pai
//! backend = "pai"                   # (PAI: the AccessKey above)
//! region = "cn-hangzhou"
//! workspace_id = "12345"
//! image = "registry.cn-hangzhou.aliyuncs.com/me/ragloop:latest"
//!
//! [embedding]
//! model = "oss://my-bucket/models/all-MiniLM-L6-v2/"  # hashed | a model dir/prefix | bailian:<name>
//! train = "adapter"                 # none | idf (hashed) | adapter | full
//! workers = 4                       # stage 5 as 4 jobs, one shard set each (0: in this process)
//!
//! [index]                           # local | hnsw | elasticsearch | opensearch
//! backend = "elasticsearch"         # (RAGLOOP_SEARCH_API_KEY or _USER/_PASSWORD)
//! url = "https://es-cn-xxxx.elasticsearch.aliyuncs.com:9200"
//!
//! [llm]                             # extractive | bailian (DASHSCOPE_API_KEY) | openai
//! backend = "bailian"
//! model = "qwen-plus"
//!
//! [llm_fine_tune]                   # none | bailian | pai | local (stage 3, <root>qa-pairs/)
//! backend = "bailian"
//! base_model = "qwen2.5-7b-instruct"
//!
//! [deploy]                          # none | bailian | local (stage 4)
//! backend = "bailian"
//!
//! [eval]
//! queries = "data/manpages/queries.jsonl.gz"
//! question = "How do I duplicate a file descriptor?"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rag_core::StoreUri;
use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// The prefix every stage's data lives under (`raw-docs/`, `models/`, …).
    #[serde(default = "default_root")]
    pub root: StoreUri,
    /// The documents stage 1 uploads.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// The local working directory (local store and index, job logs, model cache).
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    /// Stage 1's store, which every stage reads and writes.
    #[serde(default)]
    pub store: StoreSection,
    /// Where jobs run (stage 2, and stage 5 with `embedding.workers`).
    #[serde(default)]
    pub jobs: JobsSection,
    /// The embedding model and its training (stages 2 and 5).
    #[serde(default)]
    pub embedding: EmbeddingSection,
    /// The vector index (stage 6).
    #[serde(default)]
    pub index: IndexSection,
    /// Who answers (stage 7).
    #[serde(default)]
    pub llm: LlmSection,
    /// Fine-tuning the LLM (stage 3).
    #[serde(default)]
    pub llm_fine_tune: LlmFineTuneSection,
    /// Serving the fine-tuned LLM (stage 4).
    #[serde(default)]
    pub deploy: DeploySection,
    /// Evaluation and the question answered at the end.
    #[serde(default)]
    pub eval: EvalSection,
}

fn default_root() -> StoreUri {
    "oss://ragloop-demo/".parse().expect("a valid URI")
}

fn default_data() -> PathBuf {
    PathBuf::from("data/manpages/docs")
}

fn default_work_dir() -> PathBuf {
    PathBuf::from(".ragloop")
}

impl Default for LoopConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// Which object store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    /// Files under `<work_dir>/store/<bucket>/`.
    #[default]
    Local,
    /// Alibaba Cloud OSS, or any S3-compatible server with `endpoint`.
    Oss,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `local` or `oss`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// OSS region (default `cn-hangzhou`, or `OSS_REGION`).
    pub region: Option<String>,
    /// An S3-compatible endpoint instead of OSS's (path-style addressing), or `OSS_ENDPOINT`.
    pub endpoint: Option<String>,
}

/// Where jobs run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobsBackend {
    /// Processes on this machine (`LocalProcessBackend`).
    #[default]
    Local,
    /// PAI-DLC.
    Pai,
}

/// `[jobs]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSection {
    /// `local` or `pai`.
    #[serde(default)]
    pub backend: JobsBackend,
    /// The `ragloop` program inside a job: default this binary (local) or `ragloop` (PAI: the
    /// image must have it on its `PATH`).
    pub command: Option<Vec<String>>,
    /// PAI region (or `PAI_REGION`).
    pub region: Option<String>,
    /// PAI workspace id (or `PAI_WORKSPACE_ID`).
    pub workspace_id: Option<String>,
    /// The job image (or `PAI_IMAGE`).
    pub image: Option<String>,
    /// ECS instance type of each worker.
    pub ecs_spec: Option<String>,
    /// A resource quota instead of public resources.
    pub resource_id: Option<String>,
    /// Another DLC endpoint (or `PAI_DLC_ENDPOINT`).
    pub endpoint: Option<String>,
}

/// How stage 2 trains the embedding model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Training {
    /// No training: the model is used as it is.
    None,
    /// The hashed model's IDF fit.
    Idf,
    /// A linear adapter on the frozen encoder.
    Adapter,
    /// Full fine-tuning.
    Full,
}

/// `[embedding]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSection {
    /// `hashed`, a sentence-transformers directory or store prefix, or `bailian:<model>`
    /// (DashScope's embedding API; `DASHSCOPE_API_KEY`).
    #[serde(default = "default_model")]
    pub model: String,
    /// Output dimension (hashed and Bailian models; a sentence-transformers model has its own).
    #[serde(default = "default_dims")]
    pub dims: usize,
    /// Stage 2: default `idf` for the hashed model, `none` otherwise.
    pub train: Option<Training>,
    /// The trained model's name: it is written to `<root>models/<name>/`.
    #[serde(default = "default_model_name")]
    pub name: String,
    /// Stage 5 as this many jobs on `[jobs]`, each embedding its share of the shards
    /// (sentence-transformers models only); 0 embeds in this process.
    #[serde(default)]
    pub workers: u32,
}

fn default_model() -> String {
    "hashed".into()
}

fn default_dims() -> usize {
    768
}

fn default_model_name() -> String {
    "emb-v1".into()
}

impl Default for EmbeddingSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// What kind of embedding model `embedding.model` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelKind {
    /// The local hashed model.
    Hashed,
    /// A sentence-transformers model: a local directory or a store prefix.
    Sentence(String),
    /// DashScope's embedding API with this model.
    Bailian(String),
}

impl EmbeddingSection {
    /// What `model` names.
    pub fn kind(&self) -> ModelKind {
        match self.model.as_str() {
            "hashed" => ModelKind::Hashed,
            m => match m.strip_prefix("bailian:") {
                Some(name) => ModelKind::Bailian(name.to_string()),
                None => ModelKind::Sentence(m.to_string()),
            },
        }
    }

    /// Stage 2's training, the default filled in.
    pub fn training(&self) -> Training {
        self.train.unwrap_or(match self.kind() {
            ModelKind::Hashed => Training::Idf,
            _ => Training::None,
        })
    }
}

/// Which vector index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IndexBackend {
    /// `LocalVectorIndex` (exact kNN + BM25) under `<work_dir>/index`.
    #[default]
    Local,
    /// The same with an HNSW graph (vector-store) for large corpora.
    Hnsw,
    /// Elasticsearch 8 (Alibaba Cloud Elasticsearch).
    Elasticsearch,
    /// OpenSearch 2 (Alibaba Cloud OpenSearch).
    Opensearch,
}

/// `[index]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    /// The backend.
    #[serde(default)]
    pub backend: IndexBackend,
    /// The index name.
    #[serde(default = "default_index_name")]
    pub name: String,
    /// Cluster URL (Elasticsearch/OpenSearch), or `RAGLOOP_SEARCH_URL`. Credentials come from
    /// `RAGLOOP_SEARCH_API_KEY`, or `RAGLOOP_SEARCH_USER` + `RAGLOOP_SEARCH_PASSWORD`.
    pub url: Option<String>,
    /// Chunks retrieved for an answer.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_index_name() -> String {
    "rag-index".into()
}

fn default_top_k() -> usize {
    5
}

impl Default for IndexSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// Who answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LlmBackend {
    /// The local extractive answerer (quotes the best context sentences).
    #[default]
    Extractive,
    /// Bailian (DashScope) with `DASHSCOPE_API_KEY`.
    Bailian,
    /// Any OpenAI-compatible server at `base_url` (vLLM, llama.cpp, Ollama); key optional
    /// (`RAGLOOP_LLM_API_KEY`).
    Openai,
}

/// `[llm]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSection {
    /// The backend.
    #[serde(default)]
    pub backend: LlmBackend,
    /// The model (`qwen-plus` by default on Bailian); with a stage-4 deployment and no model,
    /// the deployed one.
    pub model: Option<String>,
    /// The OpenAI-compatible base URL (`http://127.0.0.1:8000/v1`).
    pub base_url: Option<String>,
    /// DashScope region: `beijing` (default) or `singapore`.
    pub region: Option<String>,
}

/// Where the LLM is fine-tuned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LlmFineTuneBackend {
    /// Stage 3 is skipped.
    #[default]
    None,
    /// Bailian (Model Studio) fine-tunes.
    Bailian,
    /// A PAI-DLC DeepSpeed job running `command`.
    Pai,
    /// A local process running `command` (your own trainer; `examples/scripts/train_llm_local.py`
    /// shows the contract), with `RAGLOOP_STORE_ROOT` for a local store.
    Local,
}

/// `[llm_fine_tune]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmFineTuneSection {
    /// The backend.
    #[serde(default)]
    pub backend: LlmFineTuneBackend,
    /// The model to fine-tune (`qwen2.5-7b-instruct`, `qwen-7b`).
    pub base_model: Option<String>,
    /// The output's name: `<root>models/<name>/` (default `llm-ft`).
    pub name: Option<String>,
    /// The training command on PAI (the seed's `train_llm.py`); `--data`/`--output`/
    /// `--base-model` are appended.
    pub command: Option<Vec<String>>,
    /// Hyper-parameters (`n_epochs = 3`, `learning_rate = "1e-5"`).
    #[serde(default)]
    pub hyper_parameters: BTreeMap<String, toml::Value>,
}

/// Who serves the fine-tuned LLM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeployBackend {
    /// Stage 4 is skipped.
    #[default]
    None,
    /// Bailian (Model Studio) deployments.
    Bailian,
    /// The local registry (`<work_dir>/deployments.json`).
    Local,
}

/// `[deploy]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySection {
    /// The backend.
    #[serde(default)]
    pub backend: DeployBackend,
    /// The name clients call (default: the fine-tune's name).
    pub model_name: Option<String>,
    /// What to deploy when stage 3 did not run: a model id or an output prefix.
    pub model_path: Option<String>,
    /// Instances.
    pub capacity: Option<u32>,
    /// How long to wait for the deployment to serve (default 3600 s); one that does not is
    /// undeployed and the stage fails.
    pub timeout_secs: Option<u64>,
}

/// `[eval]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Query set (JSONL or JSONL.gz); evaluation is skipped without one.
    pub queries: Option<PathBuf>,
    /// The split evaluated.
    #[serde(default = "default_split")]
    pub split: String,
    /// The question answered at the end of `run`.
    #[serde(default = "default_question")]
    pub question: String,
}

fn default_split() -> String {
    "test".into()
}

fn default_question() -> String {
    "How do I duplicate a file descriptor?".into()
}

impl Default for EvalSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl LoopConfig {
    /// Reads and checks a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses and checks TOML text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text).map_err(|e| -> anyhow::Error {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            let snippet = text
                .lines()
                .nth(line.saturating_sub(1))
                .unwrap_or("")
                .trim();
            crate::exit::UsageError(format!("line {line} ({snippet}): {}", e.message().trim()))
                .into()
        })?;
        config.validate()?;
        Ok(config)
    }

    /// `path` when given, else `./ragloop.toml` when it exists, else the defaults (the local
    /// loop).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(p) => Self::from_file(p),
            None if Path::new("ragloop.toml").is_file() => {
                Self::from_file(Path::new("ragloop.toml"))
            }
            None => Ok(Self::default()),
        }
    }

    /// Combinations that cannot work, found before anything runs (a
    /// [`UsageError`](crate::exit::UsageError)).
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|e| crate::exit::UsageError(format!("{e:#}")).into())
    }

    fn check(&self) -> Result<()> {
        let kind = self.embedding.kind();
        let training = self.embedding.training();
        match (&kind, training) {
            (ModelKind::Hashed, Training::Adapter | Training::Full) => bail!(
                "embedding.train = {training:?}: the hashed model can only be fitted (train = \"idf\"); \
                 name a sentence-transformers model to fine-tune"
            ),
            (ModelKind::Sentence(_) | ModelKind::Bailian(_), Training::Idf) => {
                bail!("embedding.train = \"idf\" is for the hashed model only")
            }
            (ModelKind::Bailian(_), Training::Adapter | Training::Full) => bail!(
                "embedding.train: a Bailian embedding model cannot be trained here; use train = \"none\""
            ),
            _ => {}
        }
        if self.embedding.workers > 0 && !matches!(kind, ModelKind::Sentence(_)) {
            bail!(
                "embedding.workers: batch-embedding jobs run sentence-transformers models; \
                 {} embeds in this process (workers = 0)",
                self.embedding.model
            );
        }
        if self.embedding.dims == 0 {
            bail!("embedding.dims must be positive");
        }
        if self.jobs.backend == JobsBackend::Pai && self.store.backend == StoreBackend::Local {
            bail!(
                "jobs.backend = \"pai\" needs store.backend = \"oss\": PAI jobs read their input from OSS"
            );
        }
        if self.jobs.backend == JobsBackend::Pai
            && let ModelKind::Sentence(m) = &kind
            && m.parse::<StoreUri>().is_err()
            && (training != Training::None || self.embedding.workers > 0)
        {
            bail!(
                "embedding.model = {m:?} is a local directory, which a PAI job cannot read: \
                 upload it (`ragloop cp -r {m} {}models/<name>/`) and name that prefix",
                self.root.as_prefix()
            );
        }
        if self.llm_fine_tune.backend != LlmFineTuneBackend::None
            && self.llm_fine_tune.base_model.is_none()
        {
            bail!("llm_fine_tune.base_model is required (the model to fine-tune)");
        }
        if matches!(
            self.llm_fine_tune.backend,
            LlmFineTuneBackend::Pai | LlmFineTuneBackend::Local
        ) && self.llm_fine_tune.command.is_none()
        {
            bail!(
                "llm_fine_tune.command is required with backend = {:?} (the training script, e.g. [\"python3\", \"train_llm.py\"])",
                self.llm_fine_tune.backend
            );
        }
        if self.deploy.backend != DeployBackend::None
            && self.llm_fine_tune.backend == LlmFineTuneBackend::None
            && self.deploy.model_path.is_none()
        {
            bail!("deploy needs a model: enable [llm_fine_tune] or set deploy.model_path");
        }
        if self.llm.backend == LlmBackend::Openai {
            if self.llm.base_url.is_none() {
                bail!("llm.base_url is required for backend = \"openai\"");
            }
            if self.llm.model.is_none() {
                bail!("llm.model is required for backend = \"openai\"");
            }
        }
        if self.index.top_k == 0 {
            bail!("index.top_k must be positive");
        }
        Ok(())
    }

    /// The trained embedding model's output prefix.
    pub fn model_output(&self) -> StoreUri {
        rag_core::pipeline::Layout::new(self.root.clone()).model(&self.embedding.name)
    }

    /// Whether any stage talks to a cloud service (for `--dry-run`).
    pub fn uses_cloud(&self) -> bool {
        self.store.backend != StoreBackend::Local
            || self.jobs.backend != JobsBackend::Local
            || matches!(self.embedding.kind(), ModelKind::Bailian(_))
            || matches!(
                self.index.backend,
                IndexBackend::Elasticsearch | IndexBackend::Opensearch
            )
            || self.llm.backend != LlmBackend::Extractive
            || self.llm_fine_tune.backend != LlmFineTuneBackend::None
            || self.deploy.backend == DeployBackend::Bailian
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_empty_file_is_the_local_loop() {
        let c = LoopConfig::from_toml("").unwrap();
        assert_eq!(c.root.to_string(), "oss://ragloop-demo/");
        assert_eq!(c.store.backend, StoreBackend::Local);
        assert_eq!(c.jobs.backend, JobsBackend::Local);
        assert_eq!(c.embedding.kind(), ModelKind::Hashed);
        assert_eq!(c.embedding.training(), Training::Idf);
        assert_eq!(c.index.backend, IndexBackend::Local);
        assert_eq!(c.llm.backend, LlmBackend::Extractive);
        assert!(!c.uses_cloud());
        assert_eq!(
            c.model_output().to_string(),
            "oss://ragloop-demo/models/emb-v1/"
        );
    }

    #[test]
    fn the_cloud_example_of_the_module_doc_parses() {
        let text = r#"
root = "oss://my-bucket/rag/"
[store]
backend = "oss"
region = "cn-hangzhou"
[jobs]
backend = "pai"
workspace_id = "12345"
image = "img"
[embedding]
model = "oss://my-bucket/models/all-MiniLM-L6-v2/"
train = "adapter"
workers = 4
[index]
backend = "elasticsearch"
url = "https://es.example:9200"
[llm]
backend = "bailian"
[llm_fine_tune]
backend = "bailian"
base_model = "qwen2.5-7b-instruct"
hyper_parameters = { n_epochs = 3, learning_rate = "1e-5" }
[deploy]
backend = "bailian"
"#;
        let c = LoopConfig::from_toml(text).unwrap();
        assert_eq!(
            c.embedding.kind(),
            ModelKind::Sentence("oss://my-bucket/models/all-MiniLM-L6-v2/".into())
        );
        assert_eq!(c.embedding.workers, 4);
        assert_eq!(c.index.backend, IndexBackend::Elasticsearch);
        assert_eq!(c.llm_fine_tune.hyper_parameters.len(), 2);
        assert!(c.uses_cloud());
        assert_eq!(
            c.model_output().to_string(),
            "oss://my-bucket/rag/models/emb-v1/"
        );
    }

    proptest::proptest! {
        /// Whatever the file holds, reading it returns a configuration or an error — never a
        /// panic — and errors are a usage error of at most a few lines.
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "(\\[[a-z_]{1,12}\\]\n|[a-z_]{1,10} = (\"[^\"\\\\\n]{0,20}\"|[0-9]{1,4}|true|\\[\\])\n|[^\n]{0,30}\n){0,12}") {
            match LoopConfig::from_toml(&text) {
                Ok(c) => proptest::prop_assert!(c.validate().is_ok()),
                Err(e) => {
                    proptest::prop_assert_eq!(crate::exit::code(&e), crate::exit::USAGE);
                    proptest::prop_assert!(format!("{e:#}").lines().count() <= 3, "{:#}", e);
                }
            }
        }
    }

    #[test]
    fn mistakes_are_one_clear_line() {
        let cases = [
            ("[store]\nbackend = \"s3\"", "unknown variant `s3`"),
            (
                "[index]\nbakend = \"local\"",
                "line 2 (bakend = \"local\"): unknown field `bakend`",
            ),
            (
                "root = \"http://x\"",
                "line 1 (root = \"http://x\"): invalid input",
            ),
            (
                "[embedding]\ntrain = \"adapter\"",
                "the hashed model can only be fitted",
            ),
            (
                "[embedding]\nmodel = \"models/m\"\ntrain = \"idf\"",
                "hashed model only",
            ),
            (
                "[embedding]\nworkers = 2",
                "batch-embedding jobs run sentence",
            ),
            ("[jobs]\nbackend = \"pai\"", "needs store.backend = \"oss\""),
            (
                "[store]\nbackend = \"oss\"\n[jobs]\nbackend = \"pai\"\n[embedding]\nmodel = \"models/m\"\ntrain = \"full\"",
                "ragloop cp -r models/m",
            ),
            (
                "[llm_fine_tune]\nbackend = \"bailian\"",
                "base_model is required",
            ),
            (
                "[llm_fine_tune]\nbackend = \"pai\"\nbase_model = \"q\"",
                "command is required",
            ),
            ("[deploy]\nbackend = \"bailian\"", "deploy needs a model"),
            ("[llm]\nbackend = \"openai\"", "base_url is required"),
            ("[index]\ntop_k = 0", "top_k must be positive"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", LoopConfig::from_toml(text).unwrap_err());
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
            assert!(!err.contains('\n') || err.lines().count() <= 3, "{err}");
        }
    }
}
