//! [`PaiClient`]: the one place that signs, sends, retries and decodes PAI-DLC calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rag_core::retry::{Failure, Request};
use rag_core::{Error, Result};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::{API_VERSION, PaiConfig};
use crate::signing::{SignableRequest, authorization, iso8601, sha256_hex, sign};

/// A signed request, ready to send (or to print with `--dry-run`).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// HTTP method.
    pub method: String,
    /// Full URL with the encoded query.
    pub url: String,
    /// Headers, `Authorization` included.
    pub headers: BTreeMap<String, String>,
    /// JSON body (empty for none).
    pub body: Vec<u8>,
}

impl SignedRequest {
    /// The headers with the STS token (a credential) replaced by `***`: safe to print or log.
    pub fn redacted_headers(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| {
                let v = if k == "x-acs-security-token" {
                    "***".to_string()
                } else {
                    v.clone()
                };
                (k.clone(), v)
            })
            .collect()
    }
}

impl std::fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.redacted_headers())
            .field("body", &String::from_utf8_lossy(&self.body))
            .finish()
    }
}

/// The error body of Alibaba Cloud ROA APIs.
#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
    #[serde(rename = "RequestId", default)]
    request_id: String,
}

/// A PAI-DLC API client (ROA style, API version 2020-12-03).
#[derive(Debug, Clone)]
pub struct PaiClient {
    http: reqwest::Client,
    config: PaiConfig,
    nonce: std::sync::Arc<AtomicU64>,
}

impl PaiClient {
    /// A client for `config`; fails with [`Error::Auth`] when it has no credentials.
    pub fn new(config: PaiConfig) -> Result<Self> {
        if config.credentials().is_none() {
            return Err(Error::Auth {
                message: "no PAI credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and \
                          ALIBABA_CLOUD_ACCESS_KEY_SECRET"
                    .into(),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::backend("pai", "building the HTTP client", e))?;
        Ok(Self {
            http,
            config,
            nonce: Default::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PaiConfig {
        &self.config
    }

    /// Signs a call of `action` without sending it.
    pub fn sign_request(
        &self,
        action: &str,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<SignedRequest> {
        let key = self.config.credentials().ok_or_else(|| Error::Auth {
            message: "no credentials".into(),
        })?;
        let body = match body {
            Some(v) => serde_json::to_vec(v).map_err(|e| Error::invalid(e.to_string()))?,
            None => Vec::new(),
        };
        let endpoint = self.config.endpoint();
        let host = endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&endpoint)
            .trim_end_matches('/')
            .to_string();
        let mut headers = BTreeMap::new();
        headers.insert("host".to_string(), host);
        headers.insert("x-acs-action".to_string(), action.to_string());
        headers.insert("x-acs-version".to_string(), API_VERSION.to_string());
        headers.insert("x-acs-date".to_string(), iso8601(SystemTime::now()));
        headers.insert("x-acs-signature-nonce".to_string(), self.next_nonce());
        headers.insert("x-acs-content-sha256".to_string(), sha256_hex(&body));
        if !body.is_empty() {
            headers.insert("content-type".to_string(), "application/json".to_string());
        }
        if let Some(token) = &key.security_token {
            headers.insert(
                "x-acs-security-token".to_string(),
                token.expose().to_string(),
            );
        }
        let (signature, signed) = sign(
            &SignableRequest {
                method,
                path,
                query,
                headers: &headers,
                body: &body,
            },
            key.secret.expose(),
        );
        headers.insert(
            "authorization".to_string(),
            authorization(&key.id, &signed, &signature),
        );
        let mut url = format!(
            "{}{}",
            endpoint.trim_end_matches('/'),
            crate::signing::percent_encode(path, true)
        );
        let q = crate::signing::canonical_query(query);
        if !q.is_empty() {
            url.push('?');
            url.push_str(&q);
        }
        Ok(SignedRequest {
            method: method.to_string(),
            url,
            headers,
            body,
        })
    }

    fn next_nonce(&self) -> String {
        let n = self.nonce.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        sha256_hex(format!("{t}-{n}-{}", std::process::id()).as_bytes())[..32].to_string()
    }

    /// Calls `action` and decodes its JSON answer, retrying throttling, 5xx and time-outs with
    /// exponential backoff (honouring `Retry-After`) under `config.retry`. A call that creates
    /// (POST, but for `Stop*`) is retried only when the service did not act on it: refused
    /// with a status, or never sent. A time-out or a body cut after sending it is an
    /// [`Error::Unavailable`] that says the job may exist.
    pub async fn call<T: DeserializeOwned>(
        &self,
        action: &str,
        method: &str,
        path: &str,
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        // A POST that creates something (CreateJob) is not repeated once it may have reached
        // the service: a second one would start a second job. Reads and stops are.
        let request = if method != "POST" || action.starts_with("Stop") {
            Request::Idempotent
        } else {
            Request::NotIdempotent
        };
        let what = format!("PAI {action}");
        let bytes = self
            .config
            .retry
            .run(&what, request, |_| async {
                // Re-signed per attempt: the date and nonce must be fresh.
                let req = self
                    .sign_request(action, method, path, query, body)
                    .map_err(Failure::from)?;
                self.send_once(action, req).await
            })
            .await
            .map_err(|e| match e {
                Error::Unavailable { message, source }
                    if message.contains("may have taken effect") =>
                {
                    Error::Unavailable {
                        message: format!(
                            "{message} (look for the job with `ragloop pai status` or ListJobs \
                             before submitting again)"
                        ),
                        source,
                    }
                }
                other => other,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::backend(
                "pai",
                format!(
                    "{action}: unexpected response body: {}",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(300)
                        .collect::<String>()
                ),
                e,
            )
        })
    }

    async fn send_once(
        &self,
        action: &str,
        req: SignedRequest,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| Failure::from(Error::invalid(e.to_string())))?;
        let mut builder = self.http.request(method, &req.url);
        for (k, v) in &req.headers {
            if k != "host" {
                builder = builder.header(k, v);
            }
        }
        if !req.body.is_empty() {
            builder = builder.body(req.body.clone());
        }
        let resp = builder.send().await.map_err(|e| {
            // Only a failed connection is sure not to have reached the service.
            let maybe_applied = !e.is_connect();
            let error = if e.is_timeout() {
                Error::Timeout {
                    what: format!("PAI {action}"),
                    after: self.config.request_timeout,
                }
            } else {
                Error::Unavailable {
                    message: format!("PAI {action}: {e}"),
                    source: Some(Box::new(e)),
                }
            };
            Failure {
                error,
                maybe_applied,
            }
        })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| rag_core::retry::parse_retry_after(v.to_str().ok()?));
        let bytes = resp.bytes().await.map_err(|e| Failure {
            error: Error::Unavailable {
                message: format!("PAI {action}: the response was cut: {e}"),
                source: Some(Box::new(e)),
            },
            maybe_applied: true,
        })?;
        if (200..300).contains(&status) {
            return Ok(bytes.to_vec());
        }
        let api: Option<ApiError> = serde_json::from_slice(&bytes).ok();
        Err(Failure::from(classify(action, status, api, retry_after)))
    }
}

/// What to do about an error a user can fix, by the codes of Alibaba Cloud's OpenAPI common
/// error reference and PAI-DLC's (`InvalidAccessKeyId.NotFound`, `SignatureDoesNotMatch`,
/// `InvalidSecurityToken.Expired`, `Forbidden.RAM`, quota and workspace errors).
fn hint(code: &str, message: &str) -> Option<&'static str> {
    let c = code.to_ascii_lowercase();
    let m = message.to_ascii_lowercase();
    Some(if c.starts_with("invalidaccesskeyid") {
        "PAI does not know this AccessKey or it is disabled: check ALIBABA_CLOUD_ACCESS_KEY_ID"
    } else if c.contains("signaturedoesnotmatch") {
        "the signature does not match: check ALIBABA_CLOUD_ACCESS_KEY_SECRET for ALIBABA_CLOUD_ACCESS_KEY_ID"
    } else if c.starts_with("invalidsecuritytoken.expired") {
        "the STS token has expired: get a new one (ALIBABA_CLOUD_SECURITY_TOKEN)"
    } else if c.starts_with("invalidsecuritytoken") {
        "the STS token does not belong to this AccessKey: set ALIBABA_CLOUD_SECURITY_TOKEN from the same AssumeRole answer"
    } else if c.contains("workspace")
        || (m.contains("workspace")
            && (c.contains("notfound") || m.contains("not exist") || m.contains("not found")))
    {
        "no such workspace in this region: check jobs.workspace_id (PAI_WORKSPACE_ID) and jobs.region (PAI_REGION)"
    } else if c.contains("quota") || m.contains("quota") || c.contains("insufficient") {
        "a resource quota is used up: pick a smaller jobs.ecs_spec, another jobs.resource_id, or raise the quota in the PAI console"
    } else if c.starts_with("forbidden") || c.contains("nopermission") || c.contains("accessdenied")
    {
        "the AccessKey's RAM user may not call PAI-DLC here: grant it AliyunPAIDLCFullAccess (or a policy with the pai:*Job actions) and membership of the workspace"
    } else if c.contains("regionid") || c.contains("region") {
        "PAI-DLC is not offered in that region or the endpoint is another region's: check jobs.region (PAI_REGION) and jobs.endpoint"
    } else {
        return None;
    })
}

fn classify(
    action: &str,
    status: u16,
    api: Option<ApiError>,
    retry_after: Option<Duration>,
) -> Error {
    let (code, message, request_id) = api
        .map(|a| (a.code, a.message, a.request_id))
        .unwrap_or_default();
    let mut detail =
        format!("PAI {action}: {code}: {message} (HTTP {status}, request {request_id})");
    if let Some(h) = hint(&code, &message) {
        detail.push_str(" — ");
        detail.push_str(h);
    }
    if code.starts_with("Throttling") || status == 429 {
        return Error::RateLimited { retry_after };
    }
    if code.contains("Signature")
        || code.starts_with("InvalidAccessKeyId")
        || code.starts_with("Forbidden")
        || code.contains("NoPermission")
        || code.starts_with("InvalidSecurityToken")
        || matches!(status, 401 | 403)
    {
        return Error::Auth { message: detail };
    }
    if status == 404 || code.contains("NotFound") || code.contains("NotExist") {
        return Error::not_found(detail);
    }
    match status {
        500..=599 => Error::Unavailable {
            message: detail,
            source: None,
        },
        400..=499 => Error::invalid(detail),
        _ => Error::backend_msg("pai", detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Error bodies as the OpenAPI common error reference and DLC document them, each with
    /// its remedy and the request id.
    #[test]
    fn errors_a_user_can_fix_say_what_to_do() {
        let cases = [
            (
                404,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
                "ALIBABA_CLOUD_ACCESS_KEY_ID",
                true,
            ),
            (
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation.",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
                true,
            ),
            (
                400,
                "InvalidSecurityToken.Expired",
                "Specified SecurityToken is expired.",
                "STS token has expired",
                true,
            ),
            (
                403,
                "Forbidden.RAM",
                "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
                "AliyunPAIDLCFullAccess",
                true,
            ),
            (
                400,
                "QuotaExceeded",
                "The quota of resource group is not enough.",
                "jobs.resource_id",
                false,
            ),
            (
                404,
                "WorkspaceNotFound",
                "The workspace ws-1 does not exist.",
                "jobs.workspace_id",
                false,
            ),
        ];
        for (status, code, message, remedy, auth) in cases {
            let err = classify(
                "CreateJob",
                status,
                Some(ApiError {
                    code: code.into(),
                    message: message.into(),
                    request_id: "473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E".into(),
                }),
                None,
            );
            let text = err.to_string();
            assert!(text.contains(remedy), "{code}: {text}");
            assert!(
                text.contains("473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E"),
                "{text}"
            );
            assert_eq!(matches!(err, Error::Auth { .. }), auth, "{code}: {err:?}");
        }
        assert_eq!(hint("InternalError", "boom"), None);
    }

    fn api(code: &str) -> Option<ApiError> {
        Some(ApiError {
            code: code.into(),
            message: "m".into(),
            request_id: "r".into(),
        })
    }

    #[test]
    fn vendor_codes_map_to_typed_errors() {
        assert!(matches!(
            classify("A", 400, api("Throttling.User"), None),
            Error::RateLimited { .. }
        ));
        assert!(matches!(
            classify("A", 400, api("SignatureDoesNotMatch"), None),
            Error::Auth { .. }
        ));
        assert!(matches!(
            classify("A", 404, api("JobNotFound"), None),
            Error::NotFound { .. }
        ));
        assert!(matches!(
            classify("A", 400, api("InvalidParameter"), None),
            Error::InvalidInput { .. }
        ));
        assert!(classify("A", 503, None, None).is_retryable());
    }
}
