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
            // OSS puts its request id in `x-oss-request-id` (S3 servers in `x-amz-request-id`):
            // what its support asks for.
            let request_id = ["x-oss-request-id", "x-amz-request-id"]
                .iter()
                .find_map(|h| service.raw().headers().get(*h))
                .map(str::to_string);
            let message = match request_id {
                Some(id) => format!("{message} (request id {id})"),
                None => message,
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
    let mut detail = if message.is_empty() {
        format!("{what}: {code} (HTTP {status})")
    } else {
        format!("{what}: {code}: {message} (HTTP {status})")
    };
    if let Some(h) = hint(status, code, message) {
        detail.push_str(" — ");
        detail.push_str(h);
    }
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

/// What to do about an error a user can fix, by the codes of OSS's error reference
/// (<https://www.alibabacloud.com/help/en/oss/user-guide/error-codes>; 0003-00000001 ff.).
pub(crate) fn hint(status: u16, code: &str, message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    Some(match code {
        "InvalidAccessKeyId" => {
            "OSS does not know this AccessKey: check ALIBABA_CLOUD_ACCESS_KEY_ID (a deleted or disabled key, or a key of another account)"
        }
        "SignatureDoesNotMatch" => {
            "the request's signature does not match: check ALIBABA_CLOUD_ACCESS_KEY_SECRET for ALIBABA_CLOUD_ACCESS_KEY_ID"
        }
        "SecurityTokenExpired" | "ExpiredToken" => {
            "the STS token has expired: get a new one (ALIBABA_CLOUD_SECURITY_TOKEN with its AccessKey pair)"
        }
        "InvalidSecurityToken" => {
            "the STS token is not valid for this AccessKey: set ALIBABA_CLOUD_SECURITY_TOKEN from the same AssumeRole answer as the key pair"
        }
        // The bucket lives in another region than the endpoint asked.
        "PermanentRedirect"
        | "AuthorizationHeaderMalformed"
        | "IllegalLocationConstraintException" => {
            "the bucket is in another region: set OSS_REGION (store.region) to the bucket's region"
        }
        "AccessDenied" if m.contains("endpoint") => {
            "the bucket is in another region: set OSS_REGION (store.region) to the bucket's region (the answer names its endpoint)"
        }
        "AccessDenied" | "AccessForbidden" => {
            "the AccessKey's RAM user may not do this: grant it oss:GetObject, oss:PutObject, oss:ListObjects and oss:DeleteObject on the bucket (a RAM policy), or check the bucket policy"
        }
        "QuotaExceeded" | "TooManyBuckets" => "an OSS quota of the account is used up",
        _ if status == 403 => {
            "refused: check the AccessKey (ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET) and its RAM permissions on the bucket"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes and messages of OSS's error reference, each with its remedy.
    #[test]
    fn errors_a_user_can_fix_say_what_to_do() {
        let cases = [
            (
                403,
                "InvalidAccessKeyId",
                "The OSS Access Key Id you provided does not exist in our records.",
                "ALIBABA_CLOUD_ACCESS_KEY_ID",
            ),
            (
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            ),
            (
                403,
                "SecurityTokenExpired",
                "The security token you provided has expired.",
                "STS token has expired",
            ),
            (
                403,
                "AccessDenied",
                "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.",
                "OSS_REGION",
            ),
            (
                403,
                "AccessDenied",
                "You have no right to access this object because of bucket acl.",
                "RAM policy",
            ),
        ];
        for (status, code, message, remedy) in cases {
            let err = classify(
                status,
                code,
                &format!("{message} (request id 5C3D9175B6FC201293AD****)"),
                None,
                "oss://b/k",
            );
            assert!(matches!(err, Error::Auth { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(remedy), "{code}: {text}");
            assert!(text.contains("5C3D9175B6FC201293AD****"), "{text}");
        }
        assert_eq!(hint(404, "NoSuchKey", ""), None);
    }

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
