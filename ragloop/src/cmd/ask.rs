//! `ragloop ask "question"`: stage 7 on the configuration's index and LLM.

use anyhow::Result;

use super::{LoopArgs, progress};

/// Arguments of `ragloop ask`.
#[derive(clap::Args)]
pub struct Args {
    /// The question.
    question: String,
    #[command(flatten)]
    common: LoopArgs,
}

/// Answers the question.
pub async fn run(args: Args) -> Result<()> {
    let runner = args.common.connect().await?;
    runner.load_fusion().await?;
    let model = runner.served_model().await?;
    let (_, answer) = runner
        .answer(model.model.as_ref(), &args.question, None, progress(true))
        .await?;
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", ragloop::render::render_answer(&answer));
    }
    Ok(())
}
