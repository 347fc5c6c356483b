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

/// The check every backend makes first: an empty query is refused.
pub fn check_query(query: &str) -> Result<()> {
    if query.trim().is_empty() {
        return Err(Error::invalid("the rerank query is empty"));
    }
    Ok(())
}
