//! [`Reranker`]: scores how well each candidate passage answers a query, reading both together
//! (a cross-encoder, or a service such as DashScope's text-rerank). The retrieve step uses it
//! to reorder the fused candidates before it takes the top k.
//!
//! ```
//! use async_trait::async_trait;
//! use rag_core::rerank::{Reranker, Scored};
//!
//! /// Scores a passage by how many query words it holds (a toy; real rerankers read both).
//! struct Overlap;
//!
//! #[async_trait]
//! impl Reranker for Overlap {
//!     async fn score(&self, query: &str, documents: &[String]) -> rag_core::Result<Vec<f32>> {
//!         Ok(documents
//!             .iter()
//!             .map(|d| query.split(' ').filter(|w| d.contains(w)).count() as f32)
//!             .collect())
//!     }
//!     fn model_id(&self) -> String {
//!         "overlap".into()
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let docs = vec!["close a file".to_string(), "duplicate a file descriptor".to_string()];
//! let top = Overlap.rerank("duplicate descriptor", &docs, 1).await.unwrap();
//! assert_eq!(top, vec![Scored { index: 1, score: 2.0 }]);
//! # });
//! ```

use async_trait::async_trait;

use crate::error::{Error, Result};

/// One candidate's place in the input and its relevance score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Index of the candidate in the documents passed in.
    pub index: usize,
    /// Relevance score (higher is more relevant; comparable within one model).
    pub score: f32,
}

/// A model that scores (query, passage) pairs jointly.
///
/// Contract (checked by `rag_core::conformance::rerank`, feature `conformance`): one finite score per document, in the
/// documents' order, each independent of the other documents of the call (so batches may be
/// cut anywhere); no documents → no scores and no work; an empty query is
/// [`Error::InvalidInput`]; texts longer than the model reads are truncated, not refused.
#[async_trait]
pub trait Reranker: Send + Sync {
    /// One score per document, in order.
    async fn score(&self, query: &str, documents: &[String]) -> Result<Vec<f32>>;

    /// Identifier of the model (its scores differ from another model's).
    fn model_id(&self) -> String;

    /// The `top_n` documents by score, best first (ties by input order).
    async fn rerank(&self, query: &str, documents: &[String], top_n: usize) -> Result<Vec<Scored>> {
        let scores = self.score(query, documents).await?;
        if scores.len() != documents.len() {
            return Err(Error::backend_msg(
                "rerank",
                format!(
                    "{} scored {} of {} documents",
                    self.model_id(),
                    scores.len(),
                    documents.len()
                ),
            ));
        }
        Ok(ranked(&scores, top_n))
    }
}

/// `scores` as [`Scored`] entries, best first (ties by index), at most `top_n`.
pub fn ranked(scores: &[f32], top_n: usize) -> Vec<Scored> {
    let mut out: Vec<Scored> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| Scored { index, score })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    out.truncate(top_n);
    out
}

/// Weighted reciprocal-rank fusion of a reranker's order (`reranked`, best first, indexes into
/// the candidates) with the candidates' own order (index 0 first): each candidate scores
/// `w/(60+r_rerank) + (1−w)/(60+r_search)` with 1-based ranks, best first, ties by the search's
/// order. `k = 60` as in [`crate::index::rrf_fuse`].
pub fn blend(reranked: &[Scored], reranker_weight: f32) -> Vec<Scored> {
    const K: f32 = 60.0;
    let w = reranker_weight.clamp(0.0, 1.0);
    let mut fused: Vec<Scored> = reranked
        .iter()
        .enumerate()
        .map(|(rank, s)| Scored {
            index: s.index,
            score: w / (K + rank as f32 + 1.0) + (1.0 - w) / (K + s.index as f32 + 1.0),
        })
        .collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    fused
}

/// The check every backend makes first: an empty query is refused.
pub fn check_query(query: &str) -> Result<()> {
    if query.trim().is_empty() {
        return Err(Error::invalid("the rerank query is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_weighs_the_reranker_against_the_search_order() {
        // The reranker puts the search's last candidate first.
        let reranked = ranked(&[0.1, 0.2, 0.9], 3);
        let order = |w: f32| {
            blend(&reranked, w)
                .iter()
                .map(|s| s.index)
                .collect::<Vec<_>>()
        };
        assert_eq!(order(1.0), vec![2, 1, 0]);
        assert_eq!(order(0.0), vec![0, 1, 2]);
        // Equal weights: 0 and 2 tie (first in one order, third in the other) and the search's
        // order breaks the tie; 1, second in both, comes last (1/x is convex).
        assert_eq!(order(0.5), vec![0, 2, 1]);
        // Leaning on the reranker puts its first first.
        assert_eq!(order(0.6), vec![2, 1, 0]);
        assert!(
            blend(&reranked, 0.5)
                .iter()
                .all(|s| s.score.is_finite() && s.score > 0.0)
        );
    }
}
