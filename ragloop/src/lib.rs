//! # ragloop
//!
//! The train-to-inference loop as a library and a CLI: a [`LoopConfig`] (TOML) names the
//! backend of each of the seed's seven stages — local files or OSS, local processes or PAI-DLC,
//! the embedded index or Elasticsearch/OpenSearch, the extractive answerer or Bailian — and the
//! one [`runner`] runs them over `rag-core`'s [`Pipeline`](rag_core::pipeline::Pipeline).
//! `cargo install --path ragloop` installs the `ragloop` binary; `ragloop run` runs the whole
//! loop locally on the bundled Linux man-page corpus.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | the loop's configuration file, with defaults for every field |
//! | [`backends`] | the one backend factory: every backend a configuration names |
//! | [`stores`] | which store serves a location; the description jobs open the same store from |
//! | [`jobs`] | the jobs the loop submits (stage 2, 3 and stage-5 workers), built offline |
//! | [`runner`] | the seven stages and [`runner::run`] |
//! | [`plan`] | `--dry-run`: what `run` will do |
//! | [`evaluation`], [`report`], [`render`] | evaluation rows, the Markdown/PNG report, terminal output |
//! | [`train`], [`embed`] | the training and batch-embedding jobs (`ragloop train`, `ragloop embed`) |
//! | [`eval`] | `ragloop eval` (the CLI-only commands `cp`, `pai …`, `bailian …` live in the binary's `cmd/`) |
//! | [`progress`], [`logging`], [`exit`], [`queries`], [`llm_env`] | bars, logs, exit statuses, query sets, an LLM from the environment |
//!
//! The workspace crates are re-exported for users who want one dependency: [`rag_core`],
//! [`oss_client`], [`pai_client`], [`bailian_client`], [`vector_store`], [`embed_runtime`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use ragloop::config::{LoopConfig, Overrides};
//! use ragloop::runner::{self, Runner};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! // The local loop on your own documents; `ragloop` must be on PATH for the stage-2 job.
//! let config = LoopConfig::default().with_overrides(Overrides {
//!     data: Some("my-docs/".into()),
//!     ..Default::default()
//! })?;
//! let runner = Runner::connect(config, vec!["ragloop".into()]).await?;
//! let summary = runner::run(&runner, Arc::new(rag_core::LogProgress)).await?;
//! print!("{}", ragloop::render::render(&summary));
//! # Ok(()) }
//! ```

pub mod backends;
pub mod config;
pub mod embed;
pub mod eval;
pub mod evaluation;
pub mod exit;
pub mod jobs;
pub mod llm_env;
pub mod logging;
pub mod plan;
pub mod program;
pub mod progress;
pub mod queries;
pub mod render;
pub mod report;
pub mod runner;
pub mod serve;
pub mod stores;
pub mod train;

/// The parsers every command reads corpora with: JSONL and text, plus HTML, Markdown, PDF
/// and DOCX ([`doc_parsers::all`]).
pub fn parsers() -> rag_core::parse::Parsers {
    doc_parsers::all()
}

pub use bailian_client;
pub use config::LoopConfig;
pub use doc_parsers;
pub use embed_runtime;
pub use oss_client;
pub use pai_client;
pub use rag_core;
pub use vector_store;

/// A command-line size bounded to `lo..=hi`: a number outside is a usage error naming the
/// range (exit status 2) before anything runs, never a 4e9-dimension model or an OOM kill.
pub fn bounded(lo: u64, hi: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(lo..=hi)
}
