//! [`EmbeddingModel`]: turns text into vectors (seed steps 2, 5, 7).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    let (na, nb) = (dot(a, a), dot(b, b));
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na.sqrt() * nb.sqrt())
    }
}

/// Lanes [`dot`] adds in: products `i`, `i + LANES`, … share a lane.
const LANES: usize = 16;

/// The dot product of the common prefix of `a` and `b`.
///
/// It adds in 16 independent lanes, then the lanes pairwise in a fixed order, so the compiler
/// vectorises it at the target's baseline (SSE2 on x86-64: four 4-wide accumulators), which is
/// enough for the memory-bound scans it serves (exact search reads each stored vector once),
/// and it gives the same bits on every CPU (no fused multiply-add, no width-dependent order).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[l] += x * y;
    }
    // Pairwise, in a fixed order.
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

/// An [`EmbeddingModel`] that remembers the vector of every query it embeds, so a fixed query
/// set searched several ways (dense, hybrid, reranked: the rows of an evaluation) goes through
/// the model once. Documents pass straight through. The memory grows with the distinct
/// queries: for a bounded set, not for serving.
pub struct QueryMemo {
    model: Arc<dyn EmbeddingModel>,
    memo: Mutex<HashMap<String, Embedding>>,
}

impl QueryMemo {
    /// Wraps `model`.
    pub fn new(model: Arc<dyn EmbeddingModel>) -> Self {
        Self {
            model,
            memo: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl EmbeddingModel for QueryMemo {
    fn model_id(&self) -> &str {
        self.model.model_id()
    }

    fn dims(&self) -> usize {
        self.model.dims()
    }

    fn max_input_tokens(&self) -> usize {
        self.model.max_input_tokens()
    }

    fn normalized(&self) -> bool {
        self.model.normalized()
    }

    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        self.model.embed_documents(texts).await
    }

    async fn embed_query(&self, text: &str) -> Result<Embedding> {
        let known = self.memo.lock().expect("memo lock").get(text).cloned();
        if let Some(v) = known {
            return Ok(v);
        }
        let v = self.model.embed_query(text).await?;
        self.memo
            .lock()
            .expect("memo lock")
            .insert(text.to_string(), v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn dot_agrees_with_f64() {
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for n in [0, 1, 15, 16, 17, 31, 33, 100, 384, 1000] {
            let a: Vec<f32> = (0..n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next()).collect();
            let d = dot(&a, &b);
            assert!((d as f64 - naive(&a, &b)).abs() < 1e-4, "n={n}: {d}");
            // The common prefix of unequal lengths.
            assert_eq!(dot(&a, &b[..n / 2]), dot(&a[..n / 2], &b[..n / 2]));
        }
        assert_eq!(cosine(&[0.0; 4], &[1.0; 4]), 0.0);
        assert!((cosine(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-6);
    }

    /// Counts the queries it embeds.
    struct Counting(std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl EmbeddingModel for Counting {
        fn model_id(&self) -> &str {
            "counting"
        }
        fn dims(&self) -> usize {
            2
        }
        fn max_input_tokens(&self) -> usize {
            8
        }
        fn normalized(&self) -> bool {
            false
        }
        async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>> {
            Ok(texts.iter().map(|t| vec![t.len() as f32, 0.0]).collect())
        }
        async fn embed_query(&self, text: &str) -> Result<Embedding> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![text.len() as f32, 1.0])
        }
    }

    #[tokio::test]
    async fn query_memo_embeds_each_query_once() {
        let inner = Arc::new(Counting(Default::default()));
        let memo = QueryMemo::new(inner.clone());
        for q in ["a", "bb", "a", "bb", "a"] {
            assert_eq!(
                memo.embed_query(q).await.unwrap(),
                vec![q.len() as f32, 1.0]
            );
        }
        assert_eq!(inner.0.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(memo.model_id(), "counting");
        let docs = memo.embed_documents(&["abc".into()]).await.unwrap();
        assert_eq!(docs, vec![vec![3.0, 0.0]]);
    }
}
