//! What `ragloop`'s exit status says, so scripts can tell a bad invocation from a missing
//! credential from an outage.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | done |
//! | 1 | failed (a job, a stage, a file, a record) |
//! | 2 | bad invocation, configuration or input (fix the call; clap uses 2 for flags too) |
//! | 3 | credentials missing or refused (the message names the variable) |
//! | 4 | something named does not exist (a bucket, a job, a model, an index) |
//! | 5 | a service is unavailable, throttling or timing out (retry later) |

use std::fmt;

/// Done.
pub const OK: u8 = 0;
/// Failed.
pub const FAILURE: u8 = 1;
/// Bad invocation, configuration or input.
pub const USAGE: u8 = 2;
/// Credentials missing or refused.
pub const CREDENTIALS: u8 = 3;
/// Not found.
pub const NOT_FOUND: u8 = 4;
/// Service unavailable, throttled or timed out.
pub const UNAVAILABLE: u8 = 5;

/// A configuration or invocation mistake (exit status [`USAGE`]).
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The exit status for `err`: the first typed cause in its chain decides.
pub fn code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return USAGE;
        }
        if let Some(e) = cause.downcast_ref::<rag_core::Error>() {
            return match e {
                rag_core::Error::InvalidInput { .. }
                | rag_core::Error::DimensionMismatch { .. } => USAGE,
                rag_core::Error::Auth { .. } => CREDENTIALS,
                rag_core::Error::NotFound { .. } => NOT_FOUND,
                rag_core::Error::RateLimited { .. }
                | rag_core::Error::Timeout { .. }
                | rag_core::Error::Unavailable { .. } => UNAVAILABLE,
                _ => FAILURE,
            };
        }
    }
    FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_typed_cause_decides() {
        let auth = anyhow::Error::new(rag_core::Error::Auth {
            message: "X is not set".into(),
        })
        .context("OSS needs an AccessKey");
        assert_eq!(code(&auth), CREDENTIALS);
        let usage = anyhow::Error::new(UsageError("line 2: unknown field".into())).context("in f");
        assert_eq!(code(&usage), USAGE);
        assert_eq!(code(&anyhow::anyhow!("job failed")), FAILURE);
        let missing = anyhow::Error::new(rag_core::Error::not_found("bucket b"));
        assert_eq!(code(&missing), NOT_FOUND);
    }
}
