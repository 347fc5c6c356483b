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
//! plan = "compute"                  # Bailian: compute | lora | mu:MU1 | ptu:<in>,<out>
//!
//! [eval]                            # rows: bm25 | dense | hybrid | dense:base | hybrid:base
//! queries = "data/manpages/queries.jsonl.gz"
//! retrievers = ["bm25", "dense:base", "dense", "hybrid:base", "hybrid"]
//! question = "How do I duplicate a file descriptor?"
//! ```
//!
//! `ragloop run` without `--config` runs [`LoopConfig::default()`]: the bundled man pages, the
//! hashed model fitted in stage 2, the local index and the extractive answerer. Its flags
//! ([`Overrides`]) change single fields of whichever configuration runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rag_core::StoreUri;
use serde::{Deserialize, Serialize};

mod sections;
#[cfg(test)]
mod tests;

pub use sections::*;

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
    /// Reranking the retrieved candidates (stage 7 and the report).
    #[serde(default)]
    pub rerank: RerankSection,
    /// Evaluation and the question answered at the end.
    #[serde(default)]
    pub eval: EvalSection,
    /// `ragloop serve`: the HTTP API over stage 7.
    #[serde(default)]
    pub serve: ServeSection,
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

/// The query set shipped with the bundled corpus.
const BUNDLED_QUERIES: &str = "data/manpages/queries.jsonl.gz";

/// Command-line changes to single fields of a configuration (`ragloop run --data …`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `data`.
    pub data: Option<PathBuf>,
    /// `eval.queries` (`none` turns evaluation off).
    pub queries: Option<PathBuf>,
    /// `eval.split`.
    pub split: Option<String>,
    /// `work_dir`.
    pub work_dir: Option<PathBuf>,
    /// `root`.
    pub root: Option<StoreUri>,
    /// `eval.question`.
    pub question: Option<String>,
    /// `embedding.dims`.
    pub dims: Option<usize>,
    /// `embedding.model`.
    pub model: Option<String>,
    /// `embedding.train`.
    pub train: Option<Training>,
    /// `embedding.quantize`.
    pub quantize: Option<embed_runtime::Quantization>,
    /// `embedding.device`.
    pub device: Option<embed_runtime::DeviceChoice>,
}

impl Default for LoopConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

impl LoopConfig {
    /// Reads and checks a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| -> anyhow::Error {
            // A file that is not there is a mistake in the invocation (exit status 2).
            if e.kind() == std::io::ErrorKind::NotFound {
                crate::exit::UsageError(format!(
                    "the config file {} does not exist",
                    path.display()
                ))
                .into()
            } else {
                anyhow::Error::new(e).context(format!("reading the config file {}", path.display()))
            }
        })?;
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
        if self.work_dir.as_os_str().is_empty() {
            bail!("work_dir is empty: name a directory (it holds the local store, index and jobs)");
        }
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
        if let Some(name) = &self.index.cluster_analyzer
            && !matches!(
                self.index.backend,
                IndexBackend::Elasticsearch | IndexBackend::Opensearch
            )
        {
            bail!(
                "index.cluster_analyzer = {name:?} is for Elasticsearch / OpenSearch indexes; \
                 the {:?} index analyzes text with index.analyzer",
                self.index.backend
            );
        }
        let sv = &self.serve;
        if sv.addr.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "serve.addr = {:?} is not an address (`127.0.0.1:8080`)",
                sv.addr
            );
        }
        for (name, value) in [
            ("max_concurrent", sv.max_concurrent as u64),
            ("timeout_secs", sv.timeout_secs),
            ("max_body_bytes", sv.max_body_bytes as u64),
            ("max_k", sv.max_k as u64),
        ] {
            if value == 0 {
                bail!("serve.{name} is 0: it must be at least 1");
            }
        }
        let r = &self.rerank;
        if r.candidates == 0 {
            bail!("rerank.candidates is 0: name how many fused candidates to rerank (50)");
        }
        if let Some(Err(why)) = r.weight.map(check_rerank_weight) {
            bail!("rerank.weight: {why}");
        }
        if r.backend == RerankBackend::Local
            && r.model.is_none()
            && !matches!(kind, ModelKind::Sentence(_))
        {
            bail!(
                "rerank.backend = \"local\" without rerank.model trains a cross-encoder from the \
                 embedding model's encoder, and {} is not a sentence-transformers model: name a \
                 cross-encoder directory in rerank.model (`ragloop train --reranker` writes one)",
                self.embedding.model
            );
        }
        if r.quantize != embed_runtime::Quantization::None && r.backend != RerankBackend::Local {
            bail!("rerank.quantize is for the local cross-encoder (rerank.backend = \"local\")");
        }
        if self.embedding.workers > 0 && !matches!(kind, ModelKind::Sentence(_)) {
            bail!(
                "embedding.workers: batch-embedding jobs run sentence-transformers models; \
                 {} embeds in this process (workers = 0)",
                self.embedding.model
            );
        }
        if self.embedding.quantize != embed_runtime::Quantization::None
            && !matches!(kind, ModelKind::Sentence(_))
        {
            bail!(
                "embedding.quantize = \"{}\" is for sentence-transformers models; {} has no encoder to quantise",
                self.embedding.quantize,
                self.embedding.model
            );
        }
        if self.embedding.device != embed_runtime::DeviceChoice::Auto
            && !matches!(kind, ModelKind::Sentence(_))
        {
            bail!(
                "embedding.device = \"{}\" is for sentence-transformers models; {} does not run on this machine's devices",
                self.embedding.device,
                self.embedding.model
            );
        }
        if self.embedding.quantize != embed_runtime::Quantization::None
            && matches!(self.embedding.device, embed_runtime::DeviceChoice::Cuda(_))
        {
            bail!(
                "embedding.quantize = \"{}\" is a CPU path; on {} the f32 model runs (quantize = \"none\")",
                self.embedding.quantize,
                self.embedding.device
            );
        }
        if self.embedding.dims == 0 || self.embedding.dims > rag_core::MAX_DIMS {
            bail!("embedding.dims must lie in 1..={}", rag_core::MAX_DIMS);
        }
        if self.jobs.backend == JobsBackend::Pai && self.store.backend == StoreBackend::Local {
            bail!(
                "jobs.backend = \"pai\" needs store.backend = \"oss\": PAI jobs read their input from OSS"
            );
        }
        if self.jobs.backend == JobsBackend::Pai
            && let ModelKind::Sentence(m) = &kind
            && m.parse::<StoreUri>().is_err()
            && crate::embed::pretrained(m).is_none()
            && (training != Training::None || self.embedding.workers > 0)
        {
            bail!(
                "embedding.model = {m:?} is a local directory, which a PAI job cannot read: \
                 upload it (`ragloop cp -r {m} {}models/<name>/`) and name that prefix",
                self.root.as_prefix()
            );
        }
        if self.embedding.synthetic.is_some_and(|n| n > 0) {
            match self.llm.backend {
                LlmBackend::Extractive => bail!(
                    "embedding.synthetic needs an LLM to write the questions: set [llm] backend = \"bailian\" or \"openai\""
                ),
                LlmBackend::Openai if self.llm.model.is_none() => bail!(
                    "embedding.synthetic with [llm] backend = \"openai\" needs llm.model (stage 2 runs before any deployment)"
                ),
                _ => {}
            }
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
        if let Some(plan) = &self.deploy.plan {
            plan.parse::<bailian_client::DeployPlan>()
                .context("deploy.plan")?;
        }
        if let Some(suffix) = &self.deploy.suffix
            && suffix.chars().count() > bailian_client::MAX_SUFFIX_CHARS
        {
            bail!(
                "deploy.suffix {suffix:?}: Model Studio takes at most {} characters",
                bailian_client::MAX_SUFFIX_CHARS
            );
        }
        if self.llm.backend == LlmBackend::Openai {
            if self.llm.base_url.is_none() {
                bail!("llm.base_url is required for backend = \"openai\"");
            }
            if self.llm.model.is_none() {
                bail!("llm.model is required for backend = \"openai\"");
            }
        }
        if let Err(e) = self.index.fusion() {
            bail!("{e}");
        }
        if self.index.top_k == 0 || self.index.top_k > 1_000 {
            bail!("index.top_k must lie in 1..=1000 (chunks put into one prompt)");
        }
        if self.eval.retrievers.as_ref().is_some_and(Vec::is_empty) {
            bail!("eval.retrievers is empty: leave it out for the default rows");
        }
        Ok(())
    }

    /// The configuration with `o`'s fields changed, checked again.
    pub fn with_overrides(mut self, o: Overrides) -> Result<Self> {
        let set = |dst: &mut PathBuf, v: Option<PathBuf>| {
            if let Some(v) = v {
                *dst = v;
            }
        };
        set(&mut self.data, o.data);
        set(&mut self.work_dir, o.work_dir);
        if let Some(q) = o.queries {
            self.eval.queries = Some(q);
        }
        if let Some(split) = o.split {
            self.eval.split = split;
        }
        if let Some(root) = o.root {
            self.root = root;
        }
        if let Some(q) = o.question {
            self.eval.question = q;
        }
        if let Some(d) = o.dims {
            self.embedding.dims = d;
        }
        if let Some(m) = o.model {
            self.embedding.model = m;
        }
        if let Some(q) = o.quantize {
            self.embedding.quantize = q;
        }
        if let Some(d) = o.device {
            self.embedding.device = d;
        }
        if o.train.is_some() {
            self.embedding.train = o.train;
        }
        self.validate()?;
        Ok(self)
    }

    /// The query set evaluated, if any: `eval.queries` (`"none"`: none), else the bundled
    /// one when `data` is the bundled corpus.
    pub fn queries(&self) -> Option<&Path> {
        match &self.eval.queries {
            Some(q) if q.as_os_str() == "none" => None,
            Some(q) => Some(q),
            None if self.data == default_data() => Some(Path::new(BUNDLED_QUERIES)),
            None => None,
        }
    }

    /// The rows of the evaluation report, the default filled in.
    pub fn retrievers(&self) -> Vec<Retriever> {
        if let Some(r) = &self.eval.retrievers {
            return r.clone();
        }
        if self.embedding.training() == Training::None {
            vec![
                Retriever::Bm25,
                Retriever::Dense(Which::Served),
                Retriever::Hybrid(Which::Served),
            ]
        } else {
            vec![
                Retriever::Bm25,
                Retriever::Dense(Which::Base),
                Retriever::Dense(Which::Served),
                Retriever::Hybrid(Which::Base),
                Retriever::Hybrid(Which::Served),
            ]
        }
    }

    /// The trained embedding model's output prefix.
    pub fn model_output(&self) -> StoreUri {
        rag_core::pipeline::Layout::new(self.root.clone()).model(&self.embedding.name)
    }

    /// Where stage 2 writes the cross-encoder it trains (`models/<embedding name>-reranker/`),
    /// or `None` when it trains none (`[rerank] backend = "local"` without a `model`).
    pub fn reranker_output(&self) -> Option<StoreUri> {
        (self.rerank.backend == RerankBackend::Local && self.rerank.model.is_none()).then(|| {
            rag_core::pipeline::Layout::new(self.root.clone())
                .model(&format!("{}-reranker", self.embedding.name))
        })
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

fn check_rerank_weight(w: f32) -> std::result::Result<f32, String> {
    if (0.0..=1.0).contains(&w) {
        Ok(w)
    } else {
        Err(format!(
            "{w} is not in [0, 1] (1: the reranker's order; 0.5: both orders fused equally)"
        ))
    }
}

/// Parses a `--rerank-weight` value (a number in [0, 1]).
pub fn parse_rerank_weight(s: &str) -> std::result::Result<f32, String> {
    let w: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    check_rerank_weight(w)
}
