//! `ragloop ingest`: stage 1.

use std::path::PathBuf;

use anyhow::Result;

use super::{LoopArgs, print_stage, progress};

/// Arguments of `ragloop ingest`.
#[derive(clap::Args)]
pub struct Args {
    /// The documents (default: the configuration's `data`).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    common: LoopArgs,
}

/// Uploads the documents.
pub async fn run(args: Args) -> Result<()> {
    let runner = args.common.connect().await?;
    let stage = runner
        .ingest(args.data.as_deref(), progress(args.common.json))
        .await?;
    print_stage(&stage, args.common.json)
}
