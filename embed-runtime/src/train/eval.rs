//! Document retrieval quality of an embedding model: every document embedded whole
//! (`title + "\n" + text`, truncated by the model), queries ranked by cosine similarity.

use rag_core::eval::{EvalQuery, MetricsAccumulator, RetrievalMetrics};
use rag_core::{Document, EmbeddingModel, Result};

use super::pairs::document_passage;

/// Texts embedded per call, so a large corpus is not one giant request.
const EMBED_BATCH: usize = 256;

/// Ranks `docs` for each query with `model` and returns hit@1/5/10, MRR@10 and nDCG@10.
/// Documents longer than `max_chars` are cut first (the model truncates to its own limit).
pub async fn evaluate(
    model: &dyn EmbeddingModel,
    docs: &[Document],
    queries: &[EvalQuery],
    max_chars: usize,
) -> Result<RetrievalMetrics> {
    let mut all = evaluate_sets(model, docs, &[queries], max_chars).await?;
    Ok(all.remove(0))
}

/// [`evaluate`] for several query sets over the same documents, which are embedded once: one
/// [`RetrievalMetrics`] per set, in order.
pub async fn evaluate_sets(
    model: &dyn EmbeddingModel,
    docs: &[Document],
    sets: &[&[EvalQuery]],
    max_chars: usize,
) -> Result<Vec<RetrievalMetrics>> {
    let mut doc_vecs = Vec::with_capacity(docs.len());
    let texts: Vec<String> = docs
        .iter()
        .map(|d| document_passage(d, max_chars))
        .collect();
    for chunk in texts.chunks(EMBED_BATCH) {
        doc_vecs.extend(model.embed_documents(chunk).await?);
    }
    let norms: Vec<f32> = doc_vecs.iter().map(|v| norm(v)).collect();
    let mut out = Vec::with_capacity(sets.len());
    for queries in sets {
        out.push(rank(model, docs, &doc_vecs, &norms, queries).await?);
    }
    Ok(out)
}

async fn rank(
    model: &dyn EmbeddingModel,
    docs: &[Document],
    doc_vecs: &[Vec<f32>],
    norms: &[f32],
    queries: &[EvalQuery],
) -> Result<RetrievalMetrics> {
    let mut acc = MetricsAccumulator::default();
    for q in queries {
        let qv = model.embed_query(&q.text).await?;
        let qn = norm(&qv);
        let mut scored: Vec<(f32, usize)> = doc_vecs
            .iter()
            .zip(norms)
            .enumerate()
            .map(|(i, (v, n))| {
                let dot: f32 = v.iter().zip(&qv).map(|(a, b)| a * b).sum();
                (dot / (n * qn).max(f32::MIN_POSITIVE), i)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let ranked: Vec<String> = scored
            .iter()
            .take(10)
            .map(|&(_, i)| docs[i].id.clone())
            .collect();
        acc.add(&ranked, &q.relevant);
    }
    Ok(acc.finish())
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}
