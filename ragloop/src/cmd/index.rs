//! `ragloop index`: stage 6 for the configuration's (served) embedding model.

use anyhow::Result;
use ragloop::config::Which;

use super::{LoopArgs, print_stage, progress};

/// Arguments of `ragloop index`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: LoopArgs,
}

/// Indexes the shards.
pub async fn run(args: Args) -> Result<()> {
    let runner = args.common.connect().await?;
    let model = runner.served_model().await?;
    let stage = runner
        .index(
            model.model.as_ref(),
            Which::Served,
            progress(args.common.json),
        )
        .await?;
    print_stage(&stage, args.common.json)
}
