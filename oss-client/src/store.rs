//! [`OssStore`]: rag-core's `ObjectStore` over the S3 API of OSS (or any S3-compatible server).

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use rag_core::store::{ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult};
use rag_core::{Error, Result, Scheme, StoreUri};

use crate::config::OssConfig;
use crate::error::map_sdk_error;
use crate::multipart::{unquote, upload_stream};

/// User metadata key under which uploads by this crate record the SHA-256 of the content
/// (`x-amz-meta-ragloop-sha256`), so that copies can skip unchanged files.
pub const SHA256_METADATA: &str = "ragloop-sha256";

/// Resolves every request to the custom domain of [`OssConfig::with_cname`]: the domain's
/// URL, no bucket in host or path, SigV4 for `s3` in the region with S3's single URI
/// encoding (what the SDK's own resolver sets for OSS's regional endpoints).
#[derive(Debug)]
struct CnameResolver {
    cname: crate::config::Cname,
    region: String,
}

impl aws_sdk_s3::config::endpoint::ResolveEndpoint for CnameResolver {
    fn resolve_endpoint<'a>(
        &'a self,
        params: &'a aws_sdk_s3::config::endpoint::Params,
    ) -> aws_sdk_s3::config::endpoint::EndpointFuture<'a> {
        use aws_smithy_types::Document;
        let result = match params.bucket() {
            Some(b) if b != self.cname.bucket => Err(format!(
                "{} serves bucket {:?}, not {b:?}: name that bucket, or drop the custom domain \
                 to reach others through the regional endpoint",
                self.cname.domain, self.cname.bucket
            )
            .into()),
            _ => {
                let scheme: std::collections::HashMap<String, Document> = [
                    ("name".to_string(), Document::from("sigv4")),
                    ("signingName".to_string(), Document::from("s3")),
                    (
                        "signingRegion".to_string(),
                        Document::from(self.region.as_str()),
                    ),
                    ("disableDoubleEncoding".to_string(), Document::from(true)),
                ]
                .into_iter()
                .collect();
                Ok(aws_smithy_types::endpoint::Endpoint::builder()
                    .url(self.cname.domain.clone())
                    .property("authSchemes", vec![Document::from(scheme)])
                    .build())
            }
        };
        aws_sdk_s3::config::endpoint::EndpointFuture::ready(result)
    }
}

/// An [`ObjectStore`] on OSS through its S3-compatible API.
///
/// Accepts `oss://` and `s3://` URIs. Large writes go up in parts
/// ([`OssConfig::part_size`], [`OssConfig::part_concurrency`]) without holding the object in
/// memory, and a failed upload is aborted so that no parts linger. Requests are retried on
/// throttling, 5xx and time-outs with exponential backoff.
#[derive(Debug, Clone)]
pub struct OssStore {
    client: Client,
    config: OssConfig,
}

impl OssStore {
    /// A store for `config`. Fails with [`Error::Auth`] when it has no credentials.
    pub fn new(config: OssConfig) -> Result<Self> {
        let key = config.credentials().ok_or_else(|| Error::Auth {
            message: "no OSS credentials: set ALIBABA_CLOUD_ACCESS_KEY_ID and \
                      ALIBABA_CLOUD_ACCESS_KEY_SECRET"
                .into(),
        })?;
        let credentials = Credentials::new(
            key.id.clone(),
            key.secret.expose().to_string(),
            key.security_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "ragloop",
        );
        let mut s3 = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region().to_string()))
            .endpoint_url(config.endpoint());
        if let Some(cname) = config.cname() {
            s3 = s3.endpoint_resolver(CnameResolver {
                cname: cname.clone(),
                region: config.region().to_string(),
            });
        }
        let s3 = s3
            .credentials_provider(credentials)
            .force_path_style(config.is_path_style())
            // OSS rejects the SDK's default CRC32 checksum trailers on uploads.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.max(1))
                    .with_initial_backoff(config.initial_backoff),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(config.attempt_timeout)
                    .connect_timeout(config.connect_timeout)
                    .build(),
            )
            .build();
        Ok(Self {
            client: Client::from_conf(s3),
            config,
        })
    }

    /// The underlying SDK client, for operations this crate does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &OssConfig {
        &self.config
    }

    /// Creates `bucket` (for tests and set-up scripts); an existing bucket of yours is fine.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_string);
                match code.as_deref() {
                    Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists") => Ok(()),
                    _ => Err(map_sdk_error(e, bucket)),
                }
            }
        }
    }

    /// Uploads `data` with user metadata (used by copies to record the content hash).
    pub async fn put_with_metadata(
        &self,
        uri: &StoreUri,
        data: ByteStream,
        metadata: &[(&str, String)],
    ) -> Result<PutResult> {
        let key = self.key(uri)?;
        upload_stream(
            &self.client,
            &self.config,
            uri.bucket(),
            key,
            data,
            metadata,
        )
        .await
    }

    /// User metadata of an object (`x-amz-meta-*`, keys without the prefix).
    pub async fn metadata(&self, uri: &StoreUri) -> Result<(ObjectMeta, Vec<(String, String)>)> {
        let key = self.key(uri)?;
        let head = self
            .client
            .head_object()
            .bucket(uri.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &uri.to_string()))?;
        let meta = object_meta(
            uri.clone(),
            head.content_length().unwrap_or(0).max(0) as u64,
            head.last_modified(),
            head.e_tag(),
        );
        let user = head
            .metadata()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        Ok((meta, user))
    }

    async fn get_object(
        &self,
        uri: &StoreUri,
        range: Option<String>,
    ) -> Result<(ObjectMeta, SdkStream)> {
        let (meta, body, _) = self.get_object_if(uri, range, None).await?;
        Ok((meta, body))
    }

    /// GetObject, with `If-Match: if_match` when given (a changed object is then refused with
    /// 412 rather than spliced onto the bytes read so far).
    async fn get_object_if(
        &self,
        uri: &StoreUri,
        range: Option<String>,
        if_match: Option<String>,
    ) -> Result<(ObjectMeta, SdkStream, Option<String>)> {
        let key = self.key(uri)?;
        let out = self
            .client
            .get_object()
            .bucket(uri.bucket())
            .key(key)
            .set_range(range)
            .set_if_match(if_match)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &uri.to_string()))?;
        let size = match out
            .content_range()
            .and_then(|r| r.rsplit('/').next()?.parse().ok())
        {
            Some(total) => total,
            None => out.content_length().unwrap_or(0).max(0) as u64,
        };
        let meta = object_meta(uri.clone(), size, out.last_modified(), out.e_tag());
        let content_range = out.content_range().map(str::to_string);
        Ok((meta, out.body, content_range))
    }
}

impl OssStore {
    /// [`object_key`], and with a custom domain, the domain's bucket only (the domain would
    /// answer for its own bucket whatever the URI says).
    fn key<'a>(&self, uri: &'a StoreUri) -> Result<&'a str> {
        self.check_bucket(uri)?;
        object_key(uri)
    }

    fn check_bucket(&self, uri: &StoreUri) -> Result<()> {
        match self.config.cname() {
            Some(c) if c.bucket != uri.bucket() => Err(Error::invalid(format!(
                "{uri}: the custom domain {} serves bucket {:?} only; name that bucket, or \
                 drop the custom domain (OSS_CNAME) to reach others through the regional endpoint",
                c.domain, c.bucket
            ))),
            _ => Ok(()),
        }
    }
}

/// The key of an object URI; prefixes and foreign schemes are rejected.
pub(crate) fn object_key(uri: &StoreUri) -> Result<&str> {
    check_scheme(uri)?;
    if uri.is_prefix() {
        return Err(Error::invalid(format!(
            "{uri} names a prefix, not an object"
        )));
    }
    Ok(uri.key())
}

fn check_scheme(uri: &StoreUri) -> Result<()> {
    match uri.scheme() {
        Scheme::Oss | Scheme::S3 => Ok(()),
        other => Err(Error::invalid(format!(
            "{uri}: the OSS store serves oss:// and s3:// URIs, not {}://",
            other.as_str()
        ))),
    }
}

/// Metadata from the fields HeadObject, GetObject and ListObjectsV2 all answer with.
fn object_meta(
    uri: StoreUri,
    size: u64,
    last_modified: Option<&aws_sdk_s3::primitives::DateTime>,
    e_tag: Option<&str>,
) -> ObjectMeta {
    ObjectMeta {
        uri,
        size,
        last_modified: last_modified.and_then(|t| SystemTime::try_from(*t).ok()),
        e_tag: e_tag.map(unquote),
    }
}

/// Percent-encodes a key for the `x-amz-copy-source` header (keeps `/` and unreserved bytes).
fn encode_copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where a download stands: the body being read, how far it got, and what a resumption needs.
struct Download {
    store: OssStore,
    uri: StoreUri,
    e_tag: Option<String>,
    size: u64,
    offset: u64,
    body: SdkStream,
    resumes_left: u32,
}

/// The object's bytes as a stream. A body that breaks off is resumed where it stopped — a
/// ranged GET from the offset reached, `If-Match` the first answer's ETag, so a replaced
/// object fails (412) instead of mixing two versions — up to `max_attempts - 1` times; then
/// the stream ends with [`Error::Unavailable`], never short.
fn body_stream(store: &OssStore, meta: &ObjectMeta, body: SdkStream) -> ByteStream {
    let state = Download {
        store: store.clone(),
        uri: meta.uri.clone(),
        e_tag: meta.e_tag.clone(),
        size: meta.size,
        offset: 0,
        body,
        resumes_left: store.config.max_attempts.saturating_sub(1),
    };
    stream::try_unfold(state, |mut d| async move {
        loop {
            match d.body.try_next().await {
                Ok(Some(chunk)) => {
                    d.offset += chunk.len() as u64;
                    return Ok(Some((chunk, d)));
                }
                Ok(None) => return Ok(None),
                Err(e) if d.resumes_left > 0 && d.e_tag.is_some() && d.offset < d.size => {
                    d.resumes_left -= 1;
                    tracing::warn!(uri = %d.uri, offset = d.offset, error = %e, "download broke off; resuming");
                    let range = Some(format!("bytes={}-", d.offset));
                    let if_match = d.e_tag.as_ref().map(|e| format!("\"{e}\""));
                    let (_, body, answered) =
                        d.store.get_object_if(&d.uri, range, if_match).await?;
                    // Only the asked-for bytes may follow: a server that ignored the range
                    // would repeat the start of the object.
                    let expected = format!("bytes {}-", d.offset);
                    if !answered.as_deref().is_some_and(|r| r.starts_with(&expected)) {
                        return Err(Error::Unavailable {
                            message: format!(
                                "{}: download broke off at byte {} and the server did not resume \
                                 it (Content-Range {answered:?})",
                                d.uri, d.offset
                            ),
                            source: None,
                        });
                    }
                    d.body = body;
                }
                Err(e) => {
                    return Err(Error::Unavailable {
                        message: format!("{}: download broke off: {e}", d.uri),
                        source: Some(Box::new(e)),
                    });
                }
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for OssStore {
    async fn put(&self, uri: &StoreUri, data: Bytes) -> Result<PutResult> {
        let data = stream::once(async { Ok(data) }).boxed();
        self.put_with_metadata(uri, data, &[]).await
    }

    async fn put_stream(&self, uri: &StoreUri, data: ByteStream) -> Result<PutResult> {
        self.put_with_metadata(uri, data, &[]).await
    }

    async fn get(&self, uri: &StoreUri) -> Result<GetResult> {
        let (meta, body) = self.get_object(uri, None).await?;
        Ok(GetResult {
            stream: body_stream(self, &meta, body),
            meta,
        })
    }

    async fn get_range(&self, uri: &StoreUri, range: Range<u64>) -> Result<Bytes> {
        if range.start >= range.end {
            // HTTP cannot ask for zero bytes; check the object and the bounds instead.
            let meta = self.head(uri).await?;
            rag_core::store::clamp_range(uri, range, meta.size)?;
            return Ok(Bytes::new());
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        let (_, body) = self.get_object(uri, Some(header)).await?;
        let data = body
            .collect()
            .await
            .map_err(|e| Error::Unavailable {
                message: format!("{uri}: download broke off: {e}"),
                source: Some(Box::new(e)),
            })?
            .into_bytes();
        Ok(data)
    }

    async fn head(&self, uri: &StoreUri) -> Result<ObjectMeta> {
        Ok(self.metadata(uri).await?.0)
    }

    async fn list_page(
        &self,
        prefix: &StoreUri,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        check_scheme(prefix)?;
        self.check_bucket(prefix)?;
        let out = self
            .client
            .list_objects_v2()
            .bucket(prefix.bucket())
            .prefix(prefix.key())
            .set_continuation_token(token)
            .max_keys(max_keys.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &prefix.to_string()))?;
        // The SDK reads a cut XML body as far as it goes, so a listing that lost its end would
        // look whole: check the fields every ListObjectsV2 answer carries.
        let broken = |what: &str| {
            Error::backend_msg(
                "oss",
                format!("listing {prefix}: {what} (a cut answer, or not a ListObjectsV2 answer)"),
            )
        };
        let mut objects = Vec::new();
        for o in out.contents() {
            let Some(key) = o.key() else {
                return Err(broken("an entry has no Key"));
            };
            objects.push(object_meta(
                StoreUri::new(prefix.scheme(), prefix.bucket(), key)?,
                o.size().unwrap_or(0).max(0) as u64,
                o.last_modified(),
                o.e_tag(),
            ));
        }
        let listed = out.contents().len() + out.common_prefixes().len();
        if let Some(count) = out.key_count()
            && usize::try_from(count).ok() != Some(listed)
        {
            return Err(broken(&format!(
                "KeyCount is {count} but {listed} entries came"
            )));
        }
        let next_token = match (out.is_truncated(), out.next_continuation_token()) {
            (None, _) => return Err(broken("the answer has no IsTruncated")),
            (Some(true), None) => {
                return Err(broken("IsTruncated without a NextContinuationToken"));
            }
            (Some(true), Some(token)) => Some(token.to_string()),
            (Some(false), _) => None,
        };
        Ok(ListPage {
            objects,
            next_token,
        })
    }

    async fn delete(&self, uri: &StoreUri) -> Result<()> {
        let key = self.key(uri)?;
        self.client
            .delete_object()
            .bucket(uri.bucket())
            .key(key)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &uri.to_string()))?;
        Ok(())
    }

    async fn copy(&self, from: &StoreUri, to: &StoreUri) -> Result<()> {
        let (src, dst) = (self.key(from)?, self.key(to)?);
        self.client
            .copy_object()
            .copy_source(encode_copy_source(from.bucket(), src))
            .bucket(to.bucket())
            .key(dst)
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &from.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_percent_encoded_but_keeps_slashes() {
        assert_eq!(
            encode_copy_source("b", "a b/ü+x.txt"),
            "b/a%20b/%C3%BC%2Bx.txt"
        );
    }

    #[test]
    fn stores_need_credentials_and_serve_only_s3_schemes() {
        let err = OssStore::new(OssConfig::new("cn-hangzhou").unwrap()).unwrap_err();
        assert!(matches!(err, Error::Auth { .. }), "{err}");
        assert!(object_key(&"mem://bucket/k".parse().unwrap()).is_err());
        assert!(object_key(&"oss://bucket/dir/".parse().unwrap()).is_err());
    }
}
