//! One HTTP path for every call: the `opensearch` crate's transport (TLS, auth, URL joining),
//! plus time-outs, retries of 429/5xx/time-outs/connection failures with exponential backoff
//! that honours `Retry-After`, and the mapping of Elasticsearch/OpenSearch error bodies to
//! [`rag_core::Error`].

use std::time::Duration;

use opensearch::auth::Credentials;
use opensearch::http::headers::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use opensearch::http::transport::{SingleNodeConnectionPool, Transport, TransportBuilder};
use opensearch::http::{Method, Url};
use rag_core::retry::Request;
use rag_core::{Error, Result};
use serde_json::Value;

use crate::config::{Auth, SearchConfig};

const BACKEND: &str = "search";

/// A request body.
#[derive(Clone, Copy)]
pub(crate) enum Body<'a> {
    /// No body.
    Empty,
    /// A JSON document.
    Json(&'a Value),
    /// Newline-delimited JSON (`_bulk`).
    NdJson(&'a [u8]),
}

/// A response: status and parsed body (`Null` when empty or not JSON).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The error `type` of an error body (`index_not_found_exception` …).
    pub(crate) fn error_type(&self) -> &str {
        self.body["error"]["type"].as_str().unwrap_or("")
    }

    /// Turns a non-2xx reply into the matching typed error.
    pub(crate) fn into_result(self, what: &str) -> Result<Value> {
        if self.ok() {
            Ok(self.body)
        } else {
            Err(api_error(self.status, &self.body, None, what))
        }
    }
}

/// A configured transport (cheap to clone).
#[derive(Clone)]
pub(crate) struct Http {
    transport: Transport,
    pub(crate) config: SearchConfig,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Http {
    pub(crate) fn new(config: SearchConfig) -> Result<Self> {
        let url = Url::parse(&config.url)
            .map_err(|e| Error::invalid(format!("search URL {:?}: {e}", config.url)))?;
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(config.timeout)
            .disable_proxy();
        match &config.auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                builder = builder.auth(Credentials::Basic(
                    user.clone(),
                    password.expose().to_string(),
                ));
            }
            Auth::ApiKey(key) => {
                let mut value = HeaderValue::from_str(&format!("ApiKey {}", key.expose()))
                    .map_err(|_| {
                        Error::invalid("the API key holds characters not allowed in a header")
                    })?;
                value.set_sensitive(true);
                builder = builder.header(AUTHORIZATION, value);
            }
        }
        let transport = builder
            .build()
            .map_err(|e| Error::backend(BACKEND, "building the HTTP transport", e))?;
        Ok(Self { transport, config })
    }

    /// Sends a request, retrying throttling, 5xx, time-outs and connection failures. Returns
    /// the last reply whatever its status; the caller decides what a 4xx means.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Body<'_>,
        what: &str,
    ) -> Result<Reply> {
        // Searches, reads, index creation and `_bulk` by id are all safe to repeat.
        self.config
            .retry
            .run(what, Request::Idempotent, |_| async {
                let r = self.once(method, path, query, body, what).await?;
                if retryable_status(r.status) {
                    // Throttled or failing: retried; once the budget is spent, the typed error.
                    return Err(api_error(r.status, &r.body, r.retry_after, what).into());
                }
                Ok(Reply {
                    status: r.status,
                    body: r.body,
                })
            })
            .await
    }

    async fn once(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Body<'_>,
        what: &str,
    ) -> Result<RawReply> {
        let mut headers = HeaderMap::new();
        let payload: Option<Vec<u8>> = match body {
            Body::Empty => None,
            Body::Json(v) => Some(
                serde_json::to_vec(v).map_err(|e| Error::backend(BACKEND, "encoding JSON", e))?,
            ),
            Body::NdJson(b) => {
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-ndjson"),
                );
                Some(b.to_vec())
            }
        };
        let query = (!query.is_empty()).then_some(query);
        let timeout = self.config.timeout;
        let sent = tokio::time::timeout(
            timeout,
            self.transport
                .send(method, path, headers, query, payload, Some(timeout)),
        )
        .await;
        let response = match sent {
            Err(_) => return Err(timed_out(what, timeout)),
            Ok(Err(e)) if e.is_timeout() => return Err(timed_out(what, timeout)),
            Ok(Err(e)) => {
                return Err(Error::Unavailable {
                    message: format!("{what}: {e}"),
                    source: Some(Box::new(e)),
                });
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status_code().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(rag_core::retry::parse_retry_after);
        let bytes = match tokio::time::timeout(timeout, response.bytes()).await {
            Err(_) => return Err(timed_out(what, timeout)),
            Ok(Err(e)) => {
                return Err(Error::Unavailable {
                    message: format!("{what}: reading the response: {e}"),
                    source: Some(Box::new(e)),
                });
            }
            Ok(Ok(b)) => b,
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                // A proxy's HTML page or a cut body: keep the text for the error message.
                Err(_) if !(200..300).contains(&status) => {
                    Value::String(String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into())
                }
                Err(e) => {
                    return Err(Error::backend(
                        BACKEND,
                        format!("{what}: the {status} response is not JSON"),
                        e,
                    ));
                }
            }
        };
        Ok(RawReply {
            status,
            body,
            retry_after,
        })
    }
}

struct RawReply {
    status: u16,
    body: Value,
    retry_after: Option<Duration>,
}

fn timed_out(what: &str, after: Duration) -> Error {
    Error::Timeout {
        what: what.to_string(),
        after,
    }
}

fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The typed error for an error reply: `{"error": {"type", "reason"}, "status"}` (or a string).
pub(crate) fn api_error(
    status: u16,
    body: &Value,
    retry_after: Option<Duration>,
    what: &str,
) -> Error {
    let (ty, reason) = match &body["error"] {
        Value::Object(e) => (
            e.get("type").and_then(Value::as_str).unwrap_or(""),
            e.get("reason").and_then(Value::as_str).unwrap_or(""),
        ),
        Value::String(s) => ("", s.as_str()),
        _ => ("", body.as_str().unwrap_or("")),
    };
    let message = match (ty.is_empty(), reason.is_empty()) {
        (true, true) => format!("{what}: HTTP {status}"),
        (true, false) => format!("{what}: HTTP {status}: {reason}"),
        _ => format!("{what}: HTTP {status} {ty}: {reason}"),
    };
    match status {
        404 => Error::not_found(message),
        401 | 403 => Error::Auth { message },
        409 => Error::AlreadyExists { what: message },
        429 => Error::RateLimited { retry_after },
        400 | 405 | 413 | 422 => Error::invalid(message),
        s if s >= 500 => Error::Unavailable {
            message,
            source: None,
        },
        _ => Error::backend_msg(BACKEND, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_bodies_map_to_typed_errors() {
        let nf = json!({"error": {"root_cause": [], "type": "index_not_found_exception",
            "reason": "no such index [x]"}, "status": 404});
        let e = api_error(404, &nf, None, "count");
        assert!(e.is_not_found());
        assert!(e.to_string().contains("no such index [x]"), "{e}");
        assert!(matches!(
            api_error(401, &json!({"error": "unauthorized"}), None, "x"),
            Error::Auth { .. }
        ));
        assert!(api_error(503, &Value::String("<html>".into()), None, "x").is_retryable());
        assert!(matches!(
            api_error(
                400,
                &json!({"error": {"type": "mapper_parsing_exception", "reason": "r"}}),
                None,
                "x"
            ),
            Error::InvalidInput { .. }
        ));
    }
}
