//! The one error type every trait in `rag-core` returns.
//!
//! Backends convert their own errors (HTTP statuses, vendor error codes, I/O errors) into these
//! variants at the trait boundary so that callers can match on *what* went wrong without knowing
//! *which* backend they talk to.

use std::time::Duration;

/// A boxed error kept as the cause of a [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors shared by every `rag-core` trait.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The named object, index, job or deployment does not exist.
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for (a URI, an index name, a job id …).
        what: String,
    },
    /// The thing to be created exists already with a different definition.
    #[error("already exists: {what}")]
    AlreadyExists {
        /// What exists already.
        what: String,
    },
    /// The caller passed something the backend cannot accept.
    #[error("invalid input: {message}")]
    InvalidInput {
        /// Why it was rejected.
        message: String,
    },
    /// A vector's length differs from the dimension the index or model expects.
    #[error("dimension mismatch: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// The dimension of the index or model.
        expected: usize,
        /// The dimension that was given.
        actual: usize,
    },
    /// Credentials are missing, wrong or lack permission.
    #[error("authentication failed: {message}")]
    Auth {
        /// The backend's explanation (never the credential itself).
        message: String,
    },
    /// The backend throttled the request.
    #[error("rate limited{}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    RateLimited {
        /// How long the backend asked the caller to wait, when it said so.
        retry_after: Option<Duration>,
    },
    /// The operation did not finish in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long it was waited for.
        after: Duration,
    },
    /// The backend cannot be reached or is temporarily out of service (5xx, connection refused).
    #[error("unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying cause, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A model's safety filter refused the input or withheld the output (DashScope's
    /// `data_inspection_failed`, OpenAI's `content_filter`). Not retryable with the same input.
    #[error("refused by the content filter: {message}")]
    ContentFiltered {
        /// The backend's explanation.
        message: String,
    },
    /// Stored data failed its integrity check (a checksum, a content hash, a value no writer
    /// produces): it was changed after it was written. Nothing was read from it.
    #[error("{what} is damaged: {reason}")]
    Corrupt {
        /// The file or object (its path or URI).
        what: String,
        /// What is wrong with it and what to do.
        reason: String,
    },
    /// Any other failure reported by a backend, with its cause kept.
    #[error("{backend} error: {message}")]
    Backend {
        /// Which backend reported it (`"local-fs"`, `"oss"`, `"dashscope"` …).
        backend: &'static str,
        /// The backend's message.
        message: String,
        /// The underlying cause, when there is one.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// Builds [`Error::NotFound`].
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    /// Builds [`Error::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
        }
    }

    /// Builds [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::Backend`] with a cause.
    pub fn backend(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Backend {
            backend,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Builds [`Error::Backend`] without a cause.
    pub fn backend_msg(backend: &'static str, message: impl Into<String>) -> Self {
        Self::Backend {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// Whether retrying the same call later may succeed: rate limits, time-outs and
    /// unavailability are retryable; everything else needs a different call.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Timeout { .. } | Self::Unavailable { .. }
        )
    }

    /// The wait the backend asked for, if it was rate limited and said how long.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// An I/O error on a named file or directory: `what` says which and what was done, e.g.
    /// `writing /data/index/segments/000000000001.seg`; the I/O error is the source.
    pub fn io(err: std::io::Error, what: impl std::fmt::Display) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound {
                what: format!("{what}: {err}"),
            },
            _ => Self::backend("io", what.to_string(), err),
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match err.kind() {
            ErrorKind::NotFound => Self::NotFound {
                what: err.to_string(),
            },
            ErrorKind::TimedOut => Self::Timeout {
                what: err.to_string(),
                after: Duration::ZERO,
            },
            ErrorKind::InvalidData | ErrorKind::InvalidInput => Self::InvalidInput {
                message: err.to_string(),
            },
            // The message is the error's own text; as the source too it would print twice.
            _ => Self::backend_msg("io", err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_retryable_and_others_are_not() {
        assert!(
            Error::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
            .is_retryable()
        );
        assert!(
            Error::Unavailable {
                message: "503".into(),
                source: None
            }
            .is_retryable()
        );
        assert!(!Error::not_found("x").is_retryable());
        assert!(
            !Error::DimensionMismatch {
                expected: 3,
                actual: 4
            }
            .is_retryable()
        );
    }

    #[test]
    fn rate_limit_message_names_the_wait() {
        let err = Error::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(err.to_string(), "rate limited (retry after 3s)");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
    }

    /// A full disk once printed `No space left on device (os error 28): No space left on
    /// device (os error 28)` and no path: the chain of causes, as anyhow prints it, now names
    /// the file and says it once.
    #[test]
    fn an_io_error_is_said_once_with_its_file() {
        fn chain(e: &dyn std::error::Error) -> String {
            let mut out = e.to_string();
            let mut cur = e.source();
            while let Some(c) = cur {
                out.push_str(&format!(": {c}"));
                cur = c.source();
            }
            out
        }
        let full = || std::io::Error::from_raw_os_error(28);
        let named = Error::io(full(), "writing /data/index/i/segments/000000000001.seg");
        let text = chain(&named);
        assert_eq!(
            text,
            "io error: writing /data/index/i/segments/000000000001.seg: No space left on device (os error 28)"
        );
        let bare = chain(&Error::from(full()));
        assert_eq!(bare.matches("No space left").count(), 1, "{bare}");
    }
}
