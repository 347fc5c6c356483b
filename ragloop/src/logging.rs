//! Log set-up for the binaries: `RUST_LOG` picks the levels (default `warn`, the PDF parser's
//! libraries `error`), to stderr —
//! except that the AWS SDK's request dumps are capped at `debug`, whatever `RUST_LOG` says:
//! at `trace` `aws_sigv4` logs the canonical request and the orchestrator the request it
//! transmits, both with the `x-amz-security-token` header (the STS token) in clear.
//!
//! The cap is a second filter that every event must also pass, so it only ever lowers a level
//! (an `EnvFilter` directive would also raise it: `target=debug` added to the default `warn`
//! turned the SDK's debug logs on for every run).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Targets that log credentials at `trace`, with the most they may log.
const CAPPED: &[(&str, LevelFilter)] = &[
    ("aws_sigv4", LevelFilter::DEBUG),
    (
        "aws_smithy_runtime::client::orchestrator",
        LevelFilter::DEBUG,
    ),
];

/// What the user asked for: `RUST_LOG`, or `warn` — with the PDF libraries at `error`, since
/// a file they cannot read is already reported with its reason (`encrypted PDF …`).
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,lopdf=error,pdf_extract=error"))
}

/// The cap: everything passes except the `CAPPED` targets above their level.
pub fn cap() -> Targets {
    CAPPED.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |t, (target, level)| t.with_target(*target, *level),
    )
}

/// Installs the subscriber (stderr, [`filter`] and [`cap`]).
pub fn init() {
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter())
        .with_filter(cap());
    tracing_subscriber::registry().with(layer).init();
}
