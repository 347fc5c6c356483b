//! # rag-core
//!
//! The shared vocabulary of ragloop: the traits every backend implements, their types and one
//! error type, the generic train-to-inference [`pipeline`], and real local backends so that the
//! whole loop runs on a laptop.
//!
//! | seed step | trait | local backend |
//! |---|---|---|
//! | 1 ingest to OSS | [`ObjectStore`] | [`local::LocalFileStore`], [`local::InMemoryStore`] |
//! | 2 train embeddings, 3 fine-tune LLM | [`TrainingBackend`] | [`local::LocalProcessBackend`] |
//! | 4 deploy | [`ModelDeployer`] | [`local::LocalDeployer`] |
//! | 2, 5, 7 embed | [`EmbeddingModel`] | [`local::HashedEmbedding`] |
//! | 6 index, 7 retrieve | [`VectorIndex`] | [`local::LocalVectorIndex`] |
//! | 7 answer | [`ChatModel`] | [`local::ExtractiveChat`] |
//!
//! Cloud crates (`oss-client`, `pai-client`, `bailian-client`, `vector-store`) implement the
//! same traits; the pipeline never names a vendor. Every backend runs the shared
//! `conformance` suites (feature `conformance`).
//!
//! ```
//! use rag_core::local::{HashedEmbedding, HashedEmbeddingConfig, LocalVectorIndex};
//! use rag_core::{EmbeddingModel, IndexRecord, IndexSchema, Metric, Query, SearchRequest, VectorIndex};
//!
//! # tokio_test();
//! # fn tokio_test() { tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let model = HashedEmbedding::new(HashedEmbeddingConfig::default())?;
//! let index = LocalVectorIndex::in_memory();
//! index.create_index(&IndexSchema::new("docs", model.dims(), Metric::Cosine)).await?;
//! let texts = ["dup duplicates a file descriptor", "socket creates an endpoint"];
//! let vectors = model.embed_documents(&texts.map(String::from)).await?;
//! let records = texts.iter().zip(vectors).enumerate().map(|(i, (t, v))| IndexRecord {
//!     id: i.to_string(), vector: v, text: t.to_string(), metadata: Default::default(),
//! }).collect();
//! assert!(index.upsert("docs", records).await?.is_complete());
//! let q = model.embed_query("copy a file descriptor").await?;
//! let hits = index.search("docs", &SearchRequest::new(Query::Vector(q), 1)).await?;
//! assert_eq!(hits[0].id, "0");
//! # Ok::<(), rag_core::Error>(()) }).unwrap() }
//! ```

pub mod chat;
pub mod chunk;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod deploy;
pub mod embed_job;
pub mod embedding;
pub mod error;
pub mod eval;
pub mod index;
pub mod loader;
pub mod local;
pub mod parse;
pub mod pipeline;
pub mod prompt;
pub mod qa;
pub mod rerank;
pub mod retry;
pub mod secret;
pub mod stage;
pub mod store;
pub mod text;
pub mod training;
pub mod uri;
pub mod vectors;

pub use chat::{ChatEvent, ChatModel, ChatParams, ChatRequest, ChatResponse, Message, Role, Usage};
pub use chunk::{Chunk, ChunkKey, Chunker, Document};
pub use deploy::{DeploySpec, Deployment, DeploymentStatus, ModelDeployer};
pub use embedding::{Embedding, EmbeddingModel, QueryMemo};
pub use error::{Error, Result};
pub use index::{
    FieldKind, FieldValue, Filter, Fusion, IndexRecord, IndexSchema, ItemError, MAX_DIMS, MAX_K,
    Metadata, Metric, Query, SearchHit, SearchRequest, UpsertReport, VectorIndex, convex_fuse,
    fuse, rrf_fuse,
};
pub use rerank::Reranker;
pub use retry::RetryPolicy;
pub use secret::{AccessKey, Secret};
pub use stage::{LogProgress, Progress, Stage};
pub use store::{ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult};
pub use text::Analyzer;
pub use training::{
    JOB_RECORD, JobId, JobKind, JobRecord, JobSpec, JobStatus, SUCCESS_MARKER, TrainingBackend,
    WaitOptions,
};
pub use uri::{Scheme, StoreUri};
