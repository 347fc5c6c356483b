//! Log set-up for the binaries: `RUST_LOG` picks the levels (default `warn`), to stderr —
//! except that the AWS SDK's request dumps are capped at `debug`, whatever `RUST_LOG` says:
//! at `trace` `aws_sigv4` logs the canonical request and the orchestrator the request it
//! transmits, both with the `x-amz-security-token` header (the STS token) in clear.

use tracing_subscriber::EnvFilter;

/// Targets that log credentials at `trace`, with the most they may log.
const CAPPED: &[&str] = &[
    "aws_sigv4=debug",
    "aws_smithy_runtime::client::orchestrator=debug",
];

/// The filter: `RUST_LOG` (or `warn`) with [`CAPPED`] applied last.
pub fn filter() -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    for directive in CAPPED {
        if let Ok(d) = directive.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the subscriber (stderr, [`filter`]).
pub fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .init();
}
