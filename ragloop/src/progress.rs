//! Progress of the pipeline's long stages: on a terminal a bar per stage (with rate and ETA);
//! otherwise (CI logs, pipes, job logs) a line every few seconds with done/total, rate and ETA,
//! so a long stage always shows life. Either way one line per finished stage.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rag_core::pipeline::{Progress, Stage};

/// How often a stage's line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// One running stage.
#[derive(Debug)]
struct Running {
    bar: ProgressBar,
    started: Instant,
    total: Option<u64>,
    done: u64,
    last_line: Instant,
}

/// Characters of a job's log line shown by [`BarProgress`]'s notes.
const NOTE_CHARS: usize = 160;

/// Draws [`indicatif`] bars (or periodic lines off a terminal) and prints a line when a
/// stage ends.
#[derive(Debug)]
pub struct BarProgress {
    stages: Mutex<HashMap<Stage, Running>>,
    quiet: bool,
    terminal: bool,
}

impl Default for BarProgress {
    fn default() -> Self {
        Self {
            stages: Mutex::default(),
            quiet: false,
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl BarProgress {
    /// Progress that prints stage lines to stderr.
    pub fn new() -> Self {
        Self::default()
    }

    /// Progress that draws bars but prints no lines (for `--json`).
    pub fn quiet() -> Self {
        Self {
            quiet: true,
            ..Self::default()
        }
    }
}

/// `done/total (p %), rate/s, ETA` of a stage, as a periodic line says it.
fn status_line(stage: Stage, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = done as f64 / secs;
    match total {
        Some(total) if total > 0 => {
            let left = total.saturating_sub(done) as f64;
            let eta = if rate > 0.0 {
                format!("ETA {:.0}s", left / rate)
            } else {
                "ETA ?".into()
            };
            format!(
                "[{stage}] {done}/{total} ({:.0} %), {rate:.1}/s, {eta}",
                100.0 * done as f64 / total as f64
            )
        }
        _ => format!("[{stage}] {done} done, {rate:.1}/s, {secs:.0}s so far"),
    }
}

impl Progress for BarProgress {
    fn begin(&self, stage: Stage, total: Option<u64>) {
        let bar = if !self.terminal {
            ProgressBar::hidden()
        } else {
            match total {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template(
                        "{prefix:>20} [{bar:30}] {pos}/{len} {per_sec} ({eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner(),
            }
        };
        bar.set_prefix(stage.to_string());
        let now = Instant::now();
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        stages.insert(
            stage,
            Running {
                bar,
                started: now,
                total,
                done: 0,
                last_line: now,
            },
        );
    }

    fn advance(&self, stage: Stage, n: u64) {
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = stages.get_mut(&stage) else {
            return;
        };
        r.bar.inc(n);
        r.done += n;
        if !self.terminal && !self.quiet && r.last_line.elapsed() >= LINE_EVERY {
            r.last_line = Instant::now();
            eprintln!(
                "{}",
                status_line(stage, r.done, r.total, r.started.elapsed())
            );
        }
    }

    fn note(&self, stage: Stage, line: &str) {
        // A job of this program prints its own `[stage] …` lines: shown once prefixed.
        let own = format!("[{stage}] ");
        let line = line.strip_prefix(&own).unwrap_or(line);
        // A job's log line can be a whole table row of numbers: one screen line of it.
        let line = match line.char_indices().nth(NOTE_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        };
        let line = line.as_str();
        let stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        match stages.get(&stage) {
            Some(r) if self.terminal => r.bar.set_message(line.to_string()),
            _ if !self.quiet && !self.terminal => eprintln!("[{stage}] job: {line}"),
            _ => {}
        }
    }

    fn end(&self, stage: Stage, summary: &str) {
        let mut stages = self.stages.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = match stages.remove(&stage) {
            Some(r) => {
                r.bar.finish_and_clear();
                format!(" ({:.1}s)", r.started.elapsed().as_secs_f64())
            }
            None => String::new(),
        };
        if !self.quiet {
            eprintln!("[{stage}] {summary}{elapsed}");
        }
    }
}

/// Progress of a download of `what` as [`embed_runtime::pretrained::Pretrained::fetch`]
/// reports it (bytes so far, total): a bar with rate and ETA on a terminal, else a line every
/// few seconds.
pub fn download(what: &str) -> impl Fn(u64, Option<u64>) + Send + Sync + use<> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "{prefix:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        )
    } else {
        ProgressBar::hidden()
    };
    bar.set_prefix(what.to_string());
    let what = what.to_string();
    let started = Instant::now();
    let last_line = Mutex::new(started);
    move |done, total| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
        if total == Some(done) {
            bar.finish_and_clear();
        }
        let mut last = last_line.lock().unwrap_or_else(|p| p.into_inner());
        if !terminal && (last.elapsed() >= LINE_EVERY || total == Some(done)) {
            *last = Instant::now();
            let mb = |b: u64| b as f64 / 1e6;
            let rate = mb(done) / started.elapsed().as_secs_f64().max(1e-9);
            match total {
                Some(t) => eprintln!(
                    "[{what}] {:.1}/{:.1} MB ({:.0} %), {rate:.1} MB/s",
                    mb(done),
                    mb(t),
                    100.0 * done as f64 / t.max(1) as f64
                ),
                None => eprintln!("[{what}] {:.1} MB, {rate:.1} MB/s", mb(done)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_done_total_rate_and_eta() {
        let line = status_line(Stage::Embed, 250, Some(1000), Duration::from_secs(10));
        assert_eq!(line, "[5. embed] 250/1000 (25 %), 25.0/s, ETA 30s");
        let open = status_line(Stage::Index, 40, None, Duration::from_secs(4));
        assert_eq!(open, "[6. index] 40 done, 10.0/s, 4s so far");
    }
}
