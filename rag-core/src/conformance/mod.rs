//! Shared conformance suites: one per trait, run by every backend's tests (local ones here,
//! cloud ones over wiremock or a real local server in their crates).
//!
//! Each suite is a set of `async fn`s taking the backend as a trait object; they panic with a
//! message naming the broken contract. `run_all` runs every check of a suite.
//!
//! ```text
//! #[tokio::test]
//! async fn my_store_conforms() {
//!     let store = MyStore::new(..);
//!     rag_core::conformance::object_store::run_all(&store, &"s3://test-bucket/conf/".parse().unwrap()).await;
//! }
//! ```

// The suites are assertions: a failed step is a failed contract, reported by panicking.
#![allow(clippy::unwrap_used)]

pub mod chat;
pub mod deploy;
pub mod embedding;
pub mod http_faults;
pub mod object_store;
pub mod rerank;
pub mod sync;
pub mod training;
pub mod vector_index;
