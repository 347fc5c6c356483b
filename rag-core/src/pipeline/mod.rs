//! The generic train-to-inference pipeline: the seed's seven stages over the traits only.
//!
//! | stage | method | file | needs | reads | writes |
//! |---|---|---|---|---|---|
//! | 1 ingest | [`Pipeline::ingest`] | `ingest.rs` | store | a local directory | `raw-docs/` |
//! | 2 train embeddings | [`Pipeline::run_job`] ([`Stage::TrainEmbeddings`]) | `jobs.rs` | + trainer | `raw-docs/` | `models/<name>/` |
//! | 3 fine-tune LLM | [`Pipeline::run_job`] ([`Stage::FineTuneLlm`]) | `jobs.rs` | + trainer | `qa-pairs/` | `models/<name>/` |
//! | 4 deploy | [`Pipeline::deploy`] | `deploy.rs` | deployer | `models/<name>/` | a served model name |
//! | 5 embed | [`Pipeline::embed`] (or N jobs: [`Pipeline::run_jobs`]) | `embed.rs` | store | `raw-docs/` | `vector-indexes/<model>/part-NNNNN.parquet` |
//! | 6 index | [`Pipeline::index`] | `index.rs` | store + index | `vector-indexes/<model>/` | the vector index |
//! | 7 answer | [`Pipeline::answer`] | `answer.rs` | index + chat | the index | an answer with citations |
//!
//! A pipeline holds the store and whichever other backends its caller gives it
//! ([`Pipeline::with_trainer`], [`with_index`](Pipeline::with_index), [`with_chat`](Pipeline::with_chat),
//! [`with_deployer`](Pipeline::with_deployer)); a stage whose backend is missing fails with
//! [`Error::InvalidInput`] naming it, so a caller that runs only some stages passes only what
//! they use.
//!
//! Every stage is idempotent and resumable: ingest skips unchanged files, jobs are skipped when
//! their output holds a [`SUCCESS_MARKER`](crate::training::SUCCESS_MARKER) (and a job an
//! interrupted run submitted is waited for, not submitted again:
//! [`JOB_RECORD`](crate::training::JOB_RECORD)), embedding skips shards whose metadata matches
//! the model and chunks, and indexing upserts by content-hash id.

mod answer;
mod deploy;
mod embed;
mod index;
mod ingest;
mod jobs;
mod layout;
mod manifest;

use std::sync::Arc;

use crate::chat::ChatModel;
use crate::chunk::Chunker;
use crate::deploy::ModelDeployer;
use crate::error::{Error, Result};
use crate::index::VectorIndex;
use crate::parse::Parsers;
use crate::rerank::Reranker;
use crate::store::ObjectStore;
use crate::training::TrainingBackend;

pub use crate::stage::{LogProgress, Progress, Stage};
pub use answer::{Answer, AnswerStream, Citation, RetrievalMode, citation_of, cite, rerank_text};
pub use embed::EmbedReport;
pub use index::IndexReport;
pub use ingest::IngestReport;
pub use jobs::JobOutcome;
pub use layout::Layout;
pub use manifest::{IndexManifest, ManifestBuilder};

/// Tunables of the pipeline; batching and concurrency are parameters, not hidden constants.
#[derive(Debug)]
pub struct PipelineOptions {
    /// Which parser reads which raw file (default: JSONL and text, [`Parsers::builtin`]).
    pub parsers: Parsers,
    /// How documents are chunked.
    pub chunker: Chunker,
    /// Texts per embedding call.
    pub embed_batch: usize,
    /// Chunks per Parquet shard.
    pub shard_rows: usize,
    /// Records per upsert call.
    pub index_batch: usize,
    /// Retries (and their backoff) for records an upsert reports as retryable.
    pub upsert_retry: crate::retry::RetryPolicy,
    /// Name of the vector index.
    pub index_name: String,
    /// Chunks retrieved as context for an answer.
    pub top_k: usize,
    /// How hybrid retrieval fuses its vector and text lists (RRF by default).
    pub fusion: crate::index::Fusion,
    /// How the index's full-text field (BM25) cuts text into terms: recorded in the schema
    /// stage 6 creates ([`crate::Analyzer::English`] by default: English words stemmed).
    pub analyzer: crate::Analyzer,
    /// Fused candidates a reranker (if set, [`Pipeline::with_reranker`]) reorders before the
    /// top k are taken (default 50).
    pub rerank_candidates: usize,
    /// How much the reranker's order counts against the search's (default 1: the reranker's
    /// order alone, its scores the hits'). Below 1 the candidates are ranked by weighted
    /// reciprocal-rank fusion of both orders (`w/(60+r_rerank) + (1−w)/(60+r_search)`), which
    /// keeps the search's order as a prior a weak reranker cannot undo; 0 keeps the search's
    /// order.
    pub rerank_weight: f32,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            parsers: Parsers::builtin(),
            chunker: Chunker::default(),
            embed_batch: 64,
            shard_rows: 4096,
            index_batch: 512,
            upsert_retry: crate::retry::RetryPolicy::default(),
            index_name: "rag-index".into(),
            top_k: 5,
            fusion: crate::index::Fusion::Rrf,
            analyzer: crate::Analyzer::English,
            rerank_candidates: 50,
            rerank_weight: 1.0,
        }
    }
}

/// The pipeline: a store, the other backends its stages use, a layout and options. Each stage
/// is a method; a driver (the `ragloop` CLI, a user's own program) calls them in order and
/// decides which to skip. Any mix of local and cloud backends works.
///
/// ```no_run
/// use std::sync::Arc;
/// use rag_core::local::*;
/// use rag_core::pipeline::{Layout, Pipeline};
///
/// async fn my_pipeline() -> rag_core::Result<()> {
///     let store = Arc::new(LocalFileStore::new(".ragloop/store"));
///     let pipeline = Pipeline::new(store, Layout::new("oss://my-bucket/".parse()?))
///         .with_index(Arc::new(LocalVectorIndex::open(".ragloop/index").await?))
///         .with_chat(Arc::new(ExtractiveChat::default()));
///     pipeline.ingest("./data".as_ref()).await?;
///     let model = HashedEmbedding::new(HashedEmbeddingConfig::default())?;
///     pipeline.embed(&model).await?;
///     pipeline.index(&model).await?;
///     let answer = pipeline.answer(&model, "How do I duplicate a file descriptor?").await?;
///     println!("{}\n{:?}", answer.text, answer.citations);
///     Ok(())
/// }
/// ```
pub struct Pipeline {
    store: Arc<dyn ObjectStore>,
    trainer: Option<Arc<dyn TrainingBackend>>,
    index: Option<Arc<dyn VectorIndex>>,
    chat: Option<Arc<dyn ChatModel>>,
    deployer: Option<Arc<dyn ModelDeployer>>,
    reranker: Option<Arc<dyn Reranker>>,
    layout: Layout,
    options: PipelineOptions,
    progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("layout", &self.layout)
            .field("options", &self.options)
            .field("trainer", &self.trainer.is_some())
            .field("index", &self.index.is_some())
            .field("chat", &self.chat.is_some())
            .field("deployer", &self.deployer.is_some())
            .field("reranker", &self.reranker.as_ref().map(|r| r.model_id()))
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline storing under `layout` in `store`, with default options and no other
    /// backend yet.
    pub fn new(store: Arc<dyn ObjectStore>, layout: Layout) -> Self {
        Self {
            store,
            trainer: None,
            index: None,
            chat: None,
            deployer: None,
            reranker: None,
            layout,
            options: PipelineOptions::default(),
            progress: Arc::new(LogProgress),
        }
    }

    /// Runs jobs (stages 2, 3 and stage 5 as jobs) on `trainer`.
    pub fn with_trainer(mut self, trainer: Arc<dyn TrainingBackend>) -> Self {
        self.trainer = Some(trainer);
        self
    }

    /// Indexes and searches (stages 6 and 7) with `index`.
    pub fn with_index(mut self, index: Arc<dyn VectorIndex>) -> Self {
        self.index = Some(index);
        self
    }

    /// Answers (stage 7) with `chat`.
    pub fn with_chat(mut self, chat: Arc<dyn ChatModel>) -> Self {
        self.chat = Some(chat);
        self
    }

    /// Reranks retrieved candidates with `reranker`: [`Pipeline::retrieve`] (and so
    /// [`Pipeline::answer`] and [`Pipeline::evaluate`]) takes the top
    /// [`PipelineOptions::rerank_candidates`] chunks of the search, reorders them by the
    /// reranker's scores and keeps the top k.
    pub fn with_reranker(mut self, reranker: Arc<dyn Reranker>) -> Self {
        self.reranker = Some(reranker);
        self
    }

    /// Sets [`PipelineOptions::rerank_weight`]: how much the reranker's order counts against
    /// the search's.
    pub fn with_rerank_weight(mut self, weight: f32) -> Self {
        self.options.rerank_weight = weight;
        self
    }

    /// The reranker, if one is set.
    pub fn reranker(&self) -> Option<&Arc<dyn Reranker>> {
        self.reranker.as_ref()
    }

    /// Deploys (stage 4) with `deployer`.
    pub fn with_deployer(mut self, deployer: Arc<dyn ModelDeployer>) -> Self {
        self.deployer = Some(deployer);
        self
    }

    /// Uses `options`.
    pub fn with_options(mut self, options: PipelineOptions) -> Self {
        self.options = options;
        self
    }

    /// Reports progress to `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// The storage layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The options.
    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    fn trainer(&self) -> Result<&Arc<dyn TrainingBackend>> {
        self.trainer
            .as_ref()
            .ok_or_else(|| missing("a TrainingBackend", "with_trainer"))
    }

    fn index_backend(&self) -> Result<&Arc<dyn VectorIndex>> {
        self.index
            .as_ref()
            .ok_or_else(|| missing("a VectorIndex", "with_index"))
    }

    fn chat(&self) -> Result<&Arc<dyn ChatModel>> {
        self.chat
            .as_ref()
            .ok_or_else(|| missing("a ChatModel", "with_chat"))
    }

    fn deployer(&self) -> Result<&Arc<dyn ModelDeployer>> {
        self.deployer
            .as_ref()
            .ok_or_else(|| missing("a ModelDeployer", "with_deployer"))
    }
}

pub(crate) fn missing(what: &str, method: &str) -> Error {
    Error::invalid(format!(
        "this stage needs {what}, and the pipeline has none (Pipeline::{method})"
    ))
}
