//! Where the search cluster is and how to talk to it.

use std::time::Duration;

use rag_core::{Error, Result, RetryPolicy, Secret};

use crate::mapping::{Engine, HnswParams};

/// How requests authenticate.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No credentials (a local cluster with security off).
    #[default]
    None,
    /// HTTP basic auth (Alibaba Cloud Elasticsearch / OpenSearch: the `elastic` or admin user).
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: Secret,
    },
    /// An Elasticsearch API key as the cluster prints it: base64 of `id:api_key`, sent as
    /// `Authorization: ApiKey <encoded>`.
    ApiKey(Secret),
}

/// How [`Query::Hybrid`](rag_core::Query::Hybrid) searches run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HybridMode {
    /// The engine fuses: Elasticsearch `retriever.rrf` (8.14+, a licensed feature), OpenSearch
    /// a `hybrid` query through a normalisation search pipeline. An engine that refuses it
    /// (older version, licence) falls back to [`HybridMode::Client`] for the rest of the session.
    #[default]
    Native,
    /// Two searches (BM25 and kNN) fused client-side with reciprocal rank fusion
    /// ([`rag_core::rrf_fuse`]); works on every version and licence.
    Client,
}

/// When written documents become searchable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// Each bulk request waits until its documents are searchable (`refresh=wait_for`):
    /// read-your-writes, what the [`VectorIndex`](rag_core::VectorIndex) contract expects.
    #[default]
    WaitFor,
    /// Bulk requests return at once; call [`SearchIndex::refresh`](crate::SearchIndex::refresh)
    /// after a large load. Faster loads, searches may miss the newest documents until then.
    None,
}

impl Auth {
    /// Credentials from `RAGLOOP_SEARCH_API_KEY`, or `RAGLOOP_SEARCH_USER` +
    /// `RAGLOOP_SEARCH_PASSWORD`; none when neither is set.
    pub fn from_env() -> Result<Self> {
        Ok(
            if let Some(key) = Secret::from_env("RAGLOOP_SEARCH_API_KEY") {
                Auth::ApiKey(key)
            } else if let Ok(user) = std::env::var("RAGLOOP_SEARCH_USER") {
                let password = Secret::from_env("RAGLOOP_SEARCH_PASSWORD").ok_or_else(|| {
                    Error::invalid("RAGLOOP_SEARCH_USER is set but RAGLOOP_SEARCH_PASSWORD is not")
                })?;
                Auth::Basic { user, password }
            } else {
                Auth::None
            },
        )
    }
}

/// Configuration of a [`SearchIndex`](crate::SearchIndex).
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// Cluster URL, e.g. `https://es-cn-xxxx.elasticsearch.aliyuncs.com:9200`.
    pub url: String,
    /// Which engine answers there.
    pub engine: Engine,
    /// Credentials.
    pub auth: Auth,
    /// Time-out of one request.
    pub timeout: Duration,
    /// Retries of 429/5xx/time-outs/connection failures (whole requests, and bulk items in
    /// rounds).
    pub retry: RetryPolicy,
    /// Most documents in one `_bulk` request.
    pub bulk_max_docs: usize,
    /// Most bytes in one `_bulk` request (Elasticsearch's default limit is 100 MB; smaller
    /// requests keep memory and retry cost low).
    pub bulk_max_bytes: usize,
    /// Hybrid search strategy.
    pub hybrid: HybridMode,
    /// Refresh policy of writes.
    pub refresh: Refresh,
    /// HNSW parameters of new indexes.
    pub hnsw: HnswParams,
    /// OpenSearch only: the search pipeline hybrid queries run through.
    pub search_pipeline: String,
    /// The cluster's analyzer for the full-text field of new indexes, by name (`smartcn`,
    /// `ik_smart`, `ik_max_word` from plugins; built-in `cjk`, `standard`, …), used for
    /// documents and queries alike. `None`: the schema's [`rag_core::Analyzer`] as
    /// [`crate::mapping`] writes it. Checked with `_analyze` before an index is created, so
    /// a missing plugin is named before anything is written.
    pub text_analyzer: Option<String>,
}

impl SearchConfig {
    /// A configuration for `engine` at `url` with defaults: no auth, 30 s time-out, 5 retries
    /// from 200 ms up to 10 s, bulk requests of ≤ 500 documents and ≤ 10 MiB.
    pub fn new(url: impl Into<String>, engine: Engine) -> Self {
        Self {
            url: url.into(),
            engine,
            auth: Auth::None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::new(5, Duration::from_millis(200), Duration::from_secs(10)),
            bulk_max_docs: 500,
            bulk_max_bytes: 10 << 20,
            hybrid: HybridMode::Native,
            refresh: Refresh::WaitFor,
            hnsw: HnswParams::default(),
            search_pipeline: "ragloop-hybrid".into(),
            text_analyzer: None,
        }
    }

    /// Reads `RAGLOOP_SEARCH_URL` (required), `RAGLOOP_SEARCH_ENGINE` (`elasticsearch` or
    /// `opensearch`, default `elasticsearch`), `RAGLOOP_SEARCH_ANALYZER` (the cluster analyzer
    /// of the text field, optional), and credentials from `RAGLOOP_SEARCH_API_KEY` or
    /// `RAGLOOP_SEARCH_USER` + `RAGLOOP_SEARCH_PASSWORD`.
    pub fn from_env() -> Result<Self> {
        let url = std::env::var("RAGLOOP_SEARCH_URL")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                Error::invalid("RAGLOOP_SEARCH_URL is not set (the Elasticsearch/OpenSearch URL)")
            })?;
        let engine = match std::env::var("RAGLOOP_SEARCH_ENGINE").as_deref() {
            Err(_) | Ok("" | "elasticsearch" | "es" | "es8") => Engine::Elasticsearch8,
            Ok("opensearch" | "os") => Engine::OpenSearch2,
            Ok(other) => {
                return Err(Error::invalid(format!(
                    "RAGLOOP_SEARCH_ENGINE={other:?}: expected elasticsearch or opensearch"
                )));
            }
        };
        let mut config = Self::new(url, engine).with_auth(Auth::from_env()?);
        if let Ok(name) = std::env::var("RAGLOOP_SEARCH_ANALYZER")
            && !name.trim().is_empty()
        {
            config = config.with_text_analyzer(name.trim());
        }
        Ok(config)
    }

    /// Analyzes the full-text field of new indexes with the cluster's analyzer `name` (see
    /// [`SearchConfig::text_analyzer`]).
    pub fn with_text_analyzer(mut self, name: impl Into<String>) -> Self {
        self.text_analyzer = Some(name.into());
        self
    }

    /// Sets the credentials.
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the hybrid strategy.
    pub fn with_hybrid(mut self, mode: HybridMode) -> Self {
        self.hybrid = mode;
        self
    }

    /// Sets the refresh policy.
    pub fn with_refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// Sets the retry policy.
    pub fn with_retries(mut self, max_retries: u32, initial: Duration, max: Duration) -> Self {
        self.retry = RetryPolicy::new(max_retries, initial, max);
        self
    }

    /// Sets the bulk request limits (at least one document each).
    pub fn with_bulk_limits(mut self, max_docs: usize, max_bytes: usize) -> Self {
        self.bulk_max_docs = max_docs.max(1);
        self.bulk_max_bytes = max_bytes.max(1);
        self
    }

    /// Sets the request time-out.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_credentials() {
        let c = SearchConfig::new("http://x", Engine::Elasticsearch8).with_auth(Auth::Basic {
            user: "elastic".into(),
            password: Secret::new("hunter2-password"),
        });
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        let c = c.with_auth(Auth::ApiKey(Secret::new("c2VjcmV0LWtleQ==")));
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
    }
}
