//! DashScope error bodies → [`rag_core::Error`].
//!
//! Two shapes exist: the OpenAI-compatible one,
//! `{"error": {"code", "message", "type", "param"}, "request_id"}`, and the native one,
//! `{"code", "message", "request_id"}`. The code, message and request id are kept in the
//! error's text (support asks for the request id); content-filter refusals
//! (`data_inspection_failed` / `DataInspectionFailed`) become [`Error::ContentFiltered`].

use std::time::Duration;

use rag_core::Error;
use serde_json::Value;

/// What a DashScope (or OpenAI-compatible) server said about a failed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// The error code (`InvalidApiKey`, `data_inspection_failed`, `Throttling.RateQuota` …).
    pub code: Option<String>,
    /// The server's message.
    pub message: Option<String>,
    /// The request id, for support.
    pub request_id: Option<String>,
}

impl ApiError {
    /// Reads whichever of the two body shapes `body` has (or neither: then only the status).
    pub fn parse(status: u16, body: &[u8]) -> Self {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let inner = v.get("error").filter(|e| e.is_object()).unwrap_or(&v);
        let text = |val: &Value, key: &str| {
            val.get(key)
                .and_then(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .filter(|s| !s.is_empty())
        };
        let mut message = text(inner, "message");
        if message.is_none() && v.is_null() && !body.is_empty() {
            // Not JSON (a proxy's HTML page, say): keep a short, printable excerpt.
            let raw = String::from_utf8_lossy(body);
            message = Some(raw.chars().take(200).collect());
        }
        Self {
            status,
            code: text(inner, "code").or_else(|| text(inner, "type")),
            message,
            request_id: text(&v, "request_id").or_else(|| text(&v, "id")),
        }
    }

    /// Whether the server refused the content (its safety filter).
    pub fn is_content_filter(&self) -> bool {
        self.code.as_deref().is_some_and(|c| {
            let c = c.to_ascii_lowercase();
            c.contains("data_inspection_failed") || c.contains("datainspectionfailed")
        }) || self
            .message
            .as_deref()
            .is_some_and(|m| m.contains("DataInspectionFailed"))
    }

    /// The error's text: `HTTP 400 InvalidParameter: message (request id …)`.
    pub fn describe(&self, what: &str) -> String {
        let mut s = format!("{what}: HTTP {}", self.status);
        if let Some(c) = &self.code {
            s.push_str(&format!(" {c}"));
        }
        if let Some(m) = &self.message {
            s.push_str(&format!(": {m}"));
        }
        if let Some(r) = &self.request_id {
            s.push_str(&format!(" (request id {r})"));
        }
        if let Some(h) = self.hint() {
            s.push_str(" — ");
            s.push_str(h);
        }
        s
    }

    /// What to do about an error a user can fix, by the codes of DashScope's error reference
    /// (<https://help.aliyun.com/zh/model-studio/error-code>): a bad key, an account in
    /// arrears, a key without access to the model or workspace.
    pub fn hint(&self) -> Option<&'static str> {
        let code = self
            .code
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let message = self
            .message
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        Some(if code == "invalidapikey" || code == "invalid_api_key" {
            "DASHSCOPE_API_KEY is not a key of this region: Beijing and Singapore (DASHSCOPE_REGION) have their own keys"
        } else if code == "arrearage" {
            "the Alibaba Cloud account is in arrears: top it up in the billing console"
        } else if code.contains("workspace") || message.contains("workspace") {
            "the key is not allowed in this workspace: a key of a non-default workspace needs DASHSCOPE_WORKSPACE_ID set to that workspace's id"
        } else if code.contains("accessdenied") || code == "access_denied" || self.status == 403 {
            "the key may not use this model or API: grant the RAM user Model Studio permissions or enable the model for the workspace; a key of a non-default workspace also needs DASHSCOPE_WORKSPACE_ID"
        } else if code.contains("quota") && !code.starts_with("throttling") {
            "a Model Studio quota is used up (free quota, files or fine-tune slots)"
        } else {
            return None;
        })
    }

    /// The typed error for this answer.
    pub fn into_error(self, what: &str, retry_after: Option<Duration>) -> Error {
        let text = self.describe(what);
        let code = self.code.clone().unwrap_or_default();
        if self.is_content_filter() {
            return Error::ContentFiltered { message: text };
        }
        match self.status {
            429 => Error::RateLimited { retry_after },
            _ if code.starts_with("Throttling") => Error::RateLimited { retry_after },
            401 | 403 => Error::Auth { message: text },
            404 => Error::NotFound { what: text },
            409 => Error::AlreadyExists { what: text },
            400 | 413 | 422 => Error::InvalidInput { message: text },
            s if s >= 500 => Error::Unavailable {
                message: text,
                source: None,
            },
            _ => Error::backend_msg("dashscope", text),
        }
    }
}

/// Parses a `Retry-After` header given in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    rag_core::retry::parse_retry_after(headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DashScope's documented error bodies for a bad key, arrears and refused access each end
    /// in what to do, after the request id.
    #[test]
    fn errors_a_user_can_fix_say_what_to_do() {
        let cases: [(u16, &[u8], &str); 4] = [
            (401, br#"{"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"fb53c4ec-1c12-4fc4-a580-cdb7c3261fc1"}"#, "DASHSCOPE_REGION"),
            (400, br#"{"code":"Arrearage","message":"Access denied, please make sure your account is in good standing.","request_id":"fb53c4ec-1c12-4fc4-a580-cdb7c3261fc1"}"#, "arrears"),
            (403, br#"{"code":"AccessDenied","message":"Access denied.","request_id":"fb53c4ec-1c12-4fc4-a580-cdb7c3261fc1"}"#, "Model Studio permissions"),
            (403, br#"{"code":"Workspace.AccessDenied","message":"Workspace access denied.","request_id":"fb53c4ec-1c12-4fc4-a580-cdb7c3261fc1"}"#, "DASHSCOPE_WORKSPACE_ID"),
        ];
        for (status, body, remedy) in cases {
            let text = ApiError::parse(status, body)
                .into_error("create fine-tune", None)
                .to_string();
            assert!(text.contains(remedy), "{text}");
            assert!(
                text.contains("fb53c4ec-1c12-4fc4-a580-cdb7c3261fc1"),
                "{text}"
            );
        }
        let ok = ApiError::parse(500, br#"{"code":"InternalError","message":"x"}"#);
        assert_eq!(ok.hint(), None);
    }

    #[test]
    fn compatible_mode_body() {
        // As DashScope's OpenAI-compatible endpoint answers a filtered prompt.
        let body = br#"{"error":{"code":"data_inspection_failed","param":null,"message":"Input data may contain inappropriate content.","type":"data_inspection_failed"},"id":"chatcmpl-deab386b","request_id":"deab386b-2562-9a7b-b8fa-0ba9385a5c28"}"#;
        let e = ApiError::parse(400, body);
        assert_eq!(e.code.as_deref(), Some("data_inspection_failed"));
        assert_eq!(
            e.request_id.as_deref(),
            Some("deab386b-2562-9a7b-b8fa-0ba9385a5c28")
        );
        let err = e.into_error("chat", None);
        assert!(matches!(err, Error::ContentFiltered { .. }), "{err}");
        assert!(err.to_string().contains("deab386b-2562"), "{err}");
    }

    #[test]
    fn native_body_and_statuses() {
        let body = br#"{"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"fb53c4ec-1c12-4fc4-a580-cdb7c3261fc1"}"#;
        let err = ApiError::parse(401, body).into_error("chat", None);
        assert!(matches!(err, Error::Auth { .. }));
        assert!(
            err.to_string()
                .contains("InvalidApiKey: Invalid API-key provided.")
        );
        let throttled = br#"{"code":"Throttling.RateQuota","message":"Requests rate limit exceeded, please try again later.","request_id":"x"}"#;
        let err = ApiError::parse(429, throttled).into_error("chat", Some(Duration::from_secs(2)));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        let err =
            ApiError::parse(503, b"<html>Service Unavailable</html>").into_error("chat", None);
        assert!(err.is_retryable() && err.to_string().contains("Service Unavailable"));
        let err = ApiError::parse(
            400,
            br#"{"code":"InvalidParameter","message":"Range of input length should be [1, 8192]"}"#,
        )
        .into_error("embeddings", None);
        assert!(matches!(err, Error::InvalidInput { .. }));
    }
}
