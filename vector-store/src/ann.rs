//! The embedded ANN index: [`rag_core::local::LocalVectorIndex`] (records, BM25, filters,
//! persisted segments) with HNSW graphs from [USearch](https://github.com/unum-cloud/USearch)
//! for vector queries.

use std::path::Path;
use std::sync::Arc;

use rag_core::local::LocalVectorIndex;
use rag_core::local::ann::{AnnFactory, AnnGraph, KeyFilter};
use rag_core::{Error, IndexSchema, Metric, Result};
use usearch::ffi::{IndexOptions, MetricKind, ScalarKind};

const BACKEND: &str = "usearch";

fn usearch_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::backend_msg(BACKEND, format!("{what}: {e}"))
}

/// Parameters of the HNSW graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Neighbours per node (HNSW `M`).
    pub connectivity: usize,
    /// Candidate list while inserting (HNSW `ef_construction`).
    pub expansion_add: usize,
    /// Threads that insert a batch.
    pub threads: usize,
    /// Below this many records searches stay exact.
    pub exact_below: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            connectivity: 16,
            expansion_add: 128,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            exact_below: 1_000,
        }
    }
}

/// Makes USearch HNSW graphs (f32 vectors, the schema's metric) for a [`LocalVectorIndex`].
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

/// Opens an embedded ANN index persisted under `dir`: exact BM25 and filters, HNSW for vector
/// queries (graph saved as `ann.graph` beside each index's segments). The request's
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
    LocalVectorIndex::open_with_ann(dir.as_ref(), Arc::new(HnswGraphs::new(params))).await
}

impl AnnFactory for HnswGraphs {
    fn create(&self, schema: &IndexSchema) -> Result<Box<dyn AnnGraph>> {
        let options = IndexOptions {
            dimensions: schema.dims,
            metric: match schema.metric {
                Metric::Cosine => MetricKind::Cos,
                Metric::Dot => MetricKind::IP,
                Metric::L2 => MetricKind::L2sq,
            },
            quantization: ScalarKind::F32,
            connectivity: self.params.connectivity,
            expansion_add: self.params.expansion_add,
            expansion_search: 0,
            multi: false,
        };
        let index =
            usearch::Index::new(&options).map_err(|e| usearch_error("creating a graph", e))?;
        Ok(Box::new(Graph {
            index,
            metric: schema.metric,
            threads: self.params.threads.max(1),
        }))
    }

    fn load(&self, schema: &IndexSchema, path: &Path) -> Result<Box<dyn AnnGraph>> {
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::invalid(format!("{} is not UTF-8", path.display())))?;
        let index = usearch::Index::restore(path_str)
            .map_err(|e| usearch_error(&format!("loading {}", path.display()), e))?;
        if index.dimensions() != schema.dims {
            return Err(Error::DimensionMismatch {
                expected: schema.dims,
                actual: index.dimensions(),
            });
        }
        Ok(Box::new(Graph {
            index,
            metric: schema.metric,
            threads: self.params.threads.max(1),
        }))
    }

    fn exact_below(&self) -> usize {
        self.params.exact_below
    }
}

struct Graph {
    index: usearch::Index,
    metric: Metric,
    threads: usize,
}

impl Graph {
    /// USearch distance → the metric's similarity (`Cos` and `IP` are `1 − x`).
    fn similarity(&self, distance: f32) -> f32 {
        match self.metric {
            Metric::Cosine | Metric::Dot => 1.0 - distance,
            Metric::L2 => -distance.max(0.0).sqrt(),
        }
    }
}

impl AnnGraph for Graph {
    fn add_batch(&self, items: &[(u64, &[f32])]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let needed = self.index.size() + items.len();
        if needed > self.index.capacity() {
            let capacity = needed.max(self.index.capacity() * 3 / 2);
            self.index
                .reserve_capacity_and_threads(capacity, self.threads)
                .map_err(|e| usearch_error("reserving capacity", e))?;
        }
        let chunk = items.len().div_ceil(self.threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = items
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .try_for_each(|(key, v)| self.index.add(*key, v))
                            .map_err(|e| usearch_error("adding a vector", e))
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| Error::backend_msg(BACKEND, "an insert thread panicked"))?
            })
        })
    }

    fn remove(&self, key: u64) -> Result<()> {
        self.index
            .remove(key)
            .map(|_| ())
            .map_err(|e| usearch_error("removing a vector", e))
    }

    fn rename(&self, from: u64, to: u64) -> Result<()> {
        self.index
            .rename(from, to)
            .map(|_| ())
            .map_err(|e| usearch_error("renaming a key", e))
    }

    fn search(
        &self,
        query: &[f32],
        n: usize,
        ef: usize,
        keep: Option<KeyFilter<'_>>,
    ) -> Result<Vec<(u64, f32)>> {
        // USearch searches with breadth max(expansion, count): asking for `ef` results sets
        // the breadth per call without touching shared state.
        let count = ef.max(n);
        let found = match keep {
            None => self.index.search(query, count),
            Some(keep) => self.index.filtered_search(query, count, keep),
        }
        .map_err(|e| usearch_error("searching", e))?;
        Ok(found
            .keys
            .into_iter()
            .zip(found.distances)
            .take(n)
            .map(|(k, d)| (k, self.similarity(d)))
            .collect())
    }

    fn len(&self) -> usize {
        self.index.size()
    }

    fn save(&self, path: &Path) -> Result<()> {
        let path_str = path
            .to_str()
            .ok_or_else(|| Error::invalid(format!("{} is not UTF-8", path.display())))?;
        self.index
            .save(path_str)
            .map_err(|e| usearch_error(&format!("saving {}", path.display()), e))
    }
}
