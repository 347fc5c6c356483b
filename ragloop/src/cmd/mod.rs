//! One module per command. `train` is the library's job (`ragloop::train`), called as it is;
//! `embed` and `eval` print what the library's functions return; `cp`, `pai` and `bailian` are
//! CLI-only.

pub mod ask;
pub mod bailian;
pub mod cp;
pub mod embed;
pub mod eval;
pub mod index;
pub mod ingest;
pub mod pai;
pub mod qa_pairs;
pub mod run;
pub mod serve;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use ragloop::LoopConfig;
use ragloop::progress::BarProgress;
use ragloop::runner::{Runner, StageLine};

/// Where the loop's configuration comes from (ingest, index, ask, qa-pairs, run).
#[derive(clap::Args)]
pub struct ConfigArg {
    /// The loop's configuration (TOML; see `ragloop/configs/`). Default: `./ragloop.toml`
    /// when it exists, else the local loop's settings (what `ragloop run` uses).
    #[arg(long, short = 'c', env = "RAGLOOP_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration it names.
    pub fn load(&self) -> Result<LoopConfig> {
        LoopConfig::load(self.config.as_deref())
    }

    /// The configuration's backends, connected.
    pub async fn connect(&self) -> Result<Runner> {
        Runner::connect(self.load()?, job_command()?).await
    }
}

/// The configuration and the output format of a loop command.
#[derive(clap::Args)]
pub struct LoopArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The quick offline mode's model (`--model hashed`), as `ragloop run --quick` used it.
    #[arg(long)]
    pub quick: bool,
    /// The working directory `run` used [config: work_dir; default: .ragloop].
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl LoopArgs {
    /// The configuration's backends with `--quick` / `--work-dir` applied, connected.
    pub async fn connect(&self) -> Result<Runner> {
        let overrides = ragloop::config::Overrides {
            model: self.quick.then(|| "hashed".to_string()),
            work_dir: self.work_dir.clone(),
            ..Default::default()
        };
        let config = self.config.load()?.with_overrides(overrides)?;
        Runner::connect(config, job_command()?).await
    }
}

/// The command local jobs run: this binary.
pub fn job_command() -> Result<Vec<String>> {
    let exe = std::env::current_exe().context("locating the ragloop binary")?;
    Ok(vec![exe.display().to_string()])
}

/// Bars and stage lines on stderr, or bars alone (`quiet`, for `--json`).
pub fn progress(quiet: bool) -> Arc<BarProgress> {
    Arc::new(if quiet {
        BarProgress::quiet()
    } else {
        BarProgress::new()
    })
}

/// One stage's line, as text or JSON; an error (exit status 1) after it when the stage could
/// not take some of its inputs.
pub fn print_stage(stage: &StageLine, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(stage)?);
    } else {
        print!(
            "{}",
            ragloop::render::render_stages(std::slice::from_ref(stage))
        );
    }
    ragloop::runner::failures(std::slice::from_ref(stage))
}
