//! [`PaiConfig`]: region, workspace, endpoint, credentials, time-out and retry policy.

use std::time::Duration;

use rag_core::{AccessKey, Error, Result, RetryPolicy};

/// The PAI-DLC API version this client speaks.
pub const API_VERSION: &str = "2020-12-03";

/// How to reach PAI-DLC: region, workspace, optional endpoint override, credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaiConfig {
    region: String,
    workspace_id: String,
    endpoint: Option<String>,
    credentials: Option<AccessKey>,
    /// Retries of a call answered with throttling or 5xx, or that timed out (default 4 from
    /// 500 ms, doubling up to 20 s; `Retry-After` first). CreateJob is retried only when the
    /// service surely did not act on it.
    pub retry: RetryPolicy,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
}

impl PaiConfig {
    /// Configuration for `region` and PAI workspace `workspace_id`.
    pub fn new(region: impl Into<String>, workspace_id: impl Into<String>) -> Result<Self> {
        let region = region.into();
        let workspace_id = workspace_id.into();
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Error::invalid(format!("{region:?} is not a region id")));
        }
        if workspace_id.trim().is_empty() {
            return Err(Error::invalid("the PAI workspace id is empty"));
        }
        Ok(Self {
            region,
            workspace_id,
            endpoint: None,
            credentials: None,
            retry: RetryPolicy::new(4, Duration::from_millis(500), Duration::from_secs(20)),
            request_timeout: Duration::from_secs(30),
        })
    }

    /// Reads `PAI_REGION`, `PAI_WORKSPACE_ID`, optional `PAI_DLC_ENDPOINT` and the standard
    /// Alibaba Cloud credentials.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| Error::invalid(format!("{name} is not set")))
        };
        let mut config = Self::new(var("PAI_REGION")?, var("PAI_WORKSPACE_ID")?)?
            .with_credentials(AccessKey::from_env()?);
        if let Ok(endpoint) = var("PAI_DLC_ENDPOINT") {
            config = config.with_endpoint(endpoint);
        }
        Ok(config)
    }

    /// Talks to `endpoint` instead (a mock server in tests, a VPC endpoint).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Uses these credentials.
    pub fn with_credentials(mut self, credentials: AccessKey) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The workspace jobs are created in.
    pub fn workspace_id(&self) -> &str {
        &self.workspace_id
    }

    /// The credentials, if set.
    pub fn credentials(&self) -> Option<&AccessKey> {
        self.credentials.as_ref()
    }

    /// `https://pai-dlc.<region>.aliyuncs.com`, or the override.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| format!("https://pai-dlc.{}.aliyuncs.com", self.region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_regional_unless_overridden() {
        let c = PaiConfig::new("ap-southeast-1", "ws-1").unwrap();
        assert_eq!(c.endpoint(), "https://pai-dlc.ap-southeast-1.aliyuncs.com");
        assert_eq!(
            c.with_endpoint("http://127.0.0.1:1").endpoint(),
            "http://127.0.0.1:1"
        );
        assert!(PaiConfig::new("cn-shanghai", " ").is_err());
        assert!(PaiConfig::new("", "ws").is_err());
    }
}
