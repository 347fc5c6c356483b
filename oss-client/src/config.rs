use std::time::Duration;

use rag_core::{AccessKey, Error, Result};

/// Smallest multipart part S3 and OSS accept (except the last part).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// How to reach OSS: region (or an explicit endpoint for any S3-compatible server), network,
/// credentials, and the transfer and retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OssConfig {
    region: String,
    endpoint: Option<String>,
    internal: bool,
    path_style: bool,
    cname: Option<Cname>,
    credentials: Option<AccessKey>,
    /// Objects larger than this are uploaded in parts of this size (at least 5 MiB).
    pub part_size: usize,
    /// Parts of one upload in flight at once.
    pub part_concurrency: usize,
    /// Attempts per request (first try included); 429, 5xx, SlowDown and time-outs are retried
    /// with exponential backoff.
    pub max_attempts: u32,
    /// First backoff between attempts (doubles, with jitter).
    pub initial_backoff: Duration,
    /// Time limit of one attempt.
    pub attempt_timeout: Duration,
    /// Time limit to connect.
    pub connect_timeout: Duration,
}

impl OssConfig {
    /// Environment variable naming the region (`cn-hangzhou`).
    pub const ENV_REGION: &'static str = "OSS_REGION";
    /// Environment variable overriding the endpoint (an S3-compatible server's URL).
    pub const ENV_ENDPOINT: &'static str = "OSS_ENDPOINT";
    /// Environment variable naming a custom domain and its bucket, `bucket=https://domain`
    /// ([`OssConfig::with_cname`]).
    pub const ENV_CNAME: &'static str = "OSS_CNAME";

    /// Configuration for `region` (`cn-hangzhou`, `ap-southeast-1` …).
    pub fn new(region: impl Into<String>) -> Result<Self> {
        let region = region.into();
        let ok = !region.is_empty()
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(Error::invalid(format!(
                "{region:?} is not an OSS region id"
            )));
        }
        Ok(Self {
            region,
            endpoint: None,
            internal: false,
            path_style: false,
            cname: None,
            credentials: None,
            part_size: 16 * 1024 * 1024,
            part_concurrency: 4,
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
        })
    }

    /// Reads `OSS_REGION`, optional `OSS_ENDPOINT` and `OSS_CNAME`, and the standard Alibaba
    /// Cloud credentials.
    pub fn from_env() -> Result<Self> {
        let region = std::env::var(Self::ENV_REGION).map_err(|_| {
            Error::invalid(format!(
                "{} is not set (e.g. cn-hangzhou)",
                Self::ENV_REGION
            ))
        })?;
        let mut config = Self::new(region)?.with_credentials(AccessKey::from_env()?);
        if let Ok(endpoint) = std::env::var(Self::ENV_ENDPOINT) {
            config = config.with_endpoint(endpoint);
        }
        config.cname_from_env()
    }

    /// Uses the VPC-internal endpoint (free traffic from ECS and PAI in the same region).
    pub fn internal(mut self, internal: bool) -> Self {
        self.internal = internal;
        self
    }

    /// Talks to `endpoint` instead (any S3-compatible server, e.g. a local one in tests).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Reaches `bucket` through its custom domain `domain` (`https://docs.example.com`), the
    /// bucket's CNAME: requests go to `domain/key` (the domain names the bucket, so neither host
    /// nor path carries it), signed for the configured region, as the OSS SDKs' `cname` mode
    /// sends them (<https://www.alibabacloud.com/help/en/oss/developer-reference/use-custom-domain-names>).
    /// Another bucket is refused before any request (the domain would serve its own bucket),
    /// and there is no listing of buckets through a domain.
    pub fn with_cname(mut self, bucket: impl Into<String>, domain: impl Into<String>) -> Self {
        self.cname = Some(Cname {
            bucket: bucket.into(),
            domain: domain.into().trim_end_matches('/').to_string(),
        });
        self
    }

    /// The custom domain, if set.
    pub fn cname(&self) -> Option<&Cname> {
        self.cname.as_ref()
    }

    /// Reads [`OssConfig::ENV_CNAME`] (`bucket=https://domain`) when it is set.
    pub fn cname_from_env(self) -> Result<Self> {
        match std::env::var(Self::ENV_CNAME) {
            Ok(v) if !v.trim().is_empty() => self.with_cname_spec(&v),
            _ => Ok(self),
        }
    }

    /// [`OssConfig::with_cname`] from `bucket=https://domain`.
    pub fn with_cname_spec(self, spec: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(format!(
                "{}={spec:?}: expected bucket=https://your.domain",
                Self::ENV_CNAME
            ))
        };
        let (bucket, domain) = spec.trim().split_once('=').ok_or_else(bad)?;
        let (bucket, domain) = (bucket.trim(), domain.trim());
        if bucket.is_empty() || !(domain.starts_with("https://") || domain.starts_with("http://")) {
            return Err(bad());
        }
        Ok(self.with_cname(bucket, domain))
    }

    /// Addresses buckets in the path (`endpoint/bucket/key`) rather than the host name
    /// (`bucket.endpoint/key`). OSS needs virtual-hosted addressing (the default); local S3
    /// servers on `127.0.0.1` need path style.
    pub fn path_style(mut self, path_style: bool) -> Self {
        self.path_style = path_style;
        self
    }

    /// Whether buckets are addressed in the path.
    pub fn is_path_style(&self) -> bool {
        self.path_style
    }

    /// Sets the multipart part size (raised to the 5 MiB minimum).
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// Uses these credentials.
    pub fn with_credentials(mut self, credentials: AccessKey) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The credentials, if set.
    pub fn credentials(&self) -> Option<&AccessKey> {
        self.credentials.as_ref()
    }

    /// The S3-compatible endpoint: the override, or OSS's
    /// `https://s3.oss-<region>[-internal].aliyuncs.com`.
    pub fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None if self.internal => {
                format!("https://s3.oss-{}-internal.aliyuncs.com", self.region)
            }
            None => format!("https://s3.oss-{}.aliyuncs.com", self.region),
        }
    }
}

/// A bucket's custom domain ([`OssConfig::with_cname`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cname {
    /// The bucket the domain is mapped to.
    pub bucket: String,
    /// The domain as a URL (`https://docs.example.com`).
    pub domain: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rag_core::Secret;

    #[test]
    fn a_custom_domain_is_read_as_bucket_and_url() {
        let c = OssConfig::new("cn-shanghai")
            .unwrap()
            .with_cname_spec(" docs = https://docs.example.com/ ")
            .unwrap();
        let cname = c.cname().unwrap();
        assert_eq!(
            (cname.bucket.as_str(), cname.domain.as_str()),
            ("docs", "https://docs.example.com")
        );
        for bad in [
            "https://docs.example.com",
            "=https://x",
            "docs=docs.example.com",
        ] {
            let err = OssConfig::new("cn-shanghai")
                .unwrap()
                .with_cname_spec(bad)
                .unwrap_err();
            assert!(err.to_string().contains("OSS_CNAME"), "{bad}: {err}");
        }
    }

    #[test]
    fn endpoints_follow_region_network_and_override() {
        let c = OssConfig::new("ap-southeast-1").unwrap();
        assert_eq!(c.endpoint(), "https://s3.oss-ap-southeast-1.aliyuncs.com");
        assert_eq!(
            c.clone().internal(true).endpoint(),
            "https://s3.oss-ap-southeast-1-internal.aliyuncs.com"
        );
        assert_eq!(
            c.with_endpoint("http://127.0.0.1:9000").endpoint(),
            "http://127.0.0.1:9000"
        );
        assert!(OssConfig::new("CN Hangzhou").is_err());
    }

    #[test]
    fn debug_output_hides_the_secret() {
        let c = OssConfig::new("cn-beijing")
            .unwrap()
            .with_credentials(AccessKey {
                id: "LTAIexample".into(),
                secret: Secret::new("s3cr3t-value"),
                security_token: None,
            });
        let shown = format!("{c:?}");
        assert!(
            shown.contains("LTAIexample") && !shown.contains("s3cr3t-value"),
            "{shown}"
        );
    }
}
