//! # vector-store
//!
//! Search back-ends for ragloop (seed steps 6 and 7: `PUT /rag-index` with a `dense_vector`
//! mapping, `POST /rag-index/_search` with `knn`).
//!
//! - [`SearchIndex`]: a [`rag_core::VectorIndex`] on **Elasticsearch 8.x** (`dense_vector` +
//!   HNSW, top-level `knn`, hybrid through `retriever.rrf`) and **OpenSearch 2.x**
//!   (`knn_vector` on lucene HNSW, `knn` query, `hybrid` query + normalisation pipeline), with a
//!   client-side RRF fallback, sized `_bulk` loads with per-item errors and retries, and
//!   zero-downtime re-indexing through [`SearchIndex::swap_alias`]. Transport and auth come
//!   from the `opensearch` crate (basic auth or an Elasticsearch API key).
//! - [`open_local_index`]: the embedded index — [`rag_core::local::LocalVectorIndex`]
//!   (records, filters, persisted segments) with BM25 on tantivy ([`TantivyText`]) and, for
//!   corpora that outgrow exact search ([`open_ann_index`]), our own HNSW graphs
//!   ([`HnswGraphs`]) answering vector queries; both saved beside the segments.
//! - [`mapping`]: the create-index bodies, built from a [`rag_core::IndexSchema`].
//!
//! ```no_run
//! use rag_core::{IndexSchema, Metric, Query, SearchRequest, VectorIndex};
//! use vector_store::{Engine, SearchConfig, SearchIndex};
//! # async fn demo() -> rag_core::Result<()> {
//! let index = SearchIndex::new(SearchConfig::new("http://localhost:9200", Engine::Elasticsearch8))?;
//! index.create_index(&IndexSchema::new("rag-index", 768, Metric::Cosine)).await?;
//! let hits = index
//!     .search("rag-index", &SearchRequest::new(Query::Text("file descriptor".into()), 5))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ```
//! use rag_core::{IndexSchema, Metric};
//! use vector_store::{Engine, mapping};
//! let body = mapping(&IndexSchema::new("rag-index", 768, Metric::Cosine), Engine::Elasticsearch8);
//! assert_eq!(body["mappings"]["properties"]["embedding"]["type"], "dense_vector");
//! assert_eq!(body["mappings"]["properties"]["embedding"]["dims"], 768);
//! ```

mod ann;
mod config;
pub mod dsl;
pub mod fulltext;
mod hnsw;
mod mapping;
mod search_index;
mod transport;

pub use ann::{AnnParams, HnswGraphs, local_options, open_ann_index, open_local_index};
pub use config::{Auth, HybridMode, Refresh, SearchConfig};
pub use fulltext::TantivyText;
pub use mapping::{
    EMBEDDING_FIELD, Engine, HnswParams, META_KEY, TEXT_FIELD, analyzer_plugin, mapping,
    mapping_with, schema_from_mapping, text_analyzer_of,
};
pub use search_index::SearchIndex;
