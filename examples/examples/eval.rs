//! Retrieval quality on a query set, as `ragloop eval` reports it: BM25, the hashed model and
//! any sentence-transformers models (dense and hybrid), written as a Markdown table and a PNG
//! chart (hit@k curves and nDCG@10).
//!
//! `cargo run --release -p examples --example eval [-- --model models/all-MiniLM-L6-v2]`
//! (the flags of `ragloop eval`; defaults: the bundled man pages and their test queries).

use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use ragloop::eval::{EvalArgs, EvalSummary};
use ragloop::progress::BarProgress;

/// The example's flags: `ragloop eval`'s.
#[derive(Debug, Parser)]
pub struct Opts {
    #[command(flatten)]
    args: EvalArgs,
}

/// Evaluates and writes the report.
pub async fn run(args: &EvalArgs) -> Result<EvalSummary> {
    ragloop::eval::run(args, Arc::new(BarProgress::quiet())).await
}

#[allow(dead_code)] // the test that includes this file calls `run` only
fn main() -> Result<()> {
    let opts = Opts::parse();
    let summary = tokio::runtime::Runtime::new()?.block_on(run(&opts.args))?;
    print!("{}", std::fs::read_to_string(&summary.report)?);
    println!("\nChart: {}", summary.chart.display());
    Ok(())
}
