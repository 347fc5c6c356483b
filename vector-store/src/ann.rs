//! The embedded index: [`rag_core::local::LocalVectorIndex`] (records, filters, persisted
//! segments) with tantivy for BM25 ([`crate::fulltext`]) and, for corpora that outgrow exact
//! search, ragloop's HNSW graphs ([`crate::hnsw`]) for vector queries.

use std::path::Path;
use std::sync::Arc;

use rag_core::local::ann::{AnnFactory, AnnGraph};
use rag_core::local::{LocalIndexOptions, LocalVectorIndex};
use rag_core::{IndexSchema, Result};

use crate::hnsw::Hnsw;

/// Parameters of the HNSW graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Neighbours per node (HNSW `M`).
    pub connectivity: usize,
    /// Candidate list while inserting (HNSW `ef_construction`).
    pub expansion_add: usize,
    /// Below this many records searches stay exact.
    pub exact_below: usize,
    /// Threads an insert uses (0: one per core). The graph is the same for any number.
    pub threads: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            exact_below: 1_000,
            threads: 0,
        }
    }
}

/// Makes HNSW graphs (f32 vectors, the schema's metric) for a [`LocalVectorIndex`].
#[derive(Debug, Clone, Default)]
pub struct HnswGraphs {
    /// Graph parameters.
    pub params: AnnParams,
}

impl HnswGraphs {
    /// Graphs with `params`.
    pub fn new(params: AnnParams) -> Self {
        Self { params }
    }
}

/// Opens an embedded ANN index persisted under `dir`: BM25 on tantivy and filters, HNSW for
/// vector queries (graph saved as `ann.graph` beside each index's segments). The request's
/// `num_candidates` is the search breadth (`ef`).
///
/// ```no_run
/// # async fn demo() -> rag_core::Result<()> {
/// use rag_core::{IndexSchema, Metric, VectorIndex};
/// let index = vector_store::open_ann_index(".ragloop/ann", Default::default()).await?;
/// index.create_index(&IndexSchema::new("rag-index", 384, Metric::Cosine)).await?;
/// # Ok(()) }
/// ```
pub async fn open_ann_index(dir: impl AsRef<Path>, params: AnnParams) -> Result<LocalVectorIndex> {
    open_local_index(dir, Some(params)).await
}

/// Opens the embedded index persisted under `dir`: BM25 on tantivy (kept under each index's
/// `text/`), filters, and vector queries exact or, with `ann`, through HNSW graphs.
///
/// ```no_run
/// # async fn demo() -> rag_core::Result<()> {
/// use rag_core::{IndexSchema, Metric, VectorIndex};
/// let index = vector_store::open_local_index(".ragloop/index", None).await?;
/// index.create_index(&IndexSchema::new("rag-index", 384, Metric::Cosine)).await?;
/// # Ok(()) }
/// ```
pub async fn open_local_index(
    dir: impl AsRef<Path>,
    ann: Option<AnnParams>,
) -> Result<LocalVectorIndex> {
    LocalVectorIndex::open_with(dir.as_ref(), local_options(ann)).await
}

/// The embedded index's accelerators: tantivy text indexes, and HNSW graphs with `ann`.
pub fn local_options(ann: Option<AnnParams>) -> LocalIndexOptions {
    LocalIndexOptions {
        ann: ann.map(|p| Arc::new(HnswGraphs::new(p)) as Arc<dyn AnnFactory>),
        text: Some(Arc::new(crate::TantivyText)),
    }
}

impl AnnFactory for HnswGraphs {
    fn create(&self, schema: &IndexSchema) -> Result<Box<dyn AnnGraph>> {
        Ok(Box::new(
            Hnsw::new(
                schema.dims,
                schema.metric,
                self.params.connectivity,
                self.params.expansion_add,
            )
            .with_threads(self.params.threads),
        ))
    }

    fn load(&self, schema: &IndexSchema, path: &Path) -> Result<Box<dyn AnnGraph>> {
        Ok(Box::new(
            Hnsw::load(path, schema.dims, schema.metric)?.with_threads(self.params.threads),
        ))
    }

    fn exact_below(&self) -> usize {
        self.params.exact_below
    }
}
