//! # embed-runtime
//!
//! Fast CPU inference of sentence-transformers embedding models in pure Rust (seed step 5:
//! batch inference with the trained model, vectors saved as Parquet to `vector-indexes/`).
//!
//! **Status:** reading a sentence-transformers model directory's layout ([`ModelLayout`]):
//! which pooling, whether vectors are normalised, the maximum sequence length. What comes next
//! (see the embed-runtime issue): BERT-family encoders with `candle` + `tokenizers` implementing
//! [`rag_core::EmbeddingModel`], length-sorted batching, and a sharded Parquet batch job. Until
//! then the pipeline uses [`rag_core::local::HashedEmbedding`].
//!
//! ```no_run
//! let layout = embed_runtime::ModelLayout::read("models/all-MiniLM-L6-v2".as_ref())?;
//! println!("{:?} pooling, normalised: {}", layout.pooling, layout.normalize);
//! # Ok::<(), rag_core::Error>(())
//! ```

mod layout;

pub use layout::{ModelLayout, Pooling};
