//! `ragloop eval`: the evaluation report for BM25, the hashed model and any models.

use anyhow::{Context, Result};
use ragloop::eval::EvalArgs;

use super::progress;

/// Evaluates and prints the table (or JSON).
pub async fn run(args: EvalArgs) -> Result<()> {
    let summary = ragloop::eval::run(&args, progress(args.json)).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let report = std::fs::read_to_string(&summary.report)
            .with_context(|| format!("reading {}", summary.report.display()))?;
        print!("{report}");
        println!(
            "\nReport: {} (chart: {})",
            summary.report.display(),
            summary.chart.display()
        );
    }
    Ok(())
}
