//! Evaluation rows, built in one place for `ragloop run` and `ragloop eval`: one retriever
//! (BM25, dense or hybrid with a named model) over a query set, at document level, the top 50
//! chunks deep.

use anyhow::Result;
use rag_core::eval::{EvalQuery, RetrievalMetrics};
use rag_core::pipeline::{Pipeline, RetrievalMode};
use rag_core::{EmbeddingModel, Fusion};
use serde::Serialize;

/// Chunks retrieved per query before they are mapped to documents.
pub const DEPTH: usize = 50;

/// One row of the evaluation table.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsRow {
    /// What retrieved.
    pub retriever: String,
    /// How well.
    pub metrics: RetrievalMetrics,
}

/// The row label of `mode` with the model called `model` (BM25 ignores the model; hybrid
/// names its fusion).
pub fn label(mode: RetrievalMode, model: &str, fusion: Fusion) -> String {
    match mode {
        RetrievalMode::Text => "BM25".into(),
        RetrievalMode::Vector => format!("dense {model}"),
        RetrievalMode::Hybrid => format!("hybrid: BM25 + {model} ({fusion})"),
    }
}

/// Evaluates `mode` on the index `pipeline` searches, with `model` (called `name` in the row)
/// embedding the queries.
pub async fn row(
    pipeline: &Pipeline,
    model: &dyn EmbeddingModel,
    name: &str,
    mode: RetrievalMode,
    queries: &[EvalQuery],
) -> Result<MetricsRow> {
    Ok(MetricsRow {
        retriever: label(mode, name, pipeline.options().fusion),
        metrics: pipeline.evaluate(model, queries, mode, DEPTH).await?,
    })
}
