//! Real local backends: the same pipeline runs on a laptop with no cloud account.
//!
//! | trait | backend | what it really does |
//! |---|---|---|
//! | [`ObjectStore`](crate::ObjectStore) | [`LocalFileStore`], [`InMemoryStore`] | files under a root dir with atomic writes; a map in memory |
//! | [`VectorIndex`](crate::VectorIndex) | [`LocalVectorIndex`] | exact cosine/dot/L2 search (or an [`ann::AnnGraph`] such as `vector-store`'s HNSW), BM25 (in memory, or a [`fulltext::TextIndex`] such as `vector-store`'s tantivy one), RRF hybrid, filters, persisted segments |
//! | [`TrainingBackend`](crate::TrainingBackend) | [`LocalProcessBackend`] | runs each job's command as a local process with logs, status and stop |
//! | [`EmbeddingModel`](crate::EmbeddingModel) | [`HashedEmbedding`] | feature-hashed word and bigram TF-IDF vectors; IDF fitted on the corpus |
//! | [`ChatModel`](crate::ChatModel) | [`ExtractiveChat`] | answers with the context sentences that best match the question, citing chunk ids |
//! | [`ModelDeployer`](crate::ModelDeployer) | [`LocalDeployer`] | a registry file of deployed model names and paths |

pub mod ann;
mod bm25;
mod deployer;
mod extractive_chat;
mod fs_store;
pub mod fulltext;
mod hashed_embedding;
mod lock;
mod memory_store;
mod process_backend;
mod vector_index;

pub use bm25::Bm25;
pub use deployer::LocalDeployer;
pub use extractive_chat::ExtractiveChat;
pub use fs_store::LocalFileStore;
pub use hashed_embedding::{HashedEmbedding, HashedEmbeddingConfig, HashedTrainingReport};
pub use lock::DirLock;
pub use memory_store::InMemoryStore;
pub use process_backend::LocalProcessBackend;
pub use vector_index::{LocalIndexOptions, LocalVectorIndex};

#[cfg(test)]
mod conformance_tests;
