//! # examples
//!
//! The `ragloop` command-line tool and the code behind it: thin drivers over `rag-core`'s
//! pipeline. `cargo run --release -p examples --bin ragloop -- run` runs the whole
//! train-to-inference loop locally on the bundled Linux man-page corpus.
//!
//! - [`bailian`]: `ragloop bailian deploy|status` on Model Studio.
//! - [`config`]: the loop's TOML configuration (which backend serves each stage).
//! - [`config_loop`]: the loop as a configuration describes it (`ragloop run --config`,
//!   `ingest`, `index`, `ask`), local or cloud per stage.
//! - [`cp`]: `ragloop cp`, recursive copies to and from OSS.
//! - [`embed`]: `ragloop embed`, the batch embedding job (documents → Parquet shards).
//! - [`eval`]: `ragloop eval`, BM25 / hashed / any models (dense and hybrid) on a query set,
//!   written as the evaluation report.
//! - [`exit`]: what `ragloop`'s exit statuses mean.
//! - [`logging`]: the binaries' log set-up (credentials never logged, even at `trace`).
//! - [`pai`]: `ragloop pai submit|status|logs|stop` on PAI-DLC.
//! - [`llm_answer`]: the answer step against any OpenAI-compatible LLM (example `llm_answer`).
//! - [`local_loop`]: the seven stages on the local backends, with retrieval metrics.
//! - [`progress`]: progress bars for the pipeline's [`rag_core::pipeline::Progress`].
//! - [`queries`]: reading evaluation query sets.
//! - [`report`]: the evaluation report (Markdown table + PNG chart of hit@k and nDCG@10).
//! - [`stores`]: which object store serves a command-line location.
//! - [`train`]: `ragloop train`, the embedding training job (hashed model or a BERT fine-tune).

pub mod bailian;
pub mod config;
pub mod config_loop;
pub mod cp;
pub mod embed;
pub mod eval;
pub mod exit;
pub mod llm_answer;
pub mod local_loop;
pub mod logging;
pub mod pai;
pub mod progress;
pub mod queries;
pub mod report;
pub mod stores;
pub mod train;
