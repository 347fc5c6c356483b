//! One retry policy for every network client and for the pipeline's own resends: how many
//! retries, exponential backoff between a base and a cap with jitter, a server's `Retry-After`
//! first, and whether a request may be repeated once it may have reached the service.
//!
//! Clients classify their own failures ([`Error::is_retryable`], and whether the request may
//! have been applied); [`RetryPolicy::run`] is the one loop around them.
//!
//! ```
//! use std::time::Duration;
//! use rag_core::retry::{Request, RetryPolicy};
//! use rag_core::Error;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let policy = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(4));
//! let mut calls = 0;
//! let answer = policy
//!     .run("GET /status", Request::Idempotent, |_| {
//!         calls += 1;
//!         let fail = calls < 3;
//!         async move {
//!             if fail {
//!                 Err(Error::Unavailable { message: "503".into(), source: None }.into())
//!             } else {
//!                 Ok("up")
//!             }
//!         }
//!     })
//!     .await?;
//! assert_eq!((answer, calls), ("up", 3));
//! # Ok::<(), Error>(()) }).unwrap();
//! ```

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use crate::error::{Error, Result};

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retried).
    pub max_retries: u32,
    /// The pause before the first retry; it doubles for each further one.
    pub initial_backoff: Duration,
    /// The longest pause, a server's `Retry-After` included.
    pub max_backoff: Duration,
    /// Spread pauses over the upper half of the computed backoff, so that many clients
    /// throttled at once do not come back at once. `Retry-After` is never jittered.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    /// 3 retries from 200 ms, capped at 10 s, with jitter.
    fn default() -> Self {
        Self::new(3, Duration::from_millis(200), Duration::from_secs(10))
    }
}

/// Whether a request may be sent again after it may have reached the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Reads, puts of the same content, deletes: repeating them changes nothing.
    Idempotent,
    /// A request that creates something (a training job): repeated only when the service
    /// surely did not act on it (it answered with an error status, or the connection never
    /// opened). When the answer is lost after sending, the loop stops with
    /// [`Error::Unavailable`] saying so.
    NotIdempotent,
}

/// A failed attempt, as a client classified it.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong; [`Error::is_retryable`] decides whether to try again.
    pub error: Error,
    /// The request may have reached the service and taken effect (the answer was lost, or a
    /// time-out after sending).
    pub maybe_applied: bool,
}

impl Failure {
    /// A failure after which the request may have taken effect.
    pub fn maybe_applied(error: Error) -> Self {
        Self {
            error,
            maybe_applied: true,
        }
    }
}

impl From<Error> for Failure {
    /// A failure the service surely did not act on (an error status, a refused connection).
    fn from(error: Error) -> Self {
        Self {
            error,
            maybe_applied: false,
        }
    }
}

impl RetryPolicy {
    /// `max_retries` retries, pauses doubling from `initial_backoff` up to `max_backoff`, with
    /// jitter.
    pub fn new(max_retries: u32, initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            max_retries,
            initial_backoff,
            max_backoff,
            jitter: true,
        }
    }

    /// Never retried.
    pub fn never() -> Self {
        Self::new(0, Duration::ZERO, Duration::ZERO)
    }

    /// The same policy without jitter (pauses exactly as computed).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The pause before retry number `retry` (1 for the first): the server's `retry_after`
    /// when it sent one, else `initial_backoff × 2^(retry-1)`, never above `max_backoff`.
    pub fn pause(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_backoff);
        }
        let doubled = self
            .initial_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let pause = doubled.min(self.max_backoff);
        if self.jitter && !pause.is_zero() {
            // Equal jitter: half the pause fixed, the other half random.
            let half = pause / 2;
            let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
            half + Duration::from_nanos(random_u64() % nanos)
        } else {
            pause
        }
    }

    /// Runs `attempt` (given the attempt number, from 1) until it succeeds, fails with an
    /// error that is not retryable, or the retries are spent. A [`Request::NotIdempotent`]
    /// request whose failure may have been applied is not repeated. Each retry is logged with
    /// `what`.
    pub async fn run<T, F, Fut>(&self, what: &str, request: Request, mut attempt: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let mut retries = 0;
        loop {
            let failure = match attempt(retries + 1).await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if failure.maybe_applied && request == Request::NotIdempotent {
                return Err(Error::Unavailable {
                    message: format!(
                        "{what}: the answer was lost after the request was sent, so it may have \
                         taken effect; not repeated, as the request is not idempotent"
                    ),
                    source: Some(Box::new(failure.error)),
                });
            }
            if !failure.error.is_retryable() || retries >= self.max_retries {
                return Err(failure.error);
            }
            retries += 1;
            let wait = self.pause(retries, failure.error.retry_after());
            tracing::warn!(what, retry = retries, error = %failure.error, ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Parses an HTTP `Retry-After` value given in seconds (`"3"`, or `"1.5"` as some proxies
/// send). The HTTP-date form is not used by the services ragloop calls and reads as `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// A random number from the standard library's per-process hasher keys (no RNG dependency;
/// jitter needs no quality beyond "not the same in every process").
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn unavailable() -> Error {
        Error::Unavailable {
            message: "503".into(),
            source: None,
        }
    }

    #[test]
    fn pauses_double_up_to_the_cap_and_retry_after_comes_first() {
        let p = RetryPolicy::new(5, Duration::from_millis(100), Duration::from_millis(350))
            .without_jitter();
        let pauses: Vec<u128> = (1..=4).map(|r| p.pause(r, None).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350]);
        assert_eq!(
            p.pause(1, Some(Duration::from_millis(300))),
            Duration::from_millis(300)
        );
        assert_eq!(
            p.pause(1, Some(Duration::from_secs(60))),
            Duration::from_millis(350),
            "Retry-After is capped too"
        );
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let p = RetryPolicy::new(5, Duration::from_millis(100), Duration::from_secs(1));
        for retry in 1..=4 {
            let full = Duration::from_millis(100 << (retry - 1));
            for _ in 0..50 {
                let d = p.pause(retry, None);
                assert!(d >= full / 2 && d <= full, "{d:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    fn fast(retries: u32) -> RetryPolicy {
        RetryPolicy::new(retries, Duration::from_millis(1), Duration::from_millis(2))
    }

    #[tokio::test]
    async fn retryable_failures_are_retried_until_the_budget_is_spent() {
        let mut calls = 0;
        let r: Result<()> = fast(2)
            .run("x", Request::Idempotent, |_| {
                calls += 1;
                async { Err(unavailable().into()) }
            })
            .await;
        assert!(matches!(r, Err(Error::Unavailable { .. })));
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let mut calls = 0;
        let r: Result<()> = fast(5)
            .run("x", Request::Idempotent, |_| {
                calls += 1;
                async { Err(Error::invalid("bad").into()) }
            })
            .await;
        assert!(matches!(r, Err(Error::InvalidInput { .. })));
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn a_request_that_may_have_been_applied_is_not_repeated_unless_idempotent() {
        let mut calls = 0;
        let r: Result<()> = fast(5)
            .run("CreateJob", Request::NotIdempotent, |_| {
                calls += 1;
                async { Err(Failure::maybe_applied(unavailable())) }
            })
            .await;
        assert_eq!(calls, 1);
        assert!(r.unwrap_err().to_string().contains("may have taken effect"));

        let mut calls = 0;
        let r: Result<()> = fast(2)
            .run("GetJob", Request::Idempotent, |_| {
                calls += 1;
                async { Err(Failure::maybe_applied(unavailable())) }
            })
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);

        // Refused with a status: nothing happened, so even a creating request goes again.
        let mut calls = 0;
        let r = fast(2)
            .run("CreateJob", Request::NotIdempotent, |n| {
                calls += 1;
                async move {
                    if n < 2 {
                        Err(unavailable().into())
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!((r.unwrap(), calls), (2, 2));
    }
}
