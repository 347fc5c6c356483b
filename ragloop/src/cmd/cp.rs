//! `ragloop cp`: recursive copies between a local directory and OSS, with a progress bar and
//! a summary; exits non-zero if any file failed.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use oss_client::cp::{CpEvent, CpOptions, CpSummary, download_prefix, upload_dir};
use rag_core::StoreUri;

use ragloop::stores::OssArgs;

/// Arguments of `ragloop cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a local directory or an `oss://bucket/prefix/` URI.
    pub source: String,
    /// Destination: an `oss://bucket/prefix/` URI or a local directory.
    pub destination: String,
    /// Recursive (the only mode; accepted for ossutil compatibility).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Copy only paths matching this glob (repeatable).
    #[arg(long)]
    pub include: Vec<String>,
    /// Leave out paths matching this glob (repeatable).
    #[arg(long)]
    pub exclude: Vec<String>,
    /// Files copied at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
    /// Copy even files that are already at the destination.
    #[arg(long)]
    pub force: bool,
    /// Where OSS is.
    #[command(flatten)]
    pub oss: OssArgs,
}

/// Runs the copy described by `args`.
pub async fn run(args: CpArgs) -> Result<()> {
    let (local, remote, upload) = match (
        args.source.parse::<StoreUri>(),
        args.destination.parse::<StoreUri>(),
    ) {
        (Err(_), Ok(dst)) => (PathBuf::from(&args.source), dst, true),
        (Ok(src), Err(_)) => (PathBuf::from(&args.destination), src, false),
        _ => bail!("one side of cp must be a local path and the other an oss:// URI"),
    };
    let store = args.oss.store()?;
    let opts = CpOptions {
        include: args.include,
        exclude: args.exclude,
        concurrency: args.jobs,
        skip_unchanged: !args.force,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} files {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress = |e: CpEvent| match e {
        CpEvent::Planned { files, .. } => bar.set_length(files as u64),
        CpEvent::Copied { path, .. } | CpEvent::Skipped { path, .. } => {
            bar.set_message(path);
            bar.inc(1);
        }
        CpEvent::Failed { path, error } => {
            // `println` on a hidden bar (stderr not a terminal) prints nothing.
            if bar.is_hidden() {
                eprintln!("failed: {path}: {error}");
            } else {
                bar.println(format!("failed: {path}: {error}"));
            }
            bar.inc(1);
        }
    };
    let summary = if upload {
        upload_dir(&store, &local, &remote, &opts, &progress).await?
    } else {
        download_prefix(&store, &remote, &local, &opts, &progress).await?
    };
    bar.finish_and_clear();
    println!("{}", describe(&summary));
    if !summary.is_complete() {
        bail!("{} of {} files failed", summary.failed.len(), summary.files);
    }
    Ok(())
}

fn describe(s: &CpSummary) -> String {
    format!(
        "{} files: {} copied ({} bytes), {} unchanged, {} failed",
        s.files,
        s.copied,
        s.bytes,
        s.skipped,
        s.failed.len()
    )
}
