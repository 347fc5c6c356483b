//! [`BailianConfig`]: where DashScope is, the key, time-outs and the retry policy.

use std::time::Duration;

use rag_core::{Error, Result, RetryPolicy, Secret};

/// DashScope regions with their own endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// China (Beijing): `dashscope.aliyuncs.com`.
    Beijing,
    /// International (Singapore): `dashscope-intl.aliyuncs.com`.
    Singapore,
}

impl std::str::FromStr for Region {
    type Err = Error;

    /// `beijing` / `cn-beijing`, or `singapore` / `ap-southeast-1` / `intl`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "beijing" | "cn-beijing" => Ok(Self::Beijing),
            "singapore" | "ap-southeast-1" | "intl" => Ok(Self::Singapore),
            other => Err(Error::invalid(format!(
                "DashScope region {other:?}: use beijing (cn-beijing) or singapore (ap-southeast-1)"
            ))),
        }
    }
}

impl Region {
    fn host(self) -> &'static str {
        match self {
            Self::Beijing => "https://dashscope.aliyuncs.com",
            Self::Singapore => "https://dashscope-intl.aliyuncs.com",
        }
    }
}

/// Base URL, key, timeout and retry policy: configuration, never constants at call sites.
#[derive(Debug, Clone)]
pub struct BailianConfig {
    region: Region,
    api_base: Option<String>,
    native_base: Option<String>,
    api_key: Option<Secret>,
    workspace: Option<String>,
    /// Time limit of one HTTP request (for a stream: of the wait between two chunks).
    pub timeout: Duration,
    /// Time limit of establishing a connection.
    pub connect_timeout: Duration,
    /// Retries of a request answered 429 or 5xx, or that timed out or lost its connection:
    /// pauses double from `retry.initial_backoff` up to `retry.max_backoff`, a `Retry-After`
    /// header first (capped as well).
    pub retry: RetryPolicy,
    /// Embedding requests in flight at once.
    pub embed_concurrency: usize,
}

impl BailianConfig {
    /// Environment variable of the API key.
    pub const ENV_API_KEY: &'static str = "DASHSCOPE_API_KEY";
    /// Environment variable overriding the OpenAI-compatible base URL.
    pub const ENV_API_BASE: &'static str = "DASHSCOPE_BASE_URL";
    /// Environment variable overriding the native API base URL (fine-tunes, deployments).
    pub const ENV_NATIVE_BASE: &'static str = "DASHSCOPE_NATIVE_BASE_URL";
    /// Environment variable of the workspace id (`llm-…`) for keys of a workspace other than
    /// the account's default one.
    pub const ENV_WORKSPACE: &'static str = "DASHSCOPE_WORKSPACE_ID";

    /// Defaults for `region`: 60 s timeout, 10 s to connect, 3 retries from 500 ms backoff
    /// (at most 20 s), 4 embedding requests in flight, no key.
    pub fn new(region: Region) -> Self {
        Self {
            region,
            api_base: None,
            native_base: None,
            api_key: None,
            workspace: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::new(3, Duration::from_millis(500), Duration::from_secs(20)),
            embed_concurrency: 4,
        }
    }

    /// A client for any OpenAI-compatible server at `base` (vLLM, llama.cpp server, Ollama …),
    /// with the key, if any, from `DASHSCOPE_API_KEY`.
    pub fn openai_compatible(base: impl Into<String>) -> Self {
        let config = Self::new(Region::Beijing).with_api_base(base);
        match Secret::from_env(Self::ENV_API_KEY) {
            Some(key) => config.with_api_key(key),
            None => config,
        }
    }

    /// Reads `DASHSCOPE_API_KEY` (required), `DASHSCOPE_BASE_URL`,
    /// `DASHSCOPE_NATIVE_BASE_URL` and `DASHSCOPE_WORKSPACE_ID` (optional).
    pub fn from_env(region: Region) -> Result<Self> {
        let key = Secret::from_env(Self::ENV_API_KEY).ok_or_else(|| Error::Auth {
            message: format!("{} is not set", Self::ENV_API_KEY),
        })?;
        let mut config = Self::new(region).with_api_key(key);
        if let Ok(base) = std::env::var(Self::ENV_API_BASE) {
            config = config.with_api_base(base);
        }
        if let Ok(base) = std::env::var(Self::ENV_NATIVE_BASE) {
            config = config.with_native_base(base);
        }
        if let Some(ws) = std::env::var(Self::ENV_WORKSPACE)
            .ok()
            .filter(|w| !w.trim().is_empty())
        {
            config = config.with_workspace(ws);
        }
        Ok(config)
    }

    /// Talks to another OpenAI-compatible server.
    pub fn with_api_base(mut self, base: impl Into<String>) -> Self {
        self.api_base = Some(base.into().trim_end_matches('/').to_string());
        self
    }

    /// Uses this API key.
    pub fn with_api_key(mut self, key: Secret) -> Self {
        self.api_key = Some(key);
        self
    }

    /// Sends every request in this workspace: the `X-DashScope-WorkSpace` header, which a key
    /// of a workspace other than the account's default one needs (without it the service
    /// answers as if the workspace did not exist).
    pub fn with_workspace(mut self, workspace: impl Into<String>) -> Self {
        self.workspace = Some(workspace.into().trim().to_string());
        self
    }

    /// The workspace id, if set.
    pub fn workspace(&self) -> Option<&str> {
        self.workspace.as_deref()
    }

    /// The API key, if set.
    pub fn api_key(&self) -> Option<&Secret> {
        self.api_key.as_ref()
    }

    /// The OpenAI-compatible base URL (`…/compatible-mode/v1`).
    pub fn api_base(&self) -> String {
        self.api_base
            .clone()
            .unwrap_or_else(|| format!("{}/compatible-mode/v1", self.region.host()))
    }

    /// Talks to the native API at another base (a workspace-specific domain, a proxy).
    pub fn with_native_base(mut self, base: impl Into<String>) -> Self {
        self.native_base = Some(base.into().trim_end_matches('/').to_string());
        self
    }

    /// The native DashScope API base (`…/api/v1`), where models, fine-tunes and deployments live.
    pub fn native_base(&self) -> String {
        self.native_base
            .clone()
            .unwrap_or_else(|| format!("{}/api/v1", self.region.host()))
    }

    /// The region.
    pub fn region(&self) -> Region {
        self.region
    }

    /// Whether the native API is the one Model Studio's fine-tune and deployment references
    /// document: Beijing's (or a base set explicitly, which is the caller's choice).
    pub(crate) fn native_is_documented(&self) -> bool {
        self.region == Region::Beijing || self.native_base.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_pick_their_hosts() {
        let c = BailianConfig::new(Region::Beijing);
        assert_eq!(
            c.api_base(),
            "https://dashscope.aliyuncs.com/compatible-mode/v1"
        );
        assert_eq!(c.native_base(), "https://dashscope.aliyuncs.com/api/v1");
        let c = BailianConfig::new(Region::Beijing).with_api_base("http://localhost:11434/v1/");
        assert_eq!(c.api_base(), "http://localhost:11434/v1");
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let c = BailianConfig::new(Region::Singapore).with_api_key(Secret::new("sk-abcdef"));
        assert!(!format!("{c:?}").contains("sk-abcdef"));
    }
}
