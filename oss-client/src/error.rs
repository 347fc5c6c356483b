//! S3/OSS errors as `rag_core::Error`.
//!
//! OSS answers errors with an XML body (`<Error><Code>NoSuchKey</Code><Message>…</Message>
//! <RequestId>…</RequestId>…</Error>`, see
//! <https://www.alibabacloud.com/help/en/oss/user-guide/error-codes>); the SDK parses it into
//! an error code and message, which are mapped here by code first and HTTP status second.

use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use rag_core::Error;

/// Maps an SDK error of the operation on `what` (an object or bucket URI).
pub(crate) fn map_sdk_error<E>(
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    what: &str,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let retry_after = service
                .raw()
                .headers()
                .get("retry-after")
                .and_then(rag_core::retry::parse_retry_after);
            let e = service.err();
            let code = e.code().unwrap_or_default().to_string();
            let message = match e.message() {
                Some(m) => m.to_string(),
                // No parsed message: keep what the SDK says (e.g. an unparseable body).
                None => format!("{e}: {:?}", std::error::Error::source(e)),
            };
            classify(status, &code, &message, retry_after, what)
        }
        SdkError::TimeoutError(_) => Error::Timeout {
            what: what.to_string(),
            after: Duration::ZERO,
        },
        SdkError::DispatchFailure(f) => Error::Unavailable {
            message: format!("{what}: could not reach the server: {f:?}"),
            source: None,
        },
        SdkError::ResponseError(r) => Error::Unavailable {
            message: format!("{what}: bad response: {r:?}"),
            source: None,
        },
        SdkError::ConstructionFailure(c) => Error::invalid(format!("{what}: {c:?}")),
        other => Error::backend("oss", format!("{what}: {other}"), other),
    }
}

/// The `rag_core::Error` for an HTTP status and S3/OSS error code.
pub(crate) fn classify(
    status: u16,
    code: &str,
    message: &str,
    retry_after: Option<Duration>,
    what: &str,
) -> Error {
    let detail = if message.is_empty() {
        format!("{what}: {code} (HTTP {status})")
    } else {
        format!("{what}: {code}: {message} (HTTP {status})")
    };
    match (code, status) {
        ("NoSuchBucket", _) => Error::not_found(format!("bucket of {what}")),
        ("NoSuchKey" | "NotFound" | "NoSuchUpload", _) | (_, 404) => Error::not_found(what),
        (
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "SecurityTokenExpired"
            | "InvalidSecurityToken"
            | "ExpiredToken",
            _,
        )
        | (_, 401 | 403) => Error::Auth { message: detail },
        ("SlowDown" | "Throttling" | "TooManyRequests" | "RequestLimitExceeded", _) | (_, 429) => {
            Error::RateLimited { retry_after }
        }
        ("InvalidRange", _) | (_, 416) => Error::invalid(detail),
        ("RequestTimeout", _) | (_, 408) => Error::Timeout {
            what: detail,
            after: Duration::ZERO,
        },
        (_, 500..=599) => Error::Unavailable {
            message: detail,
            source: None,
        },
        (_, 400..=499) => Error::invalid(detail),
        _ => Error::backend_msg("oss", detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_variants_callers_can_match() {
        assert!(classify(404, "NoSuchKey", "", None, "k").is_not_found());
        assert!(classify(404, "NoSuchBucket", "", None, "k").is_not_found());
        assert!(matches!(
            classify(403, "AccessDenied", "no", None, "k"),
            Error::Auth { .. }
        ));
        assert!(matches!(
            classify(503, "SlowDown", "", Some(Duration::from_secs(2)), "k"),
            Error::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            classify(502, "", "", None, "k"),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            classify(416, "InvalidRange", "", None, "k"),
            Error::InvalidInput { .. }
        ));
        assert!(classify(500, "InternalError", "", None, "k").is_retryable());
    }
}
