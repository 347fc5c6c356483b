//! `ragloop ingest`: stage 1.

use std::path::PathBuf;

use anyhow::Result;

use super::{ConfigArg, print_stage, progress};

/// Arguments of `ragloop ingest`.
#[derive(clap::Args)]
pub struct Args {
    /// The documents (default: the configuration's `data`).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    config: ConfigArg,
    /// Print the stage's summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Uploads the documents.
pub async fn run(args: Args) -> Result<()> {
    let runner = args.config.connect().await?;
    let stage = runner
        .ingest(args.data.as_deref(), progress(args.json))
        .await?;
    print_stage(&stage, args.json)
}
