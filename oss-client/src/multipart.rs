//! Streaming uploads: one `PutObject` for small objects, a multipart upload with bounded
//! parallelism for large ones, aborted on any failure so that no orphaned parts are billed.

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use rag_core::store::{ByteStream, PutResult};
use rag_core::{Error, Result};

use crate::config::{MIN_PART_SIZE, OssConfig};
use crate::error::map_sdk_error;

/// Most parts one multipart upload may have (S3 and OSS alike).
pub const MAX_PARTS: i32 = 10_000;
/// Largest part S3 and OSS accept.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// Parts uploaded at each size before the size doubles ([`part_size`]).
const PARTS_PER_SIZE: i32 = 1_000;

/// The size of part `number` (from 1) of an upload whose length is unknown: `base` for the
/// first 1,000 parts, then doubling every 1,000 parts up to 5 GiB, so a stream of any size
/// a bucket can hold fits in the 10,000 parts a multipart upload may have (16 MiB parts
/// reach 16 GB at part 1,000 and over 5 TB by part 10,000) while ordinary objects keep
/// the configured size (and memory).
pub fn part_size(base: usize, number: i32) -> usize {
    let doublings = ((number.max(1) - 1) / PARTS_PER_SIZE).min(20) as u32;
    base.saturating_mul(1 << doublings).min(MAX_PART_SIZE)
}

/// Uploads `data` to `bucket/key`, holding at most `part_size × (part_concurrency + 1)` bytes
/// (the part size grows past the 1,000th part: [`part_size`]).
pub(crate) async fn upload_stream(
    client: &Client,
    config: &OssConfig,
    bucket: &str,
    key: &str,
    mut data: ByteStream,
    metadata: &[(&str, String)],
) -> Result<PutResult> {
    let part_size = config.part_size.max(MIN_PART_SIZE);
    let what = format!("{bucket}/{key}");
    let mut buf = BytesMut::new();
    let mut ended = false;
    while buf.len() <= part_size {
        match data.try_next().await? {
            Some(chunk) => buf.extend_from_slice(&chunk),
            None => {
                ended = true;
                break;
            }
        }
    }
    if ended && buf.len() <= part_size {
        let size = buf.len() as u64;
        let mut req = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(SdkStream::from(buf.freeze()));
        for (k, v) in metadata {
            req = req.metadata(*k, v);
        }
        let out = req.send().await.map_err(|e| map_sdk_error(e, &what))?;
        return Ok(PutResult {
            size,
            e_tag: out.e_tag().map(unquote),
        });
    }

    let mut create = client.create_multipart_upload().bucket(bucket).key(key);
    for (k, v) in metadata {
        create = create.metadata(*k, v);
    }
    let upload_id = create
        .send()
        .await
        .map_err(|e| map_sdk_error(e, &what))?
        .upload_id()
        .ok_or_else(|| Error::backend_msg("oss", format!("{what}: no upload id returned")))?
        .to_string();
    let parts = Parts {
        client,
        bucket,
        key,
        upload_id: &upload_id,
        what: &what,
    };
    match parts
        .upload_all(buf, ended, data, part_size, config.part_concurrency.max(1))
        .await
    {
        Ok((completed, size)) => {
            let out = client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                )
                .send()
                .await;
            match out {
                Ok(out) => Ok(PutResult {
                    size,
                    e_tag: out.e_tag().map(unquote),
                }),
                Err(e) => {
                    parts.abort().await;
                    Err(map_sdk_error(e, &what))
                }
            }
        }
        Err(e) => {
            parts.abort().await;
            Err(e)
        }
    }
}

struct Parts<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    upload_id: &'a str,
    what: &'a str,
}

impl Parts<'_> {
    /// Uploads the buffered bytes and the rest of the stream as numbered parts; returns the
    /// completed parts in order and the total size.
    async fn upload_all(
        &self,
        mut buf: BytesMut,
        mut ended: bool,
        mut data: ByteStream,
        base: usize,
        concurrency: usize,
    ) -> Result<(Vec<CompletedPart>, u64)> {
        let mut in_flight = FuturesUnordered::new();
        let mut done = Vec::new();
        let mut number = 0i32;
        let mut size = 0u64;
        loop {
            let part_size = part_size(base, number + 1);
            while !ended && buf.len() < part_size {
                match data.try_next().await? {
                    Some(chunk) => buf.extend_from_slice(&chunk),
                    None => ended = true,
                }
            }
            if buf.is_empty() {
                break;
            }
            let take = buf.len().min(part_size);
            if number == MAX_PARTS {
                return Err(Error::invalid(format!(
                    "{}: more than {MAX_PARTS} parts of up to {} bytes: larger than one object can be",
                    self.what, MAX_PART_SIZE
                )));
            }
            let part = buf.split_to(take).freeze();
            number += 1;
            size += part.len() as u64;
            in_flight.push(self.upload_part(number, part));
            if in_flight.len() >= concurrency
                && let Some(result) = in_flight.next().await
            {
                done.push(result?);
            }
            if ended && buf.is_empty() {
                break;
            }
        }
        while let Some(result) = in_flight.next().await {
            done.push(result?);
        }
        done.sort_by_key(|p: &CompletedPart| p.part_number());
        tracing::debug!(
            upload = self.what,
            parts = done.len(),
            size,
            "multipart upload complete"
        );
        Ok((done, size))
    }

    async fn upload_part(&self, number: i32, data: Bytes) -> Result<CompletedPart> {
        let out = self
            .client
            .upload_part()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(self.upload_id)
            .part_number(number)
            .body(SdkStream::from(data))
            .send()
            .await
            .map_err(|e| map_sdk_error(e, &format!("{} part {number}", self.what)))?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(out.e_tag().map(str::to_string))
            .build())
    }

    async fn abort(&self) {
        let result = self
            .client
            .abort_multipart_upload()
            .bucket(self.bucket)
            .key(self.key)
            .upload_id(self.upload_id)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(upload = self.what, error = %map_sdk_error(e, self.what), "could not abort multipart upload");
        }
    }
}

/// An ETag without the quotes S3 puts around it.
pub(crate) fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_any_object_fits_in_ten_thousand() {
        let base = 16 * 1024 * 1024;
        assert_eq!(part_size(base, 1), base);
        assert_eq!(part_size(base, 1_000), base);
        assert_eq!(part_size(base, 1_001), 2 * base);
        assert_eq!(part_size(base, 10_000), MAX_PART_SIZE);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(base, n) as u64).sum();
        assert!(total > 5 * 1024u64.pow(4), "{total} bytes");
        // Even at the 5 MiB minimum, far beyond the 48.8 GB that fixed parts would allow.
        let total: u64 = (1..=MAX_PARTS)
            .map(|n| part_size(MIN_PART_SIZE, n) as u64)
            .sum();
        assert!(total > 1024u64.pow(4), "{total} bytes");
        assert!((1..=MAX_PARTS).all(|n| part_size(usize::MAX / 2, n) <= MAX_PART_SIZE));
    }
}
