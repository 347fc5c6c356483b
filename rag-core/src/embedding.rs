//! [`EmbeddingModel`]: turns text into vectors (seed steps 2, 5, 7).

use async_trait::async_trait;

use crate::error::Result;

/// A dense embedding.
pub type Embedding = Vec<f32>;

/// A text embedding model.
///
/// Documents and queries are embedded by separate calls because many models (e5, bge) prepend a
/// different instruction or prefix to each. Texts longer than [`EmbeddingModel::max_input_tokens`]
/// are truncated by the model, never rejected; an empty text yields a vector of [`EmbeddingModel::dims`]
/// finite values.
#[async_trait]
pub trait EmbeddingModel: Send + Sync {
    /// A stable identifier of the model and its weights (written into Parquet metadata).
    fn model_id(&self) -> &str;

    /// Length of every vector this model returns.
    fn dims(&self) -> usize;

    /// Inputs longer than this many tokens are truncated.
    fn max_input_tokens(&self) -> usize;

    /// Whether returned vectors have unit L2 norm (cosine and dot product then agree).
    fn normalized(&self) -> bool;

    /// Embeds passages to be indexed. Returns one vector per text, in order.
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>>;

    /// Embeds a search query.
    async fn embed_query(&self, text: &str) -> Result<Embedding>;
}

/// Scales `v` to unit L2 norm in place; a zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity of two equally long vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}
