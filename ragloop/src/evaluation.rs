//! Evaluation rows, built in one place for `ragloop run` and `ragloop eval`: one retriever
//! (BM25, dense or hybrid with a named model) over a query set, at document level, the top 50
//! chunks deep.

use anyhow::Result;
use rag_core::eval::MetricsAccumulator;
use rag_core::eval::{EvalQuery, RetrievalMetrics};
use rag_core::pipeline::{Pipeline, RetrievalMode};
use rag_core::{EmbeddingModel, Fusion, Query, SearchHit, SearchRequest};
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
        metrics: pipeline
            .evaluate_with(model, queries, mode, DEPTH, false)
            .await?,
    })
}

/// [`row`] with the pipeline's reranker reordering each query's top
/// `rerank_candidates` (labelled `… → rerank <model>`); `None` without a reranker.
pub async fn reranked_row(
    pipeline: &Pipeline,
    model: &dyn EmbeddingModel,
    name: &str,
    mode: RetrievalMode,
    queries: &[EvalQuery],
) -> Result<Option<MetricsRow>> {
    let Some(reranker) = pipeline.reranker() else {
        return Ok(None);
    };
    let options = pipeline.options();
    let weight = match options.rerank_weight {
        w if w >= 1.0 => String::new(),
        w => format!(", weight {w}"),
    };
    Ok(Some(MetricsRow {
        retriever: format!(
            "{} → rerank top {} with {}{weight}",
            label(mode, name, options.fusion),
            options.rerank_candidates,
            reranker.model_id()
        ),
        metrics: pipeline
            .evaluate_with(model, queries, mode, DEPTH, true)
            .await?,
    }))
}

/// A hybrid fusion and why it was chosen (saved as `fusion.json`: beside a trained model by
/// `ragloop train`, at the store's root by `ragloop run` for `ask`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FusionChoice {
    /// The fusion.
    pub fusion: Fusion,
    /// Why (the set it was chosen on and the scores).
    pub reason: String,
    /// The BM25 analyzer the lexical lists were ranked with, where a training job chose it
    /// (choices written before it was recorded used [`rag_core::Analyzer::Standard`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analyzer: Option<rag_core::Analyzer>,
}

impl FusionChoice {
    /// A choice with its reason (no analyzer recorded).
    pub fn new(fusion: Fusion, reason: impl Into<String>) -> Self {
        Self {
            fusion,
            reason: reason.into(),
            analyzer: None,
        }
    }
}

/// How much a trained reranker's order counts against the search's (`rag_core::rerank::blend`),
/// chosen by its training job and saved as `rerank.json` beside it; `[rerank] weight` in the
/// configuration overrides it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RerankChoice {
    /// The reranker's weight in [0, 1].
    pub weight: f32,
    /// Why (the queries it was chosen on and the scores).
    pub reason: String,
}

impl RerankChoice {
    /// The file beside a cross-encoder directory.
    pub const FILE: &'static str = "rerank.json";

    /// The choice saved in `dir`, if there is one (an unreadable file is an error).
    pub fn read(dir: &std::path::Path) -> Result<Option<Self>> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("{} is not a rerank choice: {e}", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }
}

/// One query's candidates: the vector list and the BM25 list (hits carrying `doc_id`
/// metadata, else their id is the document), and its relevant documents.
pub type Candidates = (Vec<SearchHit>, Vec<SearchHit>, Vec<String>);

/// Chooses among RRF and convex weights 0, 0.1, …, 1 the fusion with the best
/// document-level nDCG@10 over `candidates` (RRF keeps ties); returns it with its score and
/// RRF's.
pub fn choose_fusion(candidates: &[Candidates]) -> (Fusion, f64, f64) {
    let mut options = vec![Fusion::Rrf];
    options.extend((0..=10).map(|i| Fusion::Convex {
        vector_weight: i as f32 / 10.0,
    }));
    let scored: Vec<(Fusion, f64)> = options
        .into_iter()
        .map(|f| (f, fused_ndcg(candidates, f)))
        .collect();
    let rrf = scored[0].1;
    let (best, score) = scored
        .iter()
        .copied()
        .fold((Fusion::Rrf, f64::MIN), |acc, (f, s)| {
            if s > acc.1 { (f, s) } else { acc }
        });
    (best, score, rrf)
}

/// Document-level nDCG@10 of `fusion` over `candidates`, the top [`DEPTH`] fused chunks
/// mapped to their documents (as the report ranks).
pub fn fused_ndcg(candidates: &[Candidates], fusion: Fusion) -> f64 {
    let request = SearchRequest::new(Query::Text(String::new()), DEPTH).with_fusion(fusion);
    let mut acc = MetricsAccumulator::default();
    for (vector, text, relevant) in candidates {
        let docs: Vec<String> = rag_core::fuse(&request, vector.clone(), text.clone())
            .iter()
            .map(|h| h.doc_id().to_string())
            .collect();
        acc.add(&docs, relevant);
    }
    acc.finish().ndcg_at_10
}
