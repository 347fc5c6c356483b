//! [`ObjectStore`]: where raw documents, models and vector shards live (seed steps 1, 2, 5).

use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::uri::StoreUri;

/// A stream of byte chunks: how objects are read and how large objects are written.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's address.
    pub uri: StoreUri,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, if the store records it.
    pub last_modified: Option<SystemTime>,
    /// An opaque version tag that changes when the content changes (an S3/OSS ETag).
    pub e_tag: Option<String>,
}

/// What a put returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    /// The bytes written.
    pub size: u64,
    /// The new version tag, if the store has one.
    pub e_tag: Option<String>,
}

/// A read in progress: the object's metadata and a stream of its bytes.
pub struct GetResult {
    /// Metadata of the object being read.
    pub meta: ObjectMeta,
    /// The object's bytes, in order.
    pub stream: ByteStream,
}

impl GetResult {
    /// Collects the whole object into memory. Use for objects known to be small.
    pub async fn bytes(self) -> Result<Bytes> {
        let mut buf = BytesMut::with_capacity(usize::try_from(self.meta.size).unwrap_or(0));
        let mut stream = self.stream;
        while let Some(chunk) = stream.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

impl std::fmt::Debug for GetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects of this page, in lexicographic key order.
    pub objects: Vec<ObjectMeta>,
    /// Token for the next page; `None` on the last page.
    pub next_token: Option<String>,
}

/// Largest page a [`ObjectStore::list_page`] call is asked for by [`ObjectStore::list`]
/// (S3 and OSS cap pages at 1000 keys).
pub const DEFAULT_PAGE_SIZE: usize = 1000;

/// An object store: buckets of immutable, `/`-keyed objects.
///
/// Implemented by the local file-system and in-memory stores here, and by `oss-client` for OSS
/// and any S3-compatible server. Every implementation runs `rag_core::conformance::object_store`
/// (feature `conformance`).
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Writes `data` to `uri`, replacing any object there. Readers never see a partial object.
    async fn put(&self, uri: &StoreUri, data: Bytes) -> Result<PutResult>;

    /// Writes a stream of unknown length to `uri`. Stores with multipart uploads upload it in
    /// parts without holding it in memory; a failed stream leaves no object behind.
    async fn put_stream(&self, uri: &StoreUri, data: ByteStream) -> Result<PutResult>;

    /// Opens `uri` for reading. Fails with [`Error::NotFound`] when it does not exist.
    async fn get(&self, uri: &StoreUri) -> Result<GetResult>;

    /// Reads bytes `range` of `uri`. The end is clamped to the object's size; a start at or past
    /// the end of a non-empty object is [`Error::InvalidInput`].
    async fn get_range(&self, uri: &StoreUri, range: Range<u64>) -> Result<Bytes>;

    /// The metadata of `uri`, or [`Error::NotFound`].
    async fn head(&self, uri: &StoreUri) -> Result<ObjectMeta>;

    /// One page of the objects whose keys start with `prefix`'s key, in key order, starting after
    /// the position that `token` (from the previous page) names. At most `max_keys` objects.
    async fn list_page(
        &self,
        prefix: &StoreUri,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage>;

    /// Deletes `uri`. Deleting a missing object succeeds (as on S3), so deletes are idempotent.
    async fn delete(&self, uri: &StoreUri) -> Result<()>;

    /// Copies `from` to `to` (same store), replacing any object at `to`.
    async fn copy(&self, from: &StoreUri, to: &StoreUri) -> Result<()>;

    /// All objects under `prefix`, fetched page by page as the stream is read.
    fn list(&self, prefix: &StoreUri) -> BoxStream<'_, Result<ObjectMeta>> {
        let prefix = prefix.clone();
        // State: None = done; Some(token) = fetch the page after token.
        stream::try_unfold(Some(None::<String>), move |state| {
            let prefix = prefix.clone();
            async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let page = self.list_page(&prefix, token, DEFAULT_PAGE_SIZE).await?;
                let next = page.next_token.map(Some);
                Ok::<_, Error>(Some((stream::iter(page.objects.into_iter().map(Ok)), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// Reads the whole object into memory.
    async fn get_bytes(&self, uri: &StoreUri) -> Result<Bytes> {
        self.get(uri).await?.bytes().await
    }

    /// Whether `uri` exists.
    async fn exists(&self, uri: &StoreUri) -> Result<bool> {
        match self.head(uri).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Splits `data` into a [`ByteStream`] of `chunk`-sized pieces (tests and adapters).
pub fn bytes_stream(data: Bytes, chunk: usize) -> ByteStream {
    let chunk = chunk.max(1);
    let mut pieces = Vec::with_capacity(data.len() / chunk + 1);
    let mut rest = data;
    while rest.len() > chunk {
        pieces.push(Ok(rest.split_to(chunk)));
    }
    pieces.push(Ok(rest));
    stream::iter(pieces).boxed()
}

/// Clamps `range` to an object of `size` bytes per [`ObjectStore::get_range`]'s contract.
pub fn clamp_range(uri: &StoreUri, range: Range<u64>, size: u64) -> Result<Range<u64>> {
    if range.start > range.end {
        return Err(Error::invalid(format!(
            "range {}..{} of {uri} is reversed",
            range.start, range.end
        )));
    }
    if range.start >= size && !(size == 0 && range.start == 0) {
        return Err(Error::invalid(format!(
            "range {}..{} starts past the end of {uri} ({size} bytes)",
            range.start, range.end
        )));
    }
    Ok(range.start..range.end.min(size))
}

/// Streams a local file in 256 KiB chunks, for [`ObjectStore::put_stream`] uploads that never
/// hold the whole file in memory.
pub async fn file_stream(path: &std::path::Path) -> Result<ByteStream> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    Ok(stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::zeroed(256 * 1024);
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok::<_, Error>(Some((buf.freeze(), file)))
    })
    .boxed())
}
