//! The seed's loop on Alibaba Cloud, configured from environment variables (a `LoopConfig`
//! built in code; `ragloop run --config ragloop/configs/cloud.toml` is the same from a file).
//!
//! `cargo run --release -p examples --example cloud_loop [-- --dry-run]`
//!
//! | variable | stage | effect |
//! |---|---|---|
//! | `RAGLOOP_BUCKET` (required) | all | everything lives under `oss://<bucket>/` |
//! | `OSS_REGION`, `OSS_ENDPOINT` | 1 | OSS region (default `cn-hangzhou`) or an S3-compatible endpoint |
//! | `ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` | 1, 2, 5 | OSS and PAI credentials |
//! | `PAI_WORKSPACE_ID` + `PAI_IMAGE` | 2, 5 | jobs on PAI-DLC (else local processes) |
//! | `RAGLOOP_EMBED_MODEL` | 2, 5 | a sentence-transformers model prefix in the bucket (default: the hashed model) |
//! | `RAGLOOP_EMBED_TRAIN` | 2 | `none`, `idf`, `adapter` or `full` |
//! | `RAGLOOP_EMBED_WORKERS` | 5 | batch-embedding jobs (0: in this process) |
//! | `RAGLOOP_SEARCH_URL` (+ `RAGLOOP_SEARCH_ENGINE`) | 6 | Elasticsearch / OpenSearch (else the embedded HNSW index) |
//! | `DASHSCOPE_API_KEY` (+ `RAGLOOP_LLM_MODEL`) | 7 | answers with Bailian (else extractively) |
//! | `RAGLOOP_DATA` | 1 | the documents (default `data/manpages/docs`) |
//! | `RAGLOOP_BIN` | 2, 5 | the `ragloop` program local jobs run (default `ragloop` on `PATH`; `cargo install --path ragloop`) |
//!
//! With `--dry-run` it prints the plan and calls nothing; without a bucket it says so in one
//! line.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ragloop::config::{IndexBackend, JobsBackend, LlmBackend, LoopConfig, StoreBackend, Training};
use ragloop::progress::BarProgress;
use ragloop::runner::{self, Runner};

/// The configuration the variables describe (`get` reads one; `std::env::var` in `main`).
pub fn config_from_vars(get: impl Fn(&str) -> Option<String>) -> Result<LoopConfig> {
    let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let bucket = get("RAGLOOP_BUCKET")
        .context("RAGLOOP_BUCKET is not set (the OSS bucket the loop runs in)")?;
    let mut c = LoopConfig {
        root: format!("oss://{bucket}/").parse()?,
        work_dir: ".ragloop-cloud".into(),
        ..LoopConfig::default()
    };
    if let Some(data) = get("RAGLOOP_DATA") {
        c.data = data.into();
    }
    c.store.backend = StoreBackend::Oss;
    c.store.region = get("OSS_REGION");
    c.store.endpoint = get("OSS_ENDPOINT");
    if let (Some(ws), Some(image)) = (get("PAI_WORKSPACE_ID"), get("PAI_IMAGE")) {
        c.jobs.backend = JobsBackend::Pai;
        c.jobs.workspace_id = Some(ws);
        c.jobs.image = Some(image);
        c.jobs.region = get("PAI_REGION");
    }
    if let Some(model) = get("RAGLOOP_EMBED_MODEL") {
        c.embedding.model = model;
    }
    c.embedding.train = match get("RAGLOOP_EMBED_TRAIN").as_deref() {
        None => None,
        Some("none") => Some(Training::None),
        Some("idf") => Some(Training::Idf),
        Some("adapter") => Some(Training::Adapter),
        Some("full") => Some(Training::Full),
        Some(other) => bail!("RAGLOOP_EMBED_TRAIN={other}: use none, idf, adapter or full"),
    };
    if let Some(w) = get("RAGLOOP_EMBED_WORKERS") {
        c.embedding.workers = w
            .parse()
            .with_context(|| format!("RAGLOOP_EMBED_WORKERS={w} is not a number"))?;
    }
    c.index.backend = match (
        get("RAGLOOP_SEARCH_URL"),
        get("RAGLOOP_SEARCH_ENGINE").as_deref(),
    ) {
        (None, _) => IndexBackend::Hnsw,
        (Some(_), Some("opensearch" | "os")) => IndexBackend::Opensearch,
        (Some(_), _) => IndexBackend::Elasticsearch,
    };
    c.index.url = get("RAGLOOP_SEARCH_URL");
    if get("DASHSCOPE_API_KEY").is_some() {
        c.llm.backend = LlmBackend::Bailian;
        c.llm.model = get("RAGLOOP_LLM_MODEL");
    }
    c.validate()?;
    Ok(c)
}

#[allow(dead_code)] // the test that includes this file calls `config_from_vars` only
fn main() -> Result<()> {
    let dry_run = std::env::args().any(|a| a == "--dry-run");
    let config = match config_from_vars(|n| std::env::var(n).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cloud_loop: {e:#}");
            std::process::exit(2);
        }
    };
    let job_command = vec![std::env::var("RAGLOOP_BIN").unwrap_or_else(|_| "ragloop".into())];
    if dry_run {
        print!("{}", ragloop::plan::plan(&config, job_command)?);
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(async {
        ragloop::logging::init();
        let runner = Runner::connect(config, job_command).await?;
        let summary = runner::run(&runner, Arc::new(BarProgress::new())).await?;
        print!("{}", ragloop::render::render(&summary));
        Ok(())
    })
}
