//! The generic train-to-inference pipeline: the seed's seven stages over the traits only.
//!
//! | stage | method | reads | writes |
//! |---|---|---|---|
//! | 1 ingest | [`Pipeline::ingest`] | a local directory | `raw-docs/` |
//! | 2 train embeddings | [`Pipeline::run_job`] ([`Stage::TrainEmbeddings`]) | `raw-docs/` | `models/<name>/` |
//! | 3 fine-tune LLM | [`Pipeline::run_job`] ([`Stage::FineTuneLlm`]) | `qa-pairs/` | `models/<name>/` |
//! | 4 deploy | [`Pipeline::deploy`] | `models/<name>/` | a served model name |
//! | 5 embed | [`Pipeline::embed`] | `raw-docs/` | `vector-indexes/<model>/part-NNNNN.parquet` |
//! | 6 index | [`Pipeline::index`] | `vector-indexes/<model>/` | the vector index |
//! | 7 answer | [`Pipeline::answer`] | the index | an answer with citations |
//!
//! Every stage is idempotent and resumable: ingest skips unchanged files, jobs are skipped when
//! their output holds a [`SUCCESS_MARKER`] (and a job an interrupted run submitted is waited
//! for, not submitted again: [`JOB_RECORD`]), embedding skips shards whose metadata matches the
//! model and chunks, and indexing upserts by content-hash id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::chat::{ChatModel, Usage};
use crate::chunk::{Chunk, Chunker};
use crate::deploy::{DeploySpec, Deployment, ModelDeployer};
use crate::embed_job::{ShardOptions, embed_to_shards, shard_number};
use crate::embedding::EmbeddingModel;
use crate::error::{Error, Result};
use crate::eval::{EvalQuery, MetricsAccumulator, RetrievalMetrics};
use crate::index::{
    FieldKind, IndexRecord, IndexSchema, ItemError, Metadata, Metric, Query, SearchHit,
    SearchRequest, VectorIndex,
};
use crate::loader::{LoadReport, Skipped};
use crate::prompt::{ContextChunk, cited_ids, rag_request};
use crate::store::{ObjectStore, file_stream};
use crate::training::{JobId, JobSpec, JobStatus, TrainingBackend, WaitOptions};
use crate::uri::StoreUri;
use crate::vectors::{EmbeddedChunk, read_shard_batches};

/// The object a job writes last into its output prefix to say the output is complete
/// (the Hadoop/Spark convention). A job whose output holds it is not run again.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// The object [`Pipeline::run_job`] writes into a job's output prefix right after submitting
/// it: the job's id, as JSON. A pipeline that dies while the job runs (cloud jobs outlive it)
/// finds the record when it is run again and waits for that job instead of submitting a
/// second one to the same output.
pub const JOB_RECORD: &str = "_JOB";

/// The content of [`JOB_RECORD`].
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct JobRecord {
    job_id: String,
    name: String,
}

/// The seed's seven stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Stage {
    /// 1: local documents to `raw-docs/`.
    Ingest,
    /// 2: embedding model training job.
    TrainEmbeddings,
    /// 3: LLM fine-tuning job.
    FineTuneLlm,
    /// 4: serving the fine-tuned LLM.
    Deploy,
    /// 5: batch embedding to Parquet.
    Embed,
    /// 6: loading vectors into the index.
    Index,
    /// 7: retrieval and grounded answering.
    Answer,
}

impl Stage {
    /// The seed's step number.
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::TrainEmbeddings => "train-embeddings",
            Self::FineTuneLlm => "fine-tune-llm",
            Self::Deploy => "deploy",
            Self::Embed => "embed",
            Self::Index => "index",
            Self::Answer => "answer",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}. {}", self.number(), self.name())
    }
}

/// Receives progress of long stages (a CLI draws bars; a service might export metrics).
pub trait Progress: Send + Sync {
    /// A stage starts with `total` units of work, when known.
    fn begin(&self, stage: Stage, total: Option<u64>);
    /// `n` more units are done.
    fn advance(&self, stage: Stage, n: u64);
    /// The stage ended; `summary` says what it did.
    fn end(&self, stage: Stage, summary: &str);
}

/// A [`Progress`] that logs stage ends through `tracing` and nothing else.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogProgress;

impl Progress for LogProgress {
    fn begin(&self, stage: Stage, total: Option<u64>) {
        tracing::info!(%stage, ?total, "stage started");
    }
    fn advance(&self, _: Stage, _: u64) {}
    fn end(&self, stage: Stage, summary: &str) {
        tracing::info!(%stage, summary, "stage ended");
    }
}

/// Where each stage's data lives under one bucket prefix (the seed's layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: StoreUri,
}

impl Layout {
    /// A layout under `root` (`oss://bucket/` or `oss://bucket/project/`).
    pub fn new(root: StoreUri) -> Self {
        Self {
            root: root.as_prefix(),
        }
    }

    /// The root prefix.
    pub fn root(&self) -> &StoreUri {
        &self.root
    }

    fn dir(&self, rel: &str) -> StoreUri {
        // `rel` is built from validated parts, so joining cannot fail; fall back to the root.
        self.root
            .join(rel)
            .unwrap_or_else(|_| self.root.clone())
            .as_prefix()
    }

    /// `raw-docs/`: the ingested corpus.
    pub fn raw_docs(&self) -> StoreUri {
        self.dir("raw-docs/")
    }

    /// `qa-pairs/`: LLM fine-tuning data.
    pub fn qa_pairs(&self) -> StoreUri {
        self.dir("qa-pairs/")
    }

    /// `models/<name>/`: a trained model.
    pub fn model(&self, name: &str) -> StoreUri {
        self.dir(&format!("models/{}/", key_safe(name)))
    }

    /// `vector-indexes/<model>/`: the Parquet shards of one embedding model.
    pub fn vector_shards(&self, model_id: &str) -> StoreUri {
        self.dir(&format!("vector-indexes/{}/", key_safe(model_id)))
    }
}

/// `name` with every character outside `[A-Za-z0-9._-]` replaced by `_`.
fn key_safe(name: &str) -> String {
    let s = crate::uri::safe_segment(name, '_');
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".into()
    } else {
        s
    }
}

/// Tunables of the pipeline; batching and concurrency are parameters, not hidden constants.
#[derive(Debug)]
pub struct PipelineOptions {
    /// How documents are chunked.
    pub chunker: Chunker,
    /// Texts per embedding call.
    pub embed_batch: usize,
    /// Chunks per Parquet shard.
    pub shard_rows: usize,
    /// Records per upsert call.
    pub index_batch: usize,
    /// Extra attempts for records an upsert reports as retryable.
    pub upsert_retries: u32,
    /// Name of the vector index.
    pub index_name: String,
    /// Chunks retrieved as context for an answer.
    pub top_k: usize,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            chunker: Chunker::default(),
            embed_batch: 64,
            shard_rows: 4096,
            index_batch: 512,
            upsert_retries: 3,
            index_name: "rag-index".into(),
            top_k: 5,
        }
    }
}

/// The backends a pipeline runs on. Any mix of local and cloud implementations works.
#[derive(Clone)]
pub struct Backends {
    /// Where documents, models and shards live.
    pub store: Arc<dyn ObjectStore>,
    /// Where training jobs run.
    pub trainer: Arc<dyn TrainingBackend>,
    /// Where vectors are searched.
    pub index: Arc<dyn VectorIndex>,
    /// Who answers.
    pub chat: Arc<dyn ChatModel>,
    /// Who serves fine-tuned models, if anyone.
    pub deployer: Option<Arc<dyn ModelDeployer>>,
}

/// What [`Pipeline::ingest`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    /// Files uploaded.
    pub uploaded: usize,
    /// Files already in the store with the same content.
    pub unchanged: usize,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Files that failed, with the error.
    pub failed: Vec<(String, String)>,
}

/// What [`Pipeline::run_job`] did.
#[derive(Debug, Clone, Serialize)]
pub struct JobOutcome {
    /// The job's id, when one was submitted.
    pub job_id: Option<JobId>,
    /// Whether the output was complete already and no job ran.
    pub skipped: bool,
    /// Whether the job was one an earlier, interrupted run had submitted (found through
    /// [`JOB_RECORD`]) rather than a new one.
    pub reattached: bool,
    /// The job's output prefix.
    pub output: String,
}

/// What [`Pipeline::embed`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmbedReport {
    /// The model used.
    pub model_id: String,
    /// Documents read.
    pub documents: usize,
    /// Chunks embedded or found embedded.
    pub chunks: usize,
    /// Shards written now.
    pub shards_written: usize,
    /// Shards already current.
    pub shards_current: usize,
    /// Inputs that were not documents, and why.
    #[serde(skip)]
    pub skipped_inputs: Vec<Skipped>,
    /// Where the shards are.
    pub shards_prefix: String,
}

/// What [`Pipeline::index`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    /// Shards read.
    pub shards: usize,
    /// Records written.
    pub written: usize,
    /// Records that could not be written after retries.
    #[serde(skip)]
    pub failed: Vec<ItemError>,
    /// Records in the index afterwards.
    pub count: usize,
    /// Shards that could not be read as Parquet (shard, why); the other shards were indexed.
    /// Delete such a shard and run the embed stage again to rewrite it.
    pub unreadable: Vec<(String, String)>,
}

/// How chunks are retrieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RetrievalMode {
    /// Vector kNN only.
    Vector,
    /// BM25 only.
    Text,
    /// Both, fused by RRF.
    Hybrid,
}

/// A cited source of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Citation {
    /// The chunk's id as cited.
    pub chunk_id: String,
    /// The document it belongs to.
    pub doc_id: String,
    /// Where the document came from.
    pub source: String,
    /// Byte offsets of the chunk in the document.
    pub start: u64,
    /// End offset.
    pub end: u64,
}

/// A grounded answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// The model's answer.
    pub text: String,
    /// Sources the answer cites (chunks retrieved and cited).
    pub citations: Vec<Citation>,
    /// Chunks given as context.
    pub context: Vec<SearchHit>,
    /// Token usage of the chat call.
    pub usage: Usage,
    /// Time to retrieve.
    pub retrieval_time: Duration,
    /// Time to generate.
    pub generation_time: Duration,
}

/// The pipeline: backends, a layout and options. Each stage is a method; a driver (the
/// `ragloop` CLI, a user's own program) calls them in order and decides which to skip.
///
/// ```no_run
/// use std::sync::Arc;
/// use rag_core::local::*;
/// use rag_core::pipeline::{Backends, Layout, Pipeline, PipelineOptions};
///
/// async fn my_pipeline() -> rag_core::Result<()> {
///     let backends = Backends {
///         store: Arc::new(LocalFileStore::new(".ragloop/store")),
///         trainer: Arc::new(LocalProcessBackend::new(".ragloop/jobs")),
///         index: Arc::new(LocalVectorIndex::open(".ragloop/index").await?),
///         chat: Arc::new(ExtractiveChat::default()),
///         deployer: None,
///     };
///     let layout = Layout::new("oss://my-bucket/".parse()?);
///     let pipeline = Pipeline::new(backends, layout, PipelineOptions::default());
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
    backends: Backends,
    layout: Layout,
    options: PipelineOptions,
    progress: Arc<dyn Progress>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("layout", &self.layout)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline over `backends` storing under `layout`.
    pub fn new(backends: Backends, layout: Layout, options: PipelineOptions) -> Self {
        Self {
            backends,
            layout,
            options,
            progress: Arc::new(LogProgress),
        }
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

    /// The backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The options.
    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// Stage 1: uploads every file under `dir` to `raw-docs/`, keeping relative paths, like
    /// `ossutil cp -r ./data oss://bucket/raw-docs/`. Files whose content is already there are
    /// skipped; a file that fails is reported and the others still go.
    pub async fn ingest(&self, dir: &Path) -> Result<IngestReport> {
        let stage = Stage::Ingest;
        if !dir.is_dir() {
            return Err(Error::not_found(format!(
                "data directory {}",
                dir.display()
            )));
        }
        let root = dir.to_path_buf();
        let files = tokio::task::spawn_blocking(move || list_files(&root))
            .await
            .map_err(|e| Error::backend("pipeline", "listing task failed", e))??;
        if files.is_empty() {
            return Err(Error::invalid(format!(
                "{} holds no files to ingest",
                dir.display()
            )));
        }
        self.progress.begin(stage, Some(files.len() as u64));
        let mut report = IngestReport::default();
        for (path, rel) in files {
            match self.ingest_file(&path, &rel).await {
                Ok(Some(bytes)) => {
                    report.uploaded += 1;
                    report.bytes += bytes;
                }
                Ok(None) => report.unchanged += 1,
                Err(e) => report
                    .failed
                    .push((path.display().to_string(), e.to_string())),
            }
            self.progress.advance(stage, 1);
        }
        self.progress.end(
            stage,
            &format!(
                "{} uploaded ({} bytes), {} unchanged, {} failed",
                report.uploaded,
                report.bytes,
                report.unchanged,
                report.failed.len()
            ),
        );
        Ok(report)
    }

    /// Uploads one file unless the store holds the same content; `Some(bytes)` if uploaded.
    async fn ingest_file(&self, path: &Path, rel: &str) -> Result<Option<u64>> {
        let store = &self.backends.store;
        let uri = self.layout.raw_docs().join(rel)?;
        let size = tokio::fs::metadata(path).await?.len();
        if let Ok(meta) = store.head(&uri).await
            && meta.size == size
            && sha256_stream(file_stream(path).await?).await?
                == sha256_stream(store.get(&uri).await?.stream).await?
        {
            return Ok(None);
        }
        let put = store.put_stream(&uri, file_stream(path).await?).await?;
        Ok(Some(put.size))
    }

    /// Stages 2 and 3: runs a training job unless its output is complete already; waits for it
    /// and fails with the job's reason (and the end of its log) if it does not succeed.
    pub async fn run_job(
        &self,
        stage: Stage,
        spec: &JobSpec,
        wait: WaitOptions,
    ) -> Result<JobOutcome> {
        let marker = spec.output.as_prefix().join(SUCCESS_MARKER)?;
        let output = spec.output.as_prefix().to_string();
        if self.backends.store.exists(&marker).await? {
            self.progress
                .end(stage, &format!("{output} is complete; not run again"));
            return Ok(JobOutcome {
                job_id: None,
                skipped: true,
                reattached: false,
                output,
            });
        }
        self.progress.begin(stage, None);
        let trainer = &self.backends.trainer;
        let record = spec.output.as_prefix().join(JOB_RECORD)?;
        let (id, reattached) = match self.unfinished_job(&record, &marker).await? {
            Some(id) => {
                tracing::info!(%stage, job = %id, "waiting for the job an earlier run submitted");
                (id, true)
            }
            None => {
                let id = trainer.submit(spec).await?;
                tracing::info!(%stage, job = %id, "job submitted");
                let body = serde_json::to_vec(&JobRecord {
                    job_id: id.0.clone(),
                    name: spec.name.clone(),
                })
                .map_err(|e| Error::backend("pipeline", "encode the job record", e))?;
                self.backends.store.put(&record, body.into()).await?;
                (id, false)
            }
        };
        let status = trainer.wait(&id, wait).await?;
        match status {
            JobStatus::Succeeded => {}
            JobStatus::Failed { reason } => {
                return Err(self.job_error(spec, &id, format!("failed: {reason}")).await);
            }
            other => {
                return Err(self
                    .job_error(spec, &id, format!("ended as {other:?}"))
                    .await);
            }
        }
        if !self.backends.store.exists(&marker).await? {
            let what = format!("succeeded but wrote no {SUCCESS_MARKER} to {output}");
            return Err(self.job_error(spec, &id, what).await);
        }
        self.progress
            .end(stage, &format!("job {id} succeeded; output in {output}"));
        Ok(JobOutcome {
            job_id: Some(id),
            skipped: false,
            reattached,
            output,
        })
    }

    /// The job recorded at `record` if the backend still has it queued or running, or it has
    /// just succeeded and its `marker` is there now. A failed, stopped or unknown job, one that
    /// succeeded but whose output was since removed, or an unreadable record means a new job.
    async fn unfinished_job(&self, record: &StoreUri, marker: &StoreUri) -> Result<Option<JobId>> {
        let bytes = match self.backends.store.get_bytes(record).await {
            Ok(bytes) => bytes,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(rec) = serde_json::from_slice::<JobRecord>(&bytes) else {
            tracing::warn!(%record, "unreadable job record; submitting a new job");
            return Ok(None);
        };
        let id = JobId(rec.job_id);
        match self.backends.trainer.status(&id).await {
            Ok(JobStatus::Queued | JobStatus::Running) => Ok(Some(id)),
            Ok(JobStatus::Succeeded) if self.backends.store.exists(marker).await? => Ok(Some(id)),
            Ok(status) => {
                tracing::info!(job = %id, ?status, "the recorded job did not finish; submitting a new one");
                Ok(None)
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A job failure with the end of the job's log, so that the reason is visible at once.
    async fn job_error(&self, spec: &JobSpec, id: &JobId, what: String) -> Error {
        let log = self.backends.trainer.logs(id).await.unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        Error::backend_msg(
            "training",
            format!("job {} ({id}) {what}; log ends:\n{tail}", spec.name),
        )
    }

    /// Stage 4: deploys a fine-tuned model and waits until it serves.
    pub async fn deploy(&self, spec: &DeploySpec, wait: WaitOptions) -> Result<Deployment> {
        let stage = Stage::Deploy;
        let deployer = self
            .backends
            .deployer
            .as_ref()
            .ok_or_else(|| Error::invalid("no ModelDeployer is configured"))?;
        self.progress.begin(stage, None);
        let dep = deployer.deploy(spec).await?;
        let id = dep.id.clone();
        let dep = match crate::deploy::wait_until_serving(deployer.as_ref(), dep, wait).await {
            Ok(dep) => dep,
            // Never serving (failed, stopped, or not up in time): undeploy, so that nothing is
            // left half-registered (or billing) behind an error. A failed status call is
            // returned as it is: the deployment may be fine.
            Err(e @ (Error::Timeout { .. } | Error::Backend { .. })) => {
                let cleanup = match deployer.undeploy(&id).await {
                    Ok(()) => format!("deployment {id} was undeployed"),
                    Err(u) => format!("undeploying {id} failed as well: {u}"),
                };
                tracing::warn!(deployment = %id, error = %e, "{cleanup}");
                return Err(match e {
                    Error::Timeout { what, after } => Error::Timeout {
                        what: format!("{what} ({cleanup})"),
                        after,
                    },
                    other => Error::backend_msg("deploy", format!("{other}; {cleanup}")),
                });
            }
            Err(e) => return Err(e),
        };
        self.progress
            .end(stage, &format!("{} serves as {}", dep.id, dep.model_name));
        Ok(dep)
    }

    /// Reads and parses every object under `raw-docs/`.
    pub async fn load_documents(&self) -> Result<LoadReport> {
        crate::loader::load_documents(self.backends.store.as_ref(), &self.layout.raw_docs()).await
    }

    /// Chunks every document, in order, dropping repeated chunk ids.
    pub fn chunk_all(&self, report: &LoadReport) -> Vec<Chunk> {
        self.options.chunker.chunk_all(&report.documents)
    }

    /// Stage 5: embeds every chunk of `raw-docs/` with `model` into Parquet shards under
    /// `vector-indexes/<model>/`. Shards that are current are kept, so a killed run resumes.
    pub async fn embed(&self, model: &dyn EmbeddingModel) -> Result<EmbedReport> {
        let loaded = self.load_documents().await?;
        if loaded.documents.is_empty() {
            return Err(Error::invalid(format!(
                "no documents under {}",
                self.layout.raw_docs()
            )));
        }
        let chunks = self.chunk_all(&loaded);
        let prefix = self.layout.vector_shards(model.model_id());
        let mut report = EmbedReport {
            model_id: model.model_id().to_string(),
            documents: loaded.documents.len(),
            chunks: chunks.len(),
            skipped_inputs: loaded.skipped,
            shards_prefix: prefix.to_string(),
            ..Default::default()
        };
        let shards = embed_to_shards(
            self.backends.store.as_ref(),
            model,
            &chunks,
            &prefix,
            &ShardOptions {
                shard_rows: self.options.shard_rows,
                batch: self.options.embed_batch,
                ..Default::default()
            },
            self.progress.as_ref(),
        )
        .await?;
        report.shards_written = shards.written;
        report.shards_current = shards.current;
        Ok(report)
    }

    /// The index schema for vectors of `model`: its dimension, cosine similarity, and the chunk
    /// metadata fields that answers cite.
    pub fn index_schema(&self, model: &dyn EmbeddingModel) -> IndexSchema {
        IndexSchema::new(&self.options.index_name, model.dims(), Metric::Cosine)
            .with_field("doc_id", FieldKind::Keyword)
            .with_field("source", FieldKind::Keyword)
            .with_field("title", FieldKind::Keyword)
            .with_field("start", FieldKind::Integer)
            .with_field("end", FieldKind::Integer)
            .with_field("ordinal", FieldKind::Integer)
    }

    /// Stage 6: creates the index (a dimension mismatch with an existing one fails before any
    /// write) and upserts every shard of `model`, retrying records the index reports as
    /// retryable. Records that still fail are returned, never dropped silently; so are shards
    /// that are not readable Parquet ([`IndexReport::unreadable`]), while the others go in.
    pub async fn index(&self, model: &dyn EmbeddingModel) -> Result<IndexReport> {
        let stage = Stage::Index;
        let index = &self.backends.index;
        let name = &self.options.index_name;
        index.create_index(&self.index_schema(model)).await?;
        let prefix = self.layout.vector_shards(model.model_id());
        let shards: Vec<_> = self.backends.store.list(&prefix).try_collect().await?;
        let shards: Vec<_> = shards
            .into_iter()
            .filter(|m| shard_number(m.uri.file_name()).is_some())
            .collect();
        if shards.is_empty() {
            return Err(Error::not_found(format!(
                "vector shards under {prefix} (run the embed stage)"
            )));
        }
        self.progress.begin(stage, None);
        let mut report = IndexReport {
            shards: shards.len(),
            ..Default::default()
        };
        for shard in shards {
            let read = read_shard_batches(
                self.backends.store.get_bytes(&shard.uri).await?,
                self.options.index_batch.max(1),
            );
            let (meta, batches) = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(shard = %shard.uri, error = %e, "unreadable vector shard skipped");
                    report
                        .unreadable
                        .push((shard.uri.to_string(), e.to_string()));
                    continue;
                }
            };
            if meta.model_id != model.model_id() || meta.dims != model.dims() {
                return Err(Error::invalid(format!(
                    "{} holds vectors of {} ({} dims), not of {} ({} dims)",
                    shard.uri,
                    meta.model_id,
                    meta.dims,
                    model.model_id(),
                    model.dims()
                )));
            }
            for batch in batches {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        // The rows before this batch were indexed; the rest of the shard is lost.
                        report
                            .unreadable
                            .push((shard.uri.to_string(), e.to_string()));
                        break;
                    }
                };
                let records: Vec<IndexRecord> = batch.iter().map(record_of).collect();
                let (written, failed) = self.upsert_with_retries(name, records).await?;
                report.written += written;
                report.failed.extend(failed);
                self.progress.advance(stage, batch.len() as u64);
            }
        }
        report.count = index.count(name).await?;
        self.progress.end(
            stage,
            &format!(
                "{} records written, {} failed, {} unreadable shards; {} in {name}",
                report.written,
                report.failed.len(),
                report.unreadable.len(),
                report.count
            ),
        );
        Ok(report)
    }

    /// Upserts `records`, resending the ones the index reports as retryable with a growing
    /// pause, up to `upsert_retries` times. Returns how many were written and what failed.
    async fn upsert_with_retries(
        &self,
        name: &str,
        records: Vec<IndexRecord>,
    ) -> Result<(usize, Vec<ItemError>)> {
        let mut written = 0;
        let mut failures = Vec::new();
        let mut pending = records;
        for attempt in 0..=self.options.upsert_retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(6))).await;
            }
            let mut by_id: HashMap<String, IndexRecord> =
                pending.iter().map(|r| (r.id.clone(), r.clone())).collect();
            let report = self.backends.index.upsert(name, pending).await?;
            written += report.written.len();
            let (retry, give_up): (Vec<_>, Vec<_>) =
                report.failed.into_iter().partition(|f| f.retryable);
            failures.extend(give_up);
            if retry.is_empty() {
                return Ok((written, failures));
            }
            if attempt == self.options.upsert_retries {
                failures.extend(retry);
                break;
            }
            tracing::warn!(
                count = retry.len(),
                attempt,
                "retrying records the index refused"
            );
            pending = retry.iter().filter_map(|f| by_id.remove(&f.id)).collect();
        }
        Ok((written, failures))
    }

    /// Retrieves the top `k` chunks for `question`.
    pub async fn retrieve(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        k: usize,
        mode: RetrievalMode,
    ) -> Result<Vec<SearchHit>> {
        let query = match mode {
            RetrievalMode::Text => Query::Text(question.to_string()),
            RetrievalMode::Vector => Query::Vector(model.embed_query(question).await?),
            RetrievalMode::Hybrid => Query::Hybrid {
                vector: model.embed_query(question).await?,
                text: question.to_string(),
            },
        };
        self.backends
            .index
            .search(&self.options.index_name, &SearchRequest::new(query, k))
            .await
    }

    /// Stage 7: retrieves context with hybrid search, asks the chat model with the seed's
    /// `Context: …\nQuestion: …` prompt and resolves the chunk ids it cites.
    pub async fn answer(&self, model: &dyn EmbeddingModel, question: &str) -> Result<Answer> {
        if question.trim().is_empty() {
            return Err(Error::invalid("the question is empty"));
        }
        let t0 = Instant::now();
        let context = self
            .retrieve(model, question, self.options.top_k, RetrievalMode::Hybrid)
            .await?;
        let retrieval_time = t0.elapsed();
        let chunks: Vec<ContextChunk> = context
            .iter()
            .map(|h| ContextChunk {
                id: h.id.clone(),
                text: h.text.clone(),
            })
            .collect();
        let t1 = Instant::now();
        let resp = self
            .backends
            .chat
            .chat(&rag_request(&chunks, question))
            .await?;
        let generation_time = t1.elapsed();
        let citations = cited_ids(&resp.content, context.iter().map(|h| h.id.as_str()))
            .into_iter()
            .filter_map(|id| context.iter().find(|h| h.id == id).map(citation_of))
            .collect();
        Ok(Answer {
            question: question.to_string(),
            text: resp.content,
            citations,
            context,
            usage: resp.usage,
            retrieval_time,
            generation_time,
        })
    }

    /// Retrieval quality over `queries`: for each, the top `depth` chunks are mapped to their
    /// documents (first occurrence counts) and scored against the relevant documents.
    pub async fn evaluate(
        &self,
        model: &dyn EmbeddingModel,
        queries: &[EvalQuery],
        mode: RetrievalMode,
        depth: usize,
    ) -> Result<RetrievalMetrics> {
        let mut acc = MetricsAccumulator::default();
        for q in queries {
            let hits = self.retrieve(model, &q.text, depth, mode).await?;
            let docs: Vec<String> = hits
                .iter()
                .map(|h| {
                    h.metadata
                        .get("doc_id")
                        .and_then(|v| v.as_str())
                        .unwrap_or(&h.id)
                        .to_string()
                })
                .collect();
            acc.add(&docs, &q.relevant);
        }
        Ok(acc.finish())
    }
}

fn record_of(row: &EmbeddedChunk) -> IndexRecord {
    let c = &row.chunk;
    let metadata: Metadata = [
        ("doc_id", json!(c.doc_id)),
        ("source", json!(c.source)),
        ("title", json!(c.title)),
        ("start", json!(c.start)),
        ("end", json!(c.end)),
        ("ordinal", json!(c.ordinal)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    IndexRecord {
        id: c.id.clone(),
        vector: row.vector.clone(),
        text: c.text.clone(),
        metadata,
    }
}

fn citation_of(hit: &SearchHit) -> Citation {
    let s = |k: &str| {
        hit.metadata
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let n = |k: &str| {
        hit.metadata
            .get(k)
            .and_then(|v| v.as_u64())
            .unwrap_or_default()
    };
    Citation {
        chunk_id: hit.id.clone(),
        doc_id: s("doc_id"),
        source: s("source"),
        start: n("start"),
        end: n("end"),
    }
}

/// `Some(n)` for `part-NNNNN.parquet`.
async fn sha256_stream(mut s: crate::store::ByteStream) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    while let Some(chunk) = s.try_next().await? {
        h.update(&chunk);
    }
    Ok(h.finalize().into())
}

/// Files under `root` (recursively, sorted) with their `/`-joined relative paths. Hidden files
/// and directories (`.git`, `.DS_Store`) are left out.
fn list_files(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else if let Ok(rel) = path.strip_prefix(root) {
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((path, rel));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}
