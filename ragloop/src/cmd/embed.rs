//! `ragloop embed`: the batch embedding job.

use anyhow::Result;
use ragloop::embed::EmbedArgs;
use ragloop::progress::BarProgress;

/// Runs the job and prints its summary.
pub async fn run(args: EmbedArgs) -> Result<()> {
    let json = args.json;
    let progress = if json {
        BarProgress::quiet()
    } else {
        BarProgress::new()
    };
    let summary = ragloop::embed::run(args, &progress).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", ragloop::embed::render(&summary));
    }
    Ok(())
}
