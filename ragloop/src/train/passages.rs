//! The adapter's passage-level recipe (`--passages chunks`, the default): the corpus is chunked
//! exactly as stage 5 chunks it and embedded with the frozen base model — through the
//! pooled-vector cache (`--cache`), so the loop's stage 5 later finds every vector there (or
//! this job finds stage 5's) and the corpus is encoded once for the base model, the trained
//! one and the training. Each pair's positive is its document's best chunk for the query;
//! hard negatives come from the other documents with false-negative control
//! ([`embed_runtime::train::hard`]).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Result, bail};
use embed_runtime::SentenceEmbedder;
use embed_runtime::train::hard::{self, HardOptions, MiningReport};
use embed_runtime::train::pairs::Pair;
use rag_core::eval::{MetricsAccumulator, RetrievalMetrics};
use rag_core::pipeline::{Progress, Stage};
use rag_core::{Chunker, Document};
use serde::Serialize;

/// Texts per encoder call (the progress moves per call).
const BATCH: usize = 256;

/// What the passage-level preparation did.
#[derive(Debug, Clone, Serialize)]
pub struct PassageReport {
    /// Chunks of the corpus (as stage 5 cuts them).
    pub chunks: usize,
    /// Of them, vectors the cache already had.
    pub cached: usize,
    /// Distinct training queries.
    pub queries: usize,
    /// Positives and negatives: what was kept and dropped.
    pub mining: MiningReport,
    /// Seconds to embed the chunks and queries.
    pub seconds: f64,
}

/// Query vectors, chunk vectors, chunk documents and the mined pairs.
pub(super) struct Prepared {
    pub queries: Vec<Vec<f32>>,
    /// The queries' texts (rows of `queries`).
    pub query_texts: Vec<String>,
    /// The chunks' texts as embedded (rows of `chunks`).
    pub texts: Vec<String>,
    pub chunks: Vec<Vec<f32>>,
    pub chunk_docs: Vec<u32>,
    pub pairs: Vec<hard::HardPair>,
    pub report: PassageReport,
}

/// Embeds the corpus's chunks and the pairs' queries with `base` and mines the pairs.
pub(super) fn prepare(
    base: &SentenceEmbedder,
    docs: &[Document],
    train: &[Pair],
    options: &HardOptions,
    progress: Arc<dyn Progress>,
) -> Result<Prepared> {
    let started = std::time::Instant::now();
    let doc_index: HashMap<&str, u32> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i as u32))
        .collect();
    let chunks = Chunker::default().chunk_all(docs);
    let texts: Vec<String> = chunks.iter().map(rag_core::Chunk::embedding_text).collect();
    let chunk_docs: Vec<u32> = chunks
        .iter()
        .map(|c| {
            doc_index
                .get(c.doc_id.as_str())
                .copied()
                .unwrap_or(u32::MAX)
        })
        .collect();
    let (vectors, cached) = embed_passages(base, &texts, "chunks", progress.as_ref())?;

    let (query_texts, relevant) = queries_of(train, docs);
    if query_texts.is_empty() {
        bail!("no training pair names a document of the corpus");
    }
    let refs: Vec<&str> = query_texts.iter().map(String::as_str).collect();
    let queries = base.embed_unnormalized(&refs, true)?;
    let (pairs, mining) = hard::mine(&queries, &relevant, &vectors, &chunk_docs, &[], options);
    tracing::info!(
        pairs = mining.pairs,
        negatives = mining.negatives,
        dropped_false_negatives = mining.dropped_false_negatives,
        "mined positives and hard negatives"
    );
    let report = PassageReport {
        chunks: texts.len(),
        cached,
        queries: query_texts.len(),
        mining,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Prepared {
        queries,
        query_texts,
        texts,
        chunks: vectors,
        chunk_docs,
        pairs,
        report,
    })
}

/// Embeds passages (`what`: "chunks", "documents") with the frozen `base` model, `BATCH` per
/// call with progress; returns their vectors and how many came from the cache.
pub(super) fn embed_passages(
    base: &SentenceEmbedder,
    texts: &[String],
    what: &str,
    progress: &dyn Progress,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let cached_before = base.cached_vectors();
    progress.begin(Stage::TrainEmbeddings, Some(texts.len() as u64));
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(BATCH) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        vectors.extend(base.embed_unnormalized(&refs, false)?);
        progress.advance(Stage::TrainEmbeddings, batch.len() as u64);
    }
    let encoded = base.cached_vectors().saturating_sub(cached_before);
    let cached = texts.len().saturating_sub(encoded);
    progress.end(
        Stage::TrainEmbeddings,
        &format!(
            "{} {what} embedded with the frozen model ({cached} from the cache)",
            texts.len()
        ),
    );
    Ok((vectors, cached))
}

/// Retrieval of `queries` (vectors, unit length) over the chunks (unit length), ranked at
/// document level by each document's best chunk, as the loop's dense retriever ranks them.
pub(super) fn chunk_metrics(
    queries: &[Vec<f32>],
    relevant: &[Vec<u32>],
    chunks: &[Vec<f32>],
    chunk_docs: &[u32],
) -> RetrievalMetrics {
    let mut acc = MetricsAccumulator::default();
    for (q, rel) in queries.iter().zip(relevant) {
        let mut best: HashMap<u32, f32> = HashMap::new();
        for (c, &d) in chunks.iter().zip(chunk_docs) {
            let s: f32 = q.iter().zip(c).map(|(a, b)| a * b).sum();
            let e = best.entry(d).or_insert(f32::MIN);
            *e = e.max(s);
        }
        let mut ranked: Vec<(u32, f32)> = best.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let ranked: Vec<String> = ranked.iter().take(50).map(|(d, _)| d.to_string()).collect();
        let rel: Vec<String> = rel.iter().map(u32::to_string).collect();
        acc.add(&ranked, &rel);
    }
    acc.finish()
}

/// Pairs as (query text, relevant documents), one entry per distinct query: its relevant
/// documents are those of all its pairs (pairs naming no document of `docs` are left out).
pub(super) fn queries_of(held: &[Pair], docs: &[Document]) -> (Vec<String>, Vec<Vec<u32>>) {
    let doc_index: HashMap<&str, u32> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i as u32))
        .collect();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    let (mut texts, mut relevant): (Vec<String>, Vec<Vec<u32>>) = (Vec::new(), Vec::new());
    for p in held {
        let Some(&d) = doc_index.get(p.doc_id.as_str()) else {
            continue;
        };
        let i = *slot.entry(p.query.as_str()).or_insert_with(|| {
            texts.push(p.query.clone());
            relevant.push(Vec::new());
            texts.len() - 1
        });
        if !relevant[i].contains(&d) {
            relevant[i].push(d);
        }
    }
    (texts, relevant)
}

/// Unit-length copies (`rag_core::embedding::normalize`).
pub(super) fn normalized(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    vectors
        .iter()
        .map(|v| {
            let mut v = v.clone();
            rag_core::embedding::normalize(&mut v);
            v
        })
        .collect()
}
