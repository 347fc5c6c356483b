use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::RwLock;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{
    ByteStream, GetResult, ListPage, ObjectMeta, ObjectStore, PutResult, clamp_range,
};
use crate::uri::StoreUri;

#[derive(Debug, Clone)]
struct Entry {
    data: Bytes,
    modified: SystemTime,
    e_tag: String,
}

/// An [`ObjectStore`] held in memory: for tests and short-lived pipelines. Any scheme's URIs
/// are accepted; objects are keyed by scheme, bucket and key.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    objects: RwLock<BTreeMap<StoreUri, Entry>>,
}

impl InMemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<StoreUri, Entry>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, uri: &StoreUri) -> Result<Entry> {
        reject_prefix(uri)?;
        self.read()
            .get(uri)
            .cloned()
            .ok_or_else(|| Error::not_found(uri.to_string()))
    }

    fn insert(&self, uri: &StoreUri, data: Bytes) -> PutResult {
        let e_tag = hex::encode(&Sha256::digest(&data)[..16]);
        let size = data.len() as u64;
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                uri.clone(),
                Entry {
                    data,
                    modified: SystemTime::now(),
                    e_tag: e_tag.clone(),
                },
            );
        PutResult {
            size,
            e_tag: Some(e_tag),
        }
    }
}

fn reject_prefix(uri: &StoreUri) -> Result<()> {
    if uri.is_prefix() {
        Err(Error::invalid(format!(
            "{uri} names a prefix, not an object"
        )))
    } else {
        Ok(())
    }
}

fn meta(uri: &StoreUri, e: &Entry) -> ObjectMeta {
    ObjectMeta {
        uri: uri.clone(),
        size: e.data.len() as u64,
        last_modified: Some(e.modified),
        e_tag: Some(e.e_tag.clone()),
    }
}

#[async_trait]
impl ObjectStore for InMemoryStore {
    async fn put(&self, uri: &StoreUri, data: Bytes) -> Result<PutResult> {
        reject_prefix(uri)?;
        Ok(self.insert(uri, data))
    }

    async fn put_stream(&self, uri: &StoreUri, mut data: ByteStream) -> Result<PutResult> {
        reject_prefix(uri)?;
        let mut buf = BytesMut::new();
        while let Some(chunk) = data.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(self.insert(uri, buf.freeze()))
    }

    async fn get(&self, uri: &StoreUri) -> Result<GetResult> {
        let e = self.entry(uri)?;
        Ok(GetResult {
            meta: meta(uri, &e),
            stream: stream::once(async move { Ok(e.data) }).boxed(),
        })
    }

    async fn get_range(&self, uri: &StoreUri, range: Range<u64>) -> Result<Bytes> {
        let e = self.entry(uri)?;
        let r = clamp_range(uri, range, e.data.len() as u64)?;
        Ok(e.data.slice(r.start as usize..r.end as usize))
    }

    async fn head(&self, uri: &StoreUri) -> Result<ObjectMeta> {
        self.entry(uri).map(|e| meta(uri, &e))
    }

    async fn list_page(
        &self,
        prefix: &StoreUri,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        let objects = self.read();
        let mut page = ListPage::default();
        for (uri, e) in objects.range(prefix.clone()..) {
            if uri.scheme() != prefix.scheme()
                || uri.bucket() != prefix.bucket()
                || !uri.key().starts_with(prefix.key())
            {
                break;
            }
            if token.as_deref().is_some_and(|t| uri.key() <= t) {
                continue;
            }
            if page.objects.len() == max_keys.max(1) {
                page.next_token = page.objects.last().map(|m| m.uri.key().to_string());
                break;
            }
            page.objects.push(meta(uri, e));
        }
        Ok(page)
    }

    async fn delete(&self, uri: &StoreUri) -> Result<()> {
        reject_prefix(uri)?;
        self.objects
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uri);
        Ok(())
    }

    async fn copy(&self, from: &StoreUri, to: &StoreUri) -> Result<()> {
        reject_prefix(to)?;
        let e = self.entry(from)?;
        self.insert(to, e.data);
        Ok(())
    }
}
