//! [`Reranker`] conformance.

use crate::error::Error;
use crate::rerank::Reranker;

/// Runs every check.
pub async fn run_all(reranker: &dyn Reranker) {
    run_contract(reranker).await;
    relevant_passages_score_higher(reranker).await;
}

/// The checks that hold for any model, trained or not (shapes, order, edge inputs, batch
/// independence): what a randomly initialised test model runs; a trained one runs
/// [`run_all`].
pub async fn run_contract(reranker: &dyn Reranker) {
    shapes_and_order(reranker).await;
    edge_inputs(reranker).await;
    batch_matches_single(reranker).await;
}

fn docs(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0)
}

/// One finite score per document, in order (reversing the documents reverses the scores); no
/// documents give no scores; an empty query is `InvalidInput`; a model id exists.
pub async fn shapes_and_order(reranker: &dyn Reranker) {
    assert!(!reranker.model_id().is_empty(), "model_id is set");
    assert!(
        reranker
            .score("query", &[])
            .await
            .expect("no documents")
            .is_empty(),
        "no documents, no scores"
    );
    let err = reranker
        .score("  ", &docs(&["a passage"]))
        .await
        .expect_err("an empty query is refused");
    assert!(
        matches!(err, Error::InvalidInput { .. }),
        "empty query: {err:?}"
    );
    let texts = docs(&[
        "the signal handler runs when a signal arrives",
        "memory pages are mapped into the address space",
        "a socket is an endpoint for communication",
    ]);
    let scores = reranker
        .score("signal handler", &texts)
        .await
        .expect("score");
    assert_eq!(scores.len(), 3, "one score per document");
    assert!(scores.iter().all(|s| s.is_finite()), "finite scores");
    let mut reversed = texts.clone();
    reversed.reverse();
    let back = reranker
        .score("signal handler", &reversed)
        .await
        .expect("score");
    for (i, s) in scores.iter().enumerate() {
        assert!(
            close(*s, back[2 - i]),
            "document {i}: {s} vs {}",
            back[2 - i]
        );
    }
}

/// Empty, very long, non-ASCII and CJK passages all score (long ones truncated, not refused).
pub async fn edge_inputs(reranker: &dyn Reranker) {
    let texts = vec![
        String::new(),
        "kernel memory page ".repeat(20_000),
        "naïve café — Ünïcödé".to_string(),
        "复制文件描述符".to_string(),
        "emoji 🦀 and\ttabs\nnewlines".to_string(),
    ];
    let scores = reranker
        .score("如何复制文件描述符 file descriptor", &texts)
        .await
        .expect("edge inputs score");
    assert_eq!(scores.len(), texts.len());
    assert!(scores.iter().all(|s| s.is_finite()), "finite scores");
}

/// A document's score does not depend on the others of the call (batches may be cut anywhere).
pub async fn batch_matches_single(reranker: &dyn Reranker) {
    let texts = docs(&[
        "open a file and return its descriptor",
        "close a file descriptor",
        "duplicate a file descriptor with dup",
        "bake bread in a hot oven",
    ]);
    let query = "copy a file descriptor";
    let all = reranker.score(query, &texts).await.expect("batch");
    for (i, t) in texts.iter().enumerate() {
        let one = reranker
            .score(query, std::slice::from_ref(t))
            .await
            .expect("single");
        assert!(
            close(all[i], one[0]),
            "document {i}: batch {} vs single {}",
            all[i],
            one[0]
        );
    }
}

/// A passage that answers the query outscores one about something else, and `rerank` puts it
/// first.
pub async fn relevant_passages_score_higher(reranker: &dyn Reranker) {
    let texts = docs(&[
        "Bake the bread in a hot oven for forty minutes, then let it cool.",
        "dup() duplicates a file descriptor: the new descriptor refers to the same open file.",
    ]);
    let query = "How do I duplicate a file descriptor?";
    let top = reranker.rerank(query, &texts, 1).await.expect("rerank");
    assert_eq!(top.len(), 1, "top_n results");
    assert_eq!(top[0].index, 1, "the relevant passage first: {top:?}");
    let all = reranker.rerank(query, &texts, 10).await.expect("rerank");
    assert_eq!(all.len(), 2, "top_n above the count returns every document");
    assert!(all[0].score >= all[1].score, "best first");
}
