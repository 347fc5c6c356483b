use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::ann::{AnnFactory, AnnGraph};
use super::bm25::Bm25;
use crate::error::{Error, Result};
use crate::index::{
    FieldKind, IndexRecord, IndexSchema, ItemError, Metadata, Metric, Query, SearchHit,
    SearchRequest, UpsertReport, VectorIndex, rrf_fuse,
};

const SEGMENT_MAGIC: &[u8; 8] = b"RLSEG01\n";
/// Segments after which the next write compacts an index into one.
const COMPACT_AFTER: usize = 64;

/// An embedded [`VectorIndex`]: exact (brute-force) vector search under the schema's metric,
/// BM25 full-text search, RRF hybrid search and metadata filters.
///
/// With [`LocalVectorIndex::open`] every index is persisted under a directory: a `schema.json`
/// and append-only segment files, one per upsert or delete call, each written atomically;
/// opening replays them, and many segments are compacted into one. Exact search is the right
/// tool up to some ten thousand vectors; beyond, give it an [`AnnFactory`]
/// ([`LocalVectorIndex::open_with_ann`]; `vector-store` has an HNSW one) and vector queries go
/// through the graph, which is saved beside the segments and rebuilt when it is missing or stale.
#[derive(Debug, Default)]
pub struct LocalVectorIndex {
    dir: Option<PathBuf>,
    indexes: RwLock<HashMap<String, Arc<RwLock<IndexData>>>>,
    ann: Option<Arc<dyn AnnFactory>>,
}

/// The graph of one index and whether it changed since it was saved.
struct Ann {
    factory: Arc<dyn AnnFactory>,
    graph: Box<dyn AnnGraph>,
    dirty: bool,
}

impl std::fmt::Debug for Ann {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ann")
            .field("len", &self.graph.len())
            .field("dirty", &self.dirty)
            .finish()
    }
}

/// Which segment state a saved graph describes.
#[derive(Serialize, Deserialize, PartialEq)]
struct AnnStamp {
    last_segment: String,
    len: usize,
}

#[derive(Debug)]
struct Slot {
    record: IndexRecord,
    norm: f32,
}

#[derive(Debug)]
struct IndexData {
    schema: IndexSchema,
    slots: Vec<Option<Slot>>,
    by_id: HashMap<String, usize>,
    bm25: Bm25,
    dir: Option<PathBuf>,
    segments: Vec<PathBuf>,
    ann: Option<Ann>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum SegmentHeader {
    Upsert {
        id: String,
        text: String,
        metadata: Metadata,
    },
    Delete {
        id: String,
    },
}

impl LocalVectorIndex {
    /// An index kept in memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// An in-memory index whose vector queries go through graphs from `ann`.
    pub fn in_memory_with_ann(ann: Arc<dyn AnnFactory>) -> Self {
        Self {
            ann: Some(ann),
            ..Self::default()
        }
    }

    /// An index persisted under `dir`; existing indexes there are loaded.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_inner(dir.into(), None).await
    }

    /// Like [`open`](Self::open), with vector queries through graphs from `ann`: each index
    /// keeps `ann.graph` (+ `ann.json`, the segment state it covers) beside its segments,
    /// saved after compactions, on [`flush`](Self::flush) and when the index is dropped;
    /// a missing or stale graph is rebuilt from the records on open.
    pub async fn open_with_ann(dir: impl Into<PathBuf>, ann: Arc<dyn AnnFactory>) -> Result<Self> {
        Self::open_inner(dir.into(), Some(ann)).await
    }

    async fn open_inner(dir: PathBuf, ann: Option<Arc<dyn AnnFactory>>) -> Result<Self> {
        tokio::fs::create_dir_all(&dir).await?;
        let d = dir.clone();
        let factory = ann.clone();
        let loaded = tokio::task::spawn_blocking(move || load_all(&d, factory))
            .await
            .map_err(|e| Error::backend("local-index", "loading task failed", e))??;
        Ok(Self {
            ann,
            dir: Some(dir),
            indexes: RwLock::new(
                loaded
                    .into_iter()
                    .map(|d| (d.schema.name.clone(), Arc::new(RwLock::new(d))))
                    .collect(),
            ),
        })
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
            .slots
            .iter()
            .flatten()
            .map(|s| s.record.clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Saves every changed graph now (graphs are also saved after compactions and on drop).
    pub async fn flush(&self) -> Result<()> {
        let handles: Vec<_> = self.indexes.read().await.values().cloned().collect();
        for h in handles {
            h.write().await.save_ann()?;
        }
        Ok(())
    }
}

fn load_all(dir: &Path, ann: Option<Arc<dyn AnnFactory>>) -> Result<Vec<IndexData>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let schema_path = path.join("schema.json");
        if !schema_path.is_file() {
            continue;
        }
        let schema: IndexSchema = serde_json::from_slice(&std::fs::read(&schema_path)?)
            .map_err(|e| Error::invalid(format!("{}: {e}", schema_path.display())))?;
        let mut data = IndexData::new(schema, Some(path.clone()));
        let mut segs: Vec<PathBuf> = std::fs::read_dir(path.join("segments"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        for seg in &segs {
            data.replay(seg)?;
        }
        data.segments = segs;
        if let Some(factory) = &ann {
            data.attach_ann(factory.clone())?;
        }
        out.push(data);
    }
    Ok(out)
}

impl IndexData {
    fn new(schema: IndexSchema, dir: Option<PathBuf>) -> Self {
        Self {
            schema,
            slots: Vec::new(),
            by_id: HashMap::new(),
            bm25: Bm25::default(),
            dir,
            segments: Vec::new(),
            ann: None,
        }
    }

    fn ann_paths(&self) -> Option<(PathBuf, PathBuf)> {
        self.dir
            .as_ref()
            .map(|d| (d.join("ann.graph"), d.join("ann.json")))
    }

    fn stamp(&self) -> AnnStamp {
        AnnStamp {
            last_segment: self
                .segments
                .last()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            len: self.by_id.len(),
        }
    }

    /// Loads the saved graph if it covers the current segments, else builds one.
    fn attach_ann(&mut self, factory: Arc<dyn AnnFactory>) -> Result<()> {
        if let Some((graph_path, stamp_path)) = self.ann_paths() {
            let saved: Option<AnnStamp> = std::fs::read(&stamp_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if saved.as_ref() == Some(&self.stamp()) {
                match factory.load(&self.schema, &graph_path) {
                    Ok(graph) if graph.len() == self.by_id.len() => {
                        self.ann = Some(Ann {
                            factory,
                            graph,
                            dirty: false,
                        });
                        return Ok(());
                    }
                    Ok(_) => {
                        tracing::warn!(path = %graph_path.display(), "saved graph is stale; rebuilding")
                    }
                    Err(e) => {
                        tracing::warn!(path = %graph_path.display(), error = %e, "saved graph unreadable; rebuilding")
                    }
                }
            }
        }
        let graph = factory.create(&self.schema)?;
        let items: Vec<(u64, &[f32])> = self
            .live()
            .map(|(i, s)| (i as u64, s.record.vector.as_slice()))
            .collect();
        graph.add_batch(&items)?;
        self.ann = Some(Ann {
            factory,
            graph,
            dirty: true,
        });
        self.save_ann()
    }

    /// Writes the graph and its stamp (graph first; a stale stamp only costs a rebuild).
    fn save_ann(&mut self) -> Result<()> {
        let stamp = self.stamp();
        let (Some((graph_path, stamp_path)), Some(ann)) = (self.ann_paths(), self.ann.as_mut())
        else {
            return Ok(());
        };
        if !ann.dirty {
            return Ok(());
        }
        let tmp = graph_path.with_extension("tmp");
        ann.graph.save(&tmp)?;
        std::fs::rename(&tmp, &graph_path)?;
        let json = serde_json::to_vec(&stamp)
            .map_err(|e| Error::backend("local-index", "encode graph stamp", e))?;
        write_atomic(&stamp_path, &json)?;
        ann.dirty = false;
        Ok(())
    }

    /// Brings the graph in step after records were applied: `removed` slots leave it, `added`
    /// slots join it. A graph that fails is dropped (searches go exact, the next open rebuilds).
    fn update_ann(&mut self, removed: &[usize], added: &[usize]) {
        let Some(ann) = self.ann.as_mut() else {
            return;
        };
        let slots = &self.slots;
        let result = removed
            .iter()
            .try_for_each(|&s| ann.graph.remove(s as u64))
            .and_then(|()| {
                let items: Vec<(u64, &[f32])> = added
                    .iter()
                    .filter_map(|&i| {
                        slots[i]
                            .as_ref()
                            .map(|s| (i as u64, s.record.vector.as_slice()))
                    })
                    .collect();
                ann.graph.add_batch(&items)
            });
        ann.dirty = true;
        if let Err(e) = result {
            tracing::warn!(error = %e, index = %self.schema.name, "ANN graph update failed; exact search until the next open");
            self.ann = None;
            if let Some((_, stamp)) = self.ann_paths() {
                let _ = std::fs::remove_file(stamp);
            }
        }
    }

    /// Applies an upsert; returns the slot it replaced, if any, and its own slot.
    fn apply_upsert(&mut self, record: IndexRecord) -> (Option<usize>, usize) {
        let replaced = self.by_id.get(&record.id).copied();
        self.apply_delete(&record.id);
        let slot = self.slots.len();
        self.bm25.add(slot, &record.text);
        self.by_id.insert(record.id.clone(), slot);
        let norm = record.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        self.slots.push(Some(Slot { record, norm }));
        (replaced, slot)
    }

    fn apply_delete(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(slot) => {
                self.slots[slot] = None;
                self.bm25.remove(slot);
                true
            }
            None => false,
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// Checks one record against the schema.
    fn check(&self, r: &IndexRecord) -> std::result::Result<(), String> {
        if r.id.is_empty() {
            return Err("empty id".into());
        }
        if r.vector.len() != self.schema.dims {
            return Err(format!(
                "dimension mismatch: expected {}, got {}",
                self.schema.dims,
                r.vector.len()
            ));
        }
        if r.vector.iter().any(|x| !x.is_finite()) {
            return Err("vector holds NaN or infinity".into());
        }
        for f in &self.schema.metadata_fields {
            if let Some(v) = r.metadata.get(&f.name) {
                let ok = match f.kind {
                    FieldKind::Keyword => v.is_string(),
                    FieldKind::Integer => v.is_i64() || v.is_u64(),
                    FieldKind::Float => v.is_number(),
                    FieldKind::Bool => v.is_boolean(),
                };
                if !ok && !v.is_null() {
                    return Err(format!(
                        "metadata field {:?} is not {:?}: {v}",
                        f.name, f.kind
                    ));
                }
            }
        }
        Ok(())
    }

    fn replay(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path)?;
        let bad = |why: &str| Error::invalid(format!("segment {}: {why}", path.display()));
        let mut cur = bytes
            .strip_prefix(SEGMENT_MAGIC.as_slice())
            .ok_or_else(|| bad("bad magic"))?;
        while !cur.is_empty() {
            let mut len = [0u8; 4];
            cur.read_exact(&mut len).map_err(|_| bad("truncated"))?;
            let len = u32::from_le_bytes(len) as usize;
            if cur.len() < len {
                return Err(bad("truncated header"));
            }
            let (head, rest) = cur.split_at(len);
            cur = rest;
            match serde_json::from_slice(head).map_err(|e| bad(&e.to_string()))? {
                SegmentHeader::Upsert { id, text, metadata } => {
                    let n = self.schema.dims * 4;
                    if cur.len() < n {
                        return Err(bad("truncated vector"));
                    }
                    let (v, rest) = cur.split_at(n);
                    cur = rest;
                    let vector = v
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    self.apply_upsert(IndexRecord {
                        id,
                        vector,
                        text,
                        metadata,
                    });
                }
                SegmentHeader::Delete { id } => {
                    self.apply_delete(&id);
                }
            }
        }
        Ok(())
    }

    /// Writes a segment of upserts and deletes atomically; compacts when segments pile up.
    fn persist(&mut self, upserts: &[&IndexRecord], deletes: &[String]) -> Result<()> {
        let Some(dir) = self.dir.clone() else {
            return Ok(());
        };
        let mut buf = SEGMENT_MAGIC.to_vec();
        let encode = |buf: &mut Vec<u8>, h: &SegmentHeader| -> Result<()> {
            let json =
                serde_json::to_vec(h).map_err(|e| Error::backend("local-index", "encode", e))?;
            buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
            buf.extend_from_slice(&json);
            Ok(())
        };
        for r in upserts {
            encode(
                &mut buf,
                &SegmentHeader::Upsert {
                    id: r.id.clone(),
                    text: r.text.clone(),
                    metadata: r.metadata.clone(),
                },
            )?;
            r.vector
                .iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        }
        for id in deletes {
            encode(&mut buf, &SegmentHeader::Delete { id: id.clone() })?;
        }
        let seg_dir = dir.join("segments");
        let next = self
            .segments
            .last()
            .and_then(|p| p.file_stem()?.to_str()?.parse::<u64>().ok())
            .map_or(1, |n| n + 1);
        let path = seg_dir.join(format!("{next:012}.seg"));
        write_atomic(&path, &buf)?;
        self.segments.push(path);
        Ok(())
    }

    /// Compacts once segments pile up; call after applying a persisted change.
    fn maybe_compact(&mut self) -> Result<()> {
        if self.segments.len() > COMPACT_AFTER {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites all live records as one segment, then removes the older ones. A crash between
    /// the two steps is harmless: replaying old segments and then the compacted one gives the
    /// same records.
    fn compact(&mut self) -> Result<()> {
        let old = std::mem::take(&mut self.segments);
        let live: Vec<IndexRecord> = self.live().map(|(_, s)| s.record.clone()).collect();
        self.segments = old.last().cloned().into_iter().collect();
        self.persist(&live.iter().collect::<Vec<_>>(), &[])?;
        for p in &old {
            let _ = std::fs::remove_file(p);
        }
        self.segments.retain(|p| p.exists());
        // Rebuild the in-memory structures without dead slots; live slots keep their order, so
        // graph keys only move down (slot i of the new numbering was the i-th live slot).
        let old_slots: Vec<usize> = self.live().map(|(i, _)| i).collect();
        let schema = self.schema.clone();
        let segments = std::mem::take(&mut self.segments);
        let ann = self.ann.take();
        *self = IndexData::new(schema, self.dir.clone());
        self.segments = segments;
        for r in live {
            self.apply_upsert(r);
        }
        if let Some(mut ann) = ann {
            let moved = old_slots
                .iter()
                .enumerate()
                .filter(|(new, old)| *new != **old)
                .try_for_each(|(new, &old)| ann.graph.rename(old as u64, new as u64));
            match moved {
                Ok(()) => {
                    ann.dirty = true;
                    self.ann = Some(ann);
                    self.save_ann()?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ANN graph rename failed; rebuilding it");
                    self.attach_ann(ann.factory)?;
                }
            }
        }
        Ok(())
    }

    fn knn(&self, q: &[f32], n: usize, req: &SearchRequest) -> Vec<SearchHit> {
        if let Some(hits) = self.knn_ann(q, n, req) {
            return hits;
        }
        self.knn_exact(q, n, req)
    }

    /// Graph search, or `None` where exact search is the better tool: small indexes, and
    /// filters that pass few records (a graph walk would visit mostly rejected nodes).
    fn knn_ann(&self, q: &[f32], n: usize, req: &SearchRequest) -> Option<Vec<SearchHit>> {
        let ann = self.ann.as_ref()?;
        let live = self.by_id.len();
        if live < ann.factory.exact_below() {
            return None;
        }
        let keep = |key: u64| {
            self.slots
                .get(key as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| passes(req, s))
        };
        if req.filter.is_some() {
            let passing = self.live().filter(|(_, s)| passes(req, s)).count();
            if passing <= ann.factory.exact_below().max(n) || passing * 20 < live {
                return None;
            }
        }
        let ef = req.num_candidates.max(n);
        let filter: Option<&(dyn Fn(u64) -> bool + Sync)> = if req.filter.is_some() {
            Some(&keep)
        } else {
            None
        };
        match ann.graph.search(q, n, ef, filter) {
            Ok(found) => Some(
                found
                    .into_iter()
                    .filter_map(|(key, score)| {
                        self.slots.get(key as usize)?.as_ref().map(|s| SearchHit {
                            id: s.record.id.clone(),
                            score,
                            text: s.record.text.clone(),
                            metadata: s.record.metadata.clone(),
                        })
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "ANN search failed; searching exactly");
                None
            }
        }
    }

    fn knn_exact(&self, q: &[f32], n: usize, req: &SearchRequest) -> Vec<SearchHit> {
        let qnorm = q.iter().map(|x| x * x).sum::<f32>().sqrt();
        let scored = self.live().filter(|(_, s)| passes(req, s)).map(|(i, s)| {
            let score = match self.schema.metric {
                Metric::Cosine => {
                    let dot: f32 = q.iter().zip(&s.record.vector).map(|(a, b)| a * b).sum();
                    if qnorm == 0.0 || s.norm == 0.0 {
                        0.0
                    } else {
                        dot / (qnorm * s.norm)
                    }
                }
                m => m.score(q, &s.record.vector),
            };
            (i, score)
        });
        self.top(scored.collect(), n)
    }

    fn text(&self, q: &str, n: usize, req: &SearchRequest) -> Vec<SearchHit> {
        let scored = self
            .bm25
            .scores(q)
            .into_iter()
            .filter(|(i, _)| self.slots[*i].as_ref().is_some_and(|s| passes(req, s)))
            .collect();
        self.top(scored, n)
    }

    fn top(&self, mut scored: Vec<(usize, f32)>, n: usize) -> Vec<SearchHit> {
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if scored.len() > n {
            scored.select_nth_unstable_by(n, by_score);
            scored.truncate(n);
        }
        scored.sort_by(by_score);
        scored
            .into_iter()
            .filter_map(|(i, score)| {
                self.slots[i].as_ref().map(|s| SearchHit {
                    id: s.record.id.clone(),
                    score,
                    text: s.record.text.clone(),
                    metadata: s.record.metadata.clone(),
                })
            })
            .collect()
    }
}

impl Drop for IndexData {
    fn drop(&mut self) {
        // Best effort: a graph not saved here is rebuilt on the next open.
        if self.dir.as_ref().is_some_and(|d| d.exists())
            && let Err(e) = self.save_ann()
        {
            tracing::warn!(error = %e, index = %self.schema.name, "saving the ANN graph failed");
        }
    }
}

fn passes(req: &SearchRequest, s: &Slot) -> bool {
    req.filter
        .as_ref()
        .is_none_or(|f| f.matches(&s.record.metadata))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid("segment path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[async_trait]
impl VectorIndex for LocalVectorIndex {
    async fn create_index(&self, schema: &IndexSchema) -> Result<()> {
        schema.validate()?;
        let mut indexes = self.indexes.write().await;
        if let Some(existing) = indexes.get(&schema.name) {
            return existing.read().await.schema.is_compatible(schema);
        }
        let dir = self.dir.as_ref().map(|d| d.join(&schema.name));
        if let Some(dir) = &dir {
            let json = serde_json::to_vec_pretty(schema)
                .map_err(|e| Error::backend("local-index", "encode schema", e))?;
            std::fs::create_dir_all(dir.join("segments"))?;
            write_atomic(&dir.join("schema.json"), &json)?;
        }
        let mut data = IndexData::new(schema.clone(), dir);
        if let Some(factory) = &self.ann {
            data.attach_ann(factory.clone())?;
        }
        indexes.insert(schema.name.clone(), Arc::new(RwLock::new(data)));
        Ok(())
    }

    async fn schema(&self, index: &str) -> Result<IndexSchema> {
        Ok(self.get(index).await?.read().await.schema.clone())
    }

    async fn upsert(&self, index: &str, records: Vec<IndexRecord>) -> Result<UpsertReport> {
        let handle = self.get(index).await?;
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
        data.persist(&good.iter().collect::<Vec<_>>(), &[])?;
        let (mut removed, mut added) = (Vec::new(), Vec::with_capacity(good.len()));
        for r in good {
            report.written.push(r.id.clone());
            let (replaced, slot) = data.apply_upsert(r);
            removed.extend(replaced);
            added.push(slot);
        }
        // A record replaced twice in one batch: its first new slot died already.
        added.retain(|&s| data.slots[s].is_some());
        removed.retain(|s| !added.contains(s));
        data.update_ann(&removed, &added);
        data.maybe_compact()?;
        Ok(report)
    }

    async fn delete(&self, index: &str, ids: &[String]) -> Result<usize> {
        let handle = self.get(index).await?;
        let mut data = handle.write().await;
        let present: Vec<String> = ids
            .iter()
            .filter(|id| data.by_id.contains_key(*id))
            .cloned()
            .collect();
        data.persist(&[], &present)?;
        let slots: Vec<usize> = present
            .iter()
            .filter_map(|id| data.by_id.get(id).copied())
            .collect();
        let removed = present.iter().filter(|id| data.apply_delete(id)).count();
        data.update_ann(&slots, &[]);
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
            Query::Vector(v) => data.knn(v, req.k, req),
            Query::Text(t) => data.text(t, req.k, req),
            Query::Hybrid { vector, text } => {
                let n = req.num_candidates.max(req.k);
                let lists = [data.knn(vector, n, req), data.text(text, n, req)];
                rrf_fuse(&lists, req.rrf_k, req.k)
            }
        })
    }

    async fn count(&self, index: &str) -> Result<usize> {
        Ok(self.get(index).await?.read().await.by_id.len())
    }

    async fn drop_index(&self, index: &str) -> Result<()> {
        let removed = self
            .indexes
            .write()
            .await
            .remove(index)
            .ok_or_else(|| Error::not_found(format!("index {index:?}")))?;
        let dir = removed.read().await.dir.clone();
        if let Some(dir) = dir {
            tokio::fs::remove_dir_all(&dir).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Metric;

    fn rec(id: &str, x: f32) -> IndexRecord {
        IndexRecord {
            id: id.into(),
            vector: vec![x, 1.0],
            text: format!("record {id}"),
            metadata: Metadata::new(),
        }
    }

    #[tokio::test]
    async fn reopening_replays_upserts_deletes_and_survives_compaction() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
            idx.create_index(&IndexSchema::new("i", 2, Metric::Dot))
                .await
                .unwrap();
            // More single-record writes than COMPACT_AFTER, so at least one compaction runs.
            for i in 0..(COMPACT_AFTER + 10) {
                idx.upsert("i", vec![rec(&format!("r{i}"), i as f32)])
                    .await
                    .unwrap();
            }
            idx.upsert("i", vec![rec("r0", 1000.0)]).await.unwrap();
            assert_eq!(idx.delete("i", &["r1".into()]).await.unwrap(), 1);
        }
        let segs = std::fs::read_dir(dir.path().join("i/segments"))
            .unwrap()
            .count();
        assert!(
            segs < COMPACT_AFTER,
            "compaction bounded the segments: {segs}"
        );
        let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
        assert_eq!(idx.count("i").await.unwrap(), COMPACT_AFTER + 10 - 1);
        let top = idx
            .search("i", &SearchRequest::new(Query::Vector(vec![1.0, 0.0]), 1))
            .await
            .unwrap();
        assert_eq!(
            (top[0].id.as_str(), top[0].score),
            ("r0", 1000.0),
            "later upsert wins"
        );
        let gone = idx
            .search("i", &SearchRequest::new(Query::Text("r1".into()), 5))
            .await
            .unwrap();
        assert!(gone.iter().all(|h| h.id != "r1"), "delete persisted");
    }

    #[tokio::test]
    async fn a_corrupt_segment_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = LocalVectorIndex::open(dir.path()).await.unwrap();
            idx.create_index(&IndexSchema::new("i", 2, Metric::Dot))
                .await
                .unwrap();
            idx.upsert("i", vec![rec("a", 1.0)]).await.unwrap();
        }
        let seg = std::fs::read_dir(dir.path().join("i/segments"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&seg).unwrap();
        std::fs::write(&seg, &bytes[..bytes.len() - 3]).unwrap();
        let err = LocalVectorIndex::open(dir.path()).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
