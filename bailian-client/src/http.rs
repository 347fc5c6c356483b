//! The HTTP transport shared by every DashScope call: bearer auth, time-outs, and retries of
//! 429/5xx/time-outs/connection failures with exponential backoff that honours `Retry-After`.

use std::time::Duration;

use rag_core::retry::{Failure, Request};
use rag_core::{Error, Result};
use reqwest::{Method, Response};
use serde::de::DeserializeOwned;

use crate::config::BailianConfig;
use crate::error::{ApiError, retry_after};

/// The header naming the workspace a request acts in (`llm-…`), as the DashScope SDKs send
/// it when given a workspace; without it a key's default workspace is used.
pub(crate) const WORKSPACE_HEADER: &str = "X-DashScope-WorkSpace";

/// A request body. Forms are built afresh for each attempt (they are consumed when sent).
#[derive(Clone, Copy)]
pub(crate) enum Payload<'a> {
    /// No body.
    Empty,
    /// A JSON body.
    Json(&'a serde_json::Value),
    /// A multipart form.
    Form(&'a (dyn Fn() -> reqwest::multipart::Form + Send + Sync)),
}

impl<'a> From<Option<&'a serde_json::Value>> for Payload<'a> {
    fn from(v: Option<&'a serde_json::Value>) -> Self {
        v.map_or(Payload::Empty, Payload::Json)
    }
}

/// A configured client (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    pub(crate) config: BailianConfig,
}

impl Http {
    pub(crate) fn new(config: BailianConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            // Between two reads of a body: bounds a stalled stream without cutting a long one.
            .read_timeout(config.timeout)
            .user_agent(concat!(
                "ragloop-bailian-client/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(|e| Error::backend("dashscope", "building the HTTP client", e))?;
        Ok(Self { client, config })
    }

    /// Sends a request and returns the successful (2xx) response, retrying what is retryable.
    /// `whole_timeout` bounds the entire exchange (off for streams, whose length is open).
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        body: impl Into<Payload<'_>>,
        what: &str,
        whole_timeout: bool,
    ) -> Result<Response> {
        let body = body.into();
        self.retrying(what, || {
            self.once(method.clone(), url, body, what, whole_timeout)
        })
        .await
    }

    /// Runs `attempt` under the configured [`RetryPolicy`](rag_core::RetryPolicy). Every
    /// DashScope call ragloop makes may be repeated: reads, chat and embeddings create nothing,
    /// and fine-tune/deployment creation is guarded by the caller (it looks for the job or
    /// deployment before creating one).
    async fn retrying<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.config
            .retry
            .run(&format!("DashScope {what}"), Request::Idempotent, |_| {
                let fut = attempt();
                async move { fut.await.map_err(Failure::from) }
            })
            .await
    }

    async fn once(
        &self,
        method: Method,
        url: &str,
        body: Payload<'_>,
        what: &str,
        whole_timeout: bool,
    ) -> Result<Response> {
        let mut req = self.client.request(method, url);
        if whole_timeout {
            req = req.timeout(self.config.timeout);
        }
        if let Some(key) = self.config.api_key() {
            req = req.bearer_auth(key.expose());
        }
        if let Some(ws) = self.config.workspace() {
            req = req.header(WORKSPACE_HEADER, ws);
        }
        match body {
            Payload::Empty => {}
            Payload::Json(v) => req = req.json(v),
            Payload::Form(build) => req = req.multipart(build()),
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport_error(e, what, self.config.timeout))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let wait = retry_after(resp.headers());
        let body = resp.bytes().await.unwrap_or_default();
        Err(ApiError::parse(status.as_u16(), &body).into_error(what, wait))
    }

    /// Sends and decodes a JSON answer. A body that fails mid-read (a reset) is retried like a
    /// failed send, in the same retry budget.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: impl Into<Payload<'_>>,
        what: &str,
    ) -> Result<T> {
        let body = body.into();
        let bytes = self
            .retrying(what, || async {
                let resp = self.once(method.clone(), url, body, what, true).await?;
                resp.bytes()
                    .await
                    .map_err(|e| transport_error(e, what, self.config.timeout))
            })
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::backend("dashscope", format!("{what}: unexpected answer"), e))
    }
}

/// A failure below HTTP (connect, time-out, reset) as a typed, retryable error.
pub(crate) fn transport_error(e: reqwest::Error, what: &str, timeout: Duration) -> Error {
    if e.is_timeout() {
        Error::Timeout {
            what: what.to_string(),
            after: timeout,
        }
    } else if e.is_connect() || e.is_request() || e.is_body() || e.is_decode() {
        Error::Unavailable {
            message: format!("{what}: {e}"),
            source: Some(Box::new(e)),
        }
    } else {
        Error::backend("dashscope", what.to_string(), e)
    }
}
