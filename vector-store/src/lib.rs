//! # vector-store
//!
//! Search back-ends for ragloop (seed steps 6 and 7: `PUT /rag-index` with a `dense_vector`
//! mapping, `POST /rag-index/_search` with `knn`).
//!
//! **Status:** the index mappings for Elasticsearch 8 and OpenSearch 2 ([`mapping`]), built from
//! a [`rag_core::IndexSchema`]. What comes next (see the vector-store issue): a
//! [`rag_core::VectorIndex`] for each engine (bulk loading from Parquet with per-item errors,
//! kNN, hybrid RRF) and a fast embedded ANN index. Until then the pipeline uses
//! [`rag_core::local::LocalVectorIndex`] (exact search, BM25, RRF).
//!
//! ```
//! use rag_core::{IndexSchema, Metric};
//! use vector_store::{Engine, mapping};
//! let body = mapping(&IndexSchema::new("rag-index", 768, Metric::Cosine), Engine::Elasticsearch8);
//! assert_eq!(body["mappings"]["properties"]["embedding"]["type"], "dense_vector");
//! assert_eq!(body["mappings"]["properties"]["embedding"]["dims"], 768);
//! ```

mod mapping;

pub use mapping::{EMBEDDING_FIELD, Engine, HnswParams, TEXT_FIELD, mapping, mapping_with};
