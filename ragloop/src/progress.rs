//! Terminal progress for the pipeline: a bar per stage (hidden when stderr is not a terminal)
//! and one line per finished stage.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rag_core::pipeline::{Progress, Stage};

/// Draws [`indicatif`] bars and prints a line when a stage ends.
#[derive(Debug, Default)]
pub struct BarProgress {
    bars: Mutex<HashMap<Stage, (ProgressBar, Instant)>>,
    quiet: bool,
}

impl BarProgress {
    /// Progress that prints stage lines to stderr.
    pub fn new() -> Self {
        Self::default()
    }

    /// Progress that draws bars but prints no stage lines (for `--json`).
    pub fn quiet() -> Self {
        Self {
            quiet: true,
            ..Self::default()
        }
    }
}

impl Progress for BarProgress {
    fn begin(&self, stage: Stage, total: Option<u64>) {
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{prefix:>20} [{bar:30}] {pos}/{len} ({eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner(),
        };
        bar.set_prefix(stage.to_string());
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.insert(stage, (bar, Instant::now()));
    }

    fn advance(&self, stage: Stage, n: u64) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((bar, _)) = bars.get(&stage) {
            bar.inc(n);
        }
    }

    fn end(&self, stage: Stage, summary: &str) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = match bars.remove(&stage) {
            Some((bar, t)) => {
                bar.finish_and_clear();
                format!(" ({:.1}s)", t.elapsed().as_secs_f64())
            }
            None => String::new(),
        };
        if !self.quiet {
            eprintln!("[{stage}] {summary}{elapsed}");
        }
    }
}
