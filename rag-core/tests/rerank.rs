//! The retrieve step with a reranker: the search's top candidates are reordered by the
//! reranker's scores, deeper hits follow, and evaluation reports with and without it.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use rag_core::eval::EvalQuery;
use rag_core::local::*;
use rag_core::pipeline::*;
use rag_core::rerank::Reranker;
use rag_core::*;

/// Scores a passage by how often it says "zebra"; counts the documents it scored.
#[derive(Default)]
struct Zebras {
    scored: AtomicUsize,
}

#[async_trait]
impl Reranker for Zebras {
    async fn score(&self, query: &str, documents: &[String]) -> Result<Vec<f32>> {
        rag_core::rerank::check_query(query)?;
        self.scored.fetch_add(documents.len(), Ordering::Relaxed);
        Ok(documents
            .iter()
            .map(|d| d.matches("zebra").count() as f32)
            .collect())
    }

    fn model_id(&self) -> String {
        "zebras".into()
    }
}

async fn pipeline(reranker: Option<Arc<Zebras>>, candidates: usize) -> (Pipeline, HashedEmbedding) {
    let model = HashedEmbedding::new(HashedEmbeddingConfig::default()).unwrap();
    let index = Arc::new(LocalVectorIndex::in_memory());
    let schema = IndexSchema::new("rag-index", model.dims(), Metric::Cosine);
    index.create_index(&schema).await.unwrap();
    // BM25 for "file" ranks r0 > r1 > r2 > r3 (shorter and more "file" first); the reranker
    // prefers zebras.
    let texts = [
        ("r0", "file file file"),
        ("r1", "file file descriptor zebra"),
        ("r2", "file descriptor table zebra zebra"),
        (
            "r3",
            "a long passage about a file and zebra zebra zebra zebra",
        ),
    ];
    let mut records = Vec::new();
    for (id, text) in texts {
        let mut metadata = Metadata::new();
        metadata.insert("doc_id".into(), serde_json::json!(format!("doc-{id}")));
        records.push(IndexRecord {
            id: id.into(),
            vector: model.embed_query(text).await.unwrap(),
            text: text.into(),
            metadata,
        });
    }
    index.upsert("rag-index", records).await.unwrap();
    let options = PipelineOptions {
        rerank_candidates: candidates,
        ..Default::default()
    };
    let store = Arc::new(LocalFileStore::new(tempfile::tempdir().unwrap().keep()));
    let mut p = Pipeline::new(store, Layout::new("oss://demo-bucket/".parse().unwrap()))
        .with_index(index)
        .with_options(options);
    if let Some(r) = reranker {
        p = p.with_reranker(r);
    }
    (p, model)
}

fn ids(hits: &[SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

#[tokio::test]
async fn the_top_candidates_are_reordered_and_deeper_hits_follow() {
    let zebras = Arc::new(Zebras::default());
    let (p, m) = pipeline(Some(zebras.clone()), 3).await;
    let plain = p
        .retrieve_with(&m, "file", 4, RetrievalMode::Text, false)
        .await
        .unwrap();
    assert_eq!(ids(&plain), ["r0", "r1", "r2", "r3"], "BM25 order");
    assert_eq!(
        zebras.scored.load(Ordering::Relaxed),
        0,
        "no reranking asked"
    );

    let reranked = p
        .retrieve(&m, "file", 4, RetrievalMode::Text)
        .await
        .unwrap();
    // The top 3 candidates reordered (r2: 2 zebras, r1: 1, r0: 0), r3 after them.
    assert_eq!(ids(&reranked), ["r2", "r1", "r0", "r3"]);
    assert_eq!(reranked[0].score, 2.0, "the reranker's score is the hit's");
    assert_eq!(
        zebras.scored.load(Ordering::Relaxed),
        3,
        "only the candidates are scored"
    );

    // k below the candidates: reranked among the candidates, then cut to k.
    let top1 = p
        .retrieve(&m, "file", 1, RetrievalMode::Text)
        .await
        .unwrap();
    assert_eq!(ids(&top1), ["r2"]);
}

/// Below weight 1 the reranker's order is fused with the search's (weighted reciprocal rank):
/// the search's order is a prior the reranker has to outweigh.
#[tokio::test]
async fn a_weight_below_one_fuses_the_reranker_with_the_search_order() {
    async fn at(weight: f32) -> Vec<SearchHit> {
        let (p, m) = pipeline(Some(Arc::new(Zebras::default())), 3).await;
        p.with_rerank_weight(weight)
            .retrieve(&m, "file", 4, RetrievalMode::Text)
            .await
            .unwrap()
    }
    // Weight 0: the search's order, scored by the fusion.
    let kept = at(0.0).await;
    assert_eq!(ids(&kept), ["r0", "r1", "r2", "r3"]);
    // Equal weights: r0 (first, then last) and r2 (last, then first) tie on the fused score
    // and the search's order breaks it; r1, second in both, follows.
    let equal = at(0.5).await;
    assert_eq!(ids(&equal), ["r0", "r2", "r1", "r3"]);
    assert!((equal[0].score - (0.5 / 61.0 + 0.5 / 63.0)).abs() < 1e-6);
    // Leaning on the reranker: its order.
    let leaning = at(0.75).await;
    assert_eq!(ids(&leaning), ["r2", "r1", "r0", "r3"]);
}

#[tokio::test]
async fn candidates_set_the_depth_reranked() {
    // 4 candidates for k = 1: the reranker sees all four and r3 (4 zebras) wins.
    let (p, m) = pipeline(Some(Arc::new(Zebras::default())), 4).await;
    let top1 = p
        .retrieve(&m, "file", 1, RetrievalMode::Hybrid)
        .await
        .unwrap();
    assert_eq!(ids(&top1), ["r3"]);
    // Fewer candidates than k: the candidates bound the reranker's work, the rest follow.
    let zebras = Arc::new(Zebras::default());
    let (p, m) = pipeline(Some(zebras.clone()), 2).await;
    let all = p
        .retrieve(&m, "file", 4, RetrievalMode::Text)
        .await
        .unwrap();
    assert_eq!(ids(&all), ["r1", "r0", "r2", "r3"]);
    assert_eq!(zebras.scored.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn evaluation_reports_with_and_without_reranking() {
    let (p, m) = pipeline(Some(Arc::new(Zebras::default())), 50).await;
    let queries = vec![EvalQuery {
        id: "q".into(),
        text: "file".into(),
        relevant: vec!["doc-r3".into()],
        split: "test".into(),
    }];
    let with = p
        .evaluate_with(&m, &queries, RetrievalMode::Text, 10, true)
        .await
        .unwrap();
    let without = p
        .evaluate_with(&m, &queries, RetrievalMode::Text, 10, false)
        .await
        .unwrap();
    assert_eq!(with.hit_at_1, 1.0, "{with:?}");
    assert_eq!(without.hit_at_1, 0.0, "{without:?}");
    assert!(with.ndcg_at_10 > without.ndcg_at_10);
    let default = p
        .evaluate(&m, &queries, RetrievalMode::Text, 10)
        .await
        .unwrap();
    assert_eq!(
        default.ndcg_at_10, with.ndcg_at_10,
        "a set reranker is used by default"
    );
}

#[tokio::test]
async fn reranking_without_a_reranker_is_an_error_not_a_silent_skip() {
    let (p, m) = pipeline(None, 50).await;
    let err = p
        .retrieve_with(&m, "file", 4, RetrievalMode::Text, true)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Reranker"), "{err}");
    assert_eq!(
        p.retrieve(&m, "file", 2, RetrievalMode::Text)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn the_reranker_reads_the_title_and_the_text() {
    let mut metadata = Metadata::new();
    metadata.insert("title".into(), serde_json::json!("dup"));
    let mut hit = SearchHit {
        id: "c".into(),
        score: 1.0,
        text: "duplicate a file descriptor".into(),
        metadata,
    };
    assert_eq!(rerank_text(&hit), "dup\nduplicate a file descriptor");
    hit.metadata.clear();
    assert_eq!(rerank_text(&hit), "duplicate a file descriptor");
}
