//! The API's one error shape, OpenAI's: `{"error": {"message", "type", "param", "code"}}` with
//! the status that fits. `param` names the request field at fault. Messages never carry a
//! secret or a backtrace: they are the typed errors' own text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What kind of failure (`invalid_request_error`, `authentication_error`, `overloaded`,
    /// `timeout`, `upstream_error`, `not_found`, `internal_error`): the `type` field and the
    /// `kind` label of the errors metric.
    pub kind: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// Seconds to wait before retrying (503, 429), sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    message: &'a str,
    r#type: &'a str,
    param: Option<&'a str>,
    code: u16,
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: impl Into<Option<String>>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: param.into(),
            retry_after: None,
        }
    }

    /// A 401.
    pub fn unauthorized() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: "a valid bearer token is required (Authorization: Bearer …)".into(),
            param: None,
            retry_after: None,
        }
    }

    /// A 503 because every slot is taken.
    pub fn overloaded(max: usize) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "overloaded",
            message: format!("the server is answering {max} requests already; retry shortly"),
            param: None,
            retry_after: Some(1),
        }
    }

    /// A 504 after `secs`.
    pub fn timed_out(secs: u64) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "timeout",
            message: format!("the request took longer than {secs} s"),
            param: None,
            retry_after: None,
        }
    }

    /// A 413 over `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            message: format!("the request body is larger than {limit} bytes"),
            param: None,
            retry_after: None,
        }
    }

    /// A 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "not_found",
            message: what.into(),
            param: None,
            retry_after: None,
        }
    }

    /// The body as JSON text (also the `error` event of a stream).
    pub fn json(&self) -> String {
        serde_json::to_string(&Body {
            error: Inner {
                message: &self.message,
                r#type: self.kind,
                param: self.param.as_deref(),
                code: self.status.as_u16(),
            },
        })
        .unwrap_or_else(|_| "{}".into())
    }
}

/// The status, kind and `Retry-After` of a typed error.
fn classify(e: &rag_core::Error) -> (StatusCode, &'static str, Option<u64>) {
    use rag_core::Error as E;
    match e {
        E::InvalidInput { .. } | E::DimensionMismatch { .. } => {
            (StatusCode::BAD_REQUEST, "invalid_request_error", None)
        }
        E::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", None),
        E::RateLimited { retry_after } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            Some(retry_after.map_or(1, |d| d.as_secs().max(1))),
        ),
        E::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "timeout", None),
        E::Unavailable { .. } | E::Auth { .. } | E::Backend { .. } | E::ContentFiltered { .. } => {
            (StatusCode::BAD_GATEWAY, "upstream_error", None)
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None),
    }
}

impl From<rag_core::Error> for ApiError {
    fn from(e: rag_core::Error) -> Self {
        let (status, kind, retry_after) = classify(&e);
        tracing::warn!(error = %e, status = status.as_u16(), "request failed");
        Self {
            status,
            kind,
            message: e.to_string(),
            param: None,
            retry_after,
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let (status, kind, retry_after) = e
            .chain()
            .find_map(|c| c.downcast_ref::<rag_core::Error>())
            .map_or(
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error", None),
                classify,
            );
        tracing::warn!(error = %format!("{e:#}"), status = status.as_u16(), "request failed");
        Self {
            status,
            kind,
            message: format!("{e:#}"),
            param: None,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.json(),
        )
            .into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response.extensions_mut().insert(ErrorKind(self.kind));
        response
    }
}

/// The kind of an error response, for the errors metric.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

/// Parses a JSON request body into `T`, naming the field at fault: a missing or unknown field,
/// a wrong type (`k: "ten"`), malformed JSON.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // "unknown field `x`" / "missing field `x`" name the field inside the path's object.
        let named = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains(" field `"))
            .map(str::to_string);
        // An unknown field's path ends with it already; a missing one's is its parent's.
        let param = match (named, path.as_str()) {
            (Some(f), "." | "") => Some(f),
            (Some(f), p) if p == f || p.ends_with(&format!(".{f}")) => Some(p.to_string()),
            (Some(f), p) => Some(format!("{p}.{f}")),
            (None, "." | "") => None,
            (None, p) => Some(p.to_string()),
        };
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("the body is not valid JSON: {message}")
        } else {
            message
        };
        ApiError::invalid(param, message)
    })?;
    de.end()
        .map_err(|e| ApiError::invalid(None, format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}
