//! The seam for approximate nearest-neighbour search in [`LocalVectorIndex`]: the index keeps
//! records, BM25, filters and persistence; an [`AnnGraph`] (HNSW in `vector-store`) answers
//! vector queries once an index outgrows exact search. rag-core ships no graph itself, so it
//! stays free of native dependencies.
//!
//! [`LocalVectorIndex`]: super::LocalVectorIndex

use std::fmt::Debug;
use std::path::Path;

use crate::error::Result;
use crate::index::IndexSchema;

/// A predicate over graph keys: whether a key may be returned (metadata filters).
pub type KeyFilter<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// An ANN graph over `u64` keys. Mutations happen under the index's write lock; searches may
/// run concurrently.
pub trait AnnGraph: Send + Sync {
    /// Adds vectors (their keys are new).
    fn add_batch(&self, items: &[(u64, &[f32])]) -> Result<()>;
    /// Removes a key (absent keys are ignored).
    fn remove(&self, key: u64) -> Result<()>;
    /// Moves a vector from one key to another, unused key.
    fn rename(&self, from: u64, to: u64) -> Result<()>;
    /// Up to `n` `(key, similarity)` pairs nearest to `query`, best first, among keys `keep`
    /// accepts; `ef` is the search breadth (≥ `n`; larger finds more true neighbours).
    /// Similarities are on the schema metric's scale (cosine, dot, or −L2 distance), and may
    /// be approximate: a graph may keep its vectors at reduced precision (the index scores
    /// the candidates it returns again from the records).
    fn search(
        &self,
        query: &[f32],
        n: usize,
        ef: usize,
        keep: Option<KeyFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>>;
    /// Number of keys.
    fn len(&self) -> usize;
    /// Whether there are no keys.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the graph to `path` (the caller renames it into place).
    fn save(&self, path: &Path) -> Result<()>;
}

/// Makes and loads graphs for the indexes of a [`LocalVectorIndex`](super::LocalVectorIndex).
pub trait AnnFactory: Send + Sync + Debug {
    /// An empty graph for `schema`.
    fn create(&self, schema: &IndexSchema) -> Result<Box<dyn AnnGraph>>;
    /// A graph saved by [`AnnGraph::save`].
    fn load(&self, schema: &IndexSchema, path: &Path) -> Result<Box<dyn AnnGraph>>;
    /// Below this many records searches stay exact (they are fast and exact there).
    fn exact_below(&self) -> usize {
        1_000
    }
}
