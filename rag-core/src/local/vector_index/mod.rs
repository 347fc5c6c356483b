//! [`LocalVectorIndex`]: the embedded index — exact kNN, BM25, RRF hybrid, filters, persisted
//! as append-only segments (`segments.rs`), with an optional ANN graph (`graph.rs`); the
//! in-memory state of one index is `data.rs`, its queries `search.rs`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::ann::{AnnFactory, AnnGraph};
use super::bm25::Bm25;
use super::fulltext::{TextFactory, TextIndex};
use crate::error::{Error, Result};
use crate::index::{
    FieldKind, IndexRecord, IndexSchema, ItemError, Metadata, Metric, Query, SearchHit,
    SearchRequest, UpsertReport, VectorIndex,
};

mod data;
mod graph;
mod rows;
mod search;
mod segments;
#[cfg(test)]
mod tests;
mod text;

use super::lock::DirLock;
use data::IndexData;
use segments::{load_all, temp_path, write_atomic};

/// What a [`LocalVectorIndex`] answers queries with beyond its records: an ANN graph for vector
/// queries and a text index for BM25 ones. Both are accelerators kept beside the segments and
/// rebuilt from the records when missing or stale; without them vector search is exact and
/// BM25 runs on the in-memory [`Bm25`](crate::local::Bm25).
#[derive(Debug, Clone, Default)]
pub struct LocalIndexOptions {
    /// Graphs for vector queries (`vector-store` has HNSW ones).
    pub ann: Option<Arc<dyn AnnFactory>>,
    /// Text indexes for BM25 queries (`vector-store` has tantivy ones).
    pub text: Option<Arc<dyn TextFactory>>,
}

/// An embedded [`VectorIndex`]: exact (brute-force) vector search under the schema's metric,
/// BM25 full-text search, RRF hybrid search and metadata filters.
///
/// With [`LocalVectorIndex::open`] every index is persisted under a directory: a `schema.json`
/// and append-only segment files, one per upsert or delete call, each written atomically;
/// opening replays them, and many segments are compacted into one. Exact search is the right
/// tool up to some ten thousand vectors; beyond, give it an [`AnnFactory`]
/// ([`LocalVectorIndex::open_with_ann`]; `vector-store` has an HNSW one) and vector queries go
/// through the graph, which is saved beside the segments and rebuilt when it is missing or stale.
/// A [`TextFactory`] likewise moves BM25 out of memory into a text index kept under `text/`
/// ([`LocalVectorIndex::open_with`]).
///
/// Many processes may read one directory; one writes. The first write takes the directory's
/// [`DirLock`] (a second process's write fails with [`Error::Unavailable`] naming the holder's
/// pid) and first reloads whatever another writer changed since this handle opened. A reader
/// that opens while a compaction removes segments loads again, so it never sees half of one.
/// Every segment carries a CRC-32; a damaged one is [`Error::Corrupt`] naming the file.
#[derive(Debug, Default)]
pub struct LocalVectorIndex {
    dir: Option<PathBuf>,
    indexes: RwLock<HashMap<String, Arc<RwLock<IndexData>>>>,
    options: LocalIndexOptions,
    /// The directory's writer lock, taken at the first write and held until drop.
    writer: tokio::sync::Mutex<Option<DirLock>>,
}

impl LocalVectorIndex {
    /// An index kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// An in-memory index whose vector queries go through graphs from `ann`.
    pub fn in_memory_with_ann(ann: Arc<dyn AnnFactory>) -> Self {
        Self::in_memory_with(LocalIndexOptions {
            ann: Some(ann),
            text: None,
        })
    }

    /// An in-memory index answering queries with `options`' graphs and text indexes.
    pub fn in_memory_with(options: LocalIndexOptions) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// An index persisted under `dir`; existing indexes there are loaded.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(dir, LocalIndexOptions::default()).await
    }

    /// Like [`open`](Self::open), with vector queries through graphs from `ann`: each index
    /// keeps `ann.graph` (+ `ann.json`, the segment state it covers) beside its segments,
    /// saved after compactions, on [`flush`](Self::flush) and when the index is dropped;
    /// a missing or stale graph is rebuilt from the records on open.
    pub async fn open_with_ann(dir: impl Into<PathBuf>, ann: Arc<dyn AnnFactory>) -> Result<Self> {
        Self::open_with(
            dir,
            LocalIndexOptions {
                ann: Some(ann),
                text: None,
            },
        )
        .await
    }

    /// An index persisted under `dir` answering queries with `options`' graphs and text
    /// indexes: each index keeps them beside its segments (`ann.graph`, `text/`) with the
    /// segment state they cover, and rebuilds one that is missing or stale on open.
    pub async fn open_with(dir: impl Into<PathBuf>, options: LocalIndexOptions) -> Result<Self> {
        let dir = dir.into();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(e, format!("creating {}", dir.display())))?;
        let (d, o) = (dir.clone(), options.clone());
        let loaded = tokio::task::spawn_blocking(move || load_all(&d, &o, false))
            .await
            .map_err(|e| Error::backend("local-index", "loading task failed", e))??;
        Ok(Self {
            options,
            dir: Some(dir),
            indexes: RwLock::new(by_name(loaded)),
            writer: Default::default(),
        })
    }

    /// Takes the writer lock at the first write; reloads the indexes when another writer
    /// changed the directory since they were loaded.
    async fn writable(&self) -> Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let mut writer = self.writer.lock().await;
        if writer.is_some() {
            return Ok(());
        }
        let lock = DirLock::acquire(dir, &format!("the index in {}", dir.display()))?;
        let mut indexes = self.indexes.write().await;
        let mut loaded_state = Vec::new();
        for (name, h) in indexes.iter() {
            loaded_state.push((name.clone(), h.read().await.segments.clone()));
        }
        let (d, options) = (dir.clone(), self.options.clone());
        let now = tokio::task::spawn_blocking(move || -> Result<_> {
            let disk = segments::disk_state(&d)?;
            loaded_state.sort();
            (disk != loaded_state)
                .then(|| load_all(&d, &options, true))
                .transpose()
        })
        .await
        .map_err(|e| Error::backend("local-index", "loading task failed", e))??;
        if let Some(reloaded) = now {
            tracing::info!(dir = %dir.display(), "index changed by another writer; reloaded");
            *indexes = by_name(reloaded);
        }
        for h in indexes.values() {
            h.write().await.writer = true;
        }
        *writer = Some(lock);
        Ok(())
    }

    async fn get_for_write(&self, name: &str) -> Result<Arc<RwLock<IndexData>>> {
        self.writable().await?;
        self.get(name).await
    }

    async fn get(&self, name: &str) -> Result<Arc<RwLock<IndexData>>> {
        self.indexes
            .read()
            .await
            .get(name)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("index {name:?}")))
    }

    /// Every record of `index`, sorted by id: an export, and what a test compares to check
    /// that an interrupted and resumed indexing left exactly the records of an uninterrupted one.
    pub async fn records(&self, index: &str) -> Result<Vec<IndexRecord>> {
        let handle = self.get(index).await?;
        let data = handle.read().await;
        let mut out: Vec<IndexRecord> = data
            .live()
            .map(|(i, s)| data.record(i, s))
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Saves every changed graph and commits every text index now (both also happen after
    /// compactions and on drop).
    pub async fn flush(&self) -> Result<()> {
        let handles: Vec<_> = self.indexes.read().await.values().cloned().collect();
        for h in handles {
            let mut data = h.write().await;
            data.save_ann()?;
            data.commit_text()?;
        }
        Ok(())
    }
}

fn by_name(loaded: Vec<IndexData>) -> HashMap<String, Arc<RwLock<IndexData>>> {
    loaded
        .into_iter()
        .map(|d| (d.schema.name.clone(), Arc::new(RwLock::new(d))))
        .collect()
}

#[async_trait]
impl VectorIndex for LocalVectorIndex {
    async fn create_index(&self, schema: &IndexSchema) -> Result<()> {
        schema.validate()?;
        self.writable().await?;
        let mut indexes = self.indexes.write().await;
        if let Some(existing) = indexes.get(&schema.name) {
            return existing.read().await.schema.is_compatible(schema);
        }
        let dir = self.dir.as_ref().map(|d| d.join(&schema.name));
        if let Some(dir) = &dir {
            let json = serde_json::to_vec_pretty(schema)
                .map_err(|e| Error::backend("local-index", "encode schema", e))?;
            let segments = dir.join("segments");
            std::fs::create_dir_all(&segments)
                .map_err(|e| Error::io(e, format!("creating {}", segments.display())))?;
            write_atomic(&dir.join("schema.json"), &json)?;
        }
        let mut data = IndexData::new(schema.clone(), dir, self.options.text.is_some());
        data.writer = self.dir.is_some();
        if let Some(factory) = &self.options.ann {
            data.attach_ann(factory.clone())?;
        }
        if let Some(factory) = &self.options.text {
            data.attach_text(factory.clone())?;
        }
        indexes.insert(schema.name.clone(), Arc::new(RwLock::new(data)));
        Ok(())
    }

    async fn schema(&self, index: &str) -> Result<IndexSchema> {
        Ok(self.get(index).await?.read().await.schema.clone())
    }

    async fn upsert(&self, index: &str, records: Vec<IndexRecord>) -> Result<UpsertReport> {
        let handle = self.get_for_write(index).await?;
        let mut data = handle.write().await;
        let mut report = UpsertReport::default();
        let mut good = Vec::with_capacity(records.len());
        for r in records {
            match data.check(&r) {
                Ok(()) => good.push(r),
                Err(reason) => report.failed.push(ItemError {
                    id: r.id,
                    reason,
                    retryable: false,
                }),
            }
        }
        let at = data.persist(&good.iter().collect::<Vec<_>>(), &[])?;
        let vectors: Vec<&[f32]> = good.iter().map(|r| r.vector.as_slice()).collect();
        data.append_vectors(&vectors)?;
        let (mut removed, mut added) = (Vec::new(), Vec::with_capacity(good.len()));
        for (i, r) in good.into_iter().enumerate() {
            report.written.push(r.id.clone());
            let (replaced, slot) = data.apply_upsert(
                r,
                at.as_ref()
                    .map(|(file, places)| (file, places[i].0, places[i].1)),
            );
            removed.extend(replaced);
            added.push(slot);
        }
        // A record replaced twice in one batch: its first new slot died already.
        added.retain(|&s| data.is_live(s));
        removed.retain(|s| !added.contains(s));
        data.update_ann(&removed, &added);
        data.update_text(&added, &[]);
        data.maybe_compact()?;
        Ok(report)
    }

    async fn delete(&self, index: &str, ids: &[String]) -> Result<usize> {
        let handle = self.get_for_write(index).await?;
        let mut data = handle.write().await;
        let present: Vec<String> = ids
            .iter()
            .filter(|id| data.slot_of(id).is_some())
            .cloned()
            .collect();
        data.persist(&[], &present)?;
        let slots: Vec<usize> = present.iter().filter_map(|id| data.slot_of(id)).collect();
        let removed = present.iter().filter(|id| data.apply_delete(id)).count();
        data.update_ann(&slots, &[]);
        data.update_text(&[], &present.iter().map(String::as_str).collect::<Vec<_>>());
        data.maybe_compact()?;
        Ok(removed)
    }

    async fn search(&self, index: &str, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let handle = self.get(index).await?;
        let data = handle.read().await;
        req.validate(data.schema.dims)?;
        if let Some(unknown) = req.filter.as_ref().and_then(|f| {
            f.fields()
                .into_iter()
                .find(|n| !data.schema.metadata_fields.iter().any(|s| s.name == *n))
        }) {
            return Err(Error::invalid(format!(
                "filter field {unknown:?} is not a metadata field of index {index:?}"
            )));
        }
        Ok(match &req.query {
            Query::Vector(v) => data.knn(v, req.k, req)?,
            Query::Text(t) => data.text(t, req.k, req)?,
            Query::Hybrid { vector, text } => {
                let n = req.num_candidates.max(req.k);
                crate::index::fuse(req, data.knn(vector, n, req)?, data.text(text, n, req)?)
            }
        })
    }

    async fn count(&self, index: &str) -> Result<usize> {
        Ok(self.get(index).await?.read().await.live_len())
    }

    async fn drop_index(&self, index: &str) -> Result<()> {
        self.writable().await?;
        let removed = self
            .indexes
            .write()
            .await
            .remove(index)
            .ok_or_else(|| Error::not_found(format!("index {index:?}")))?;
        let dir = {
            let mut data = removed.write().await;
            // The text index's files are closed (its writer's merges finished) first.
            data.text = data::Text::Pending;
            data.dir.clone()
        };
        if let Some(dir) = dir {
            tokio::fs::remove_dir_all(&dir)
                .await
                .map_err(|e| Error::io(e, format!("removing {}", dir.display())))?;
        }
        Ok(())
    }
}
