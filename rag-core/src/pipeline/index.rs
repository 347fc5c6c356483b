//! Stage 6: the Parquet shards of one model into the vector index.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::json;

use super::Pipeline;
use super::manifest::{IndexManifest, ManifestBuilder};
use crate::chunk::ChunkKey;
use crate::embed_job::shard_number;
use crate::embedding::EmbeddingModel;
use crate::error::{Error, Result};
use crate::index::{FieldKind, IndexRecord, IndexSchema, ItemError, Metadata, Metric};
use crate::stage::Stage;
use crate::vectors::{EmbeddedChunk, read_shard_batches};

/// What [`Pipeline::index`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    /// Shards read.
    pub shards: usize,
    /// Records written.
    pub written: usize,
    /// Records that could not be written after retries.
    #[serde(skip)]
    pub failed: Vec<ItemError>,
    /// Records in the index afterwards.
    pub count: usize,
    /// Shards that could not be read as Parquet (shard, why); the other shards were indexed.
    /// Delete such a shard and run the embed stage again to rewrite it.
    pub unreadable: Vec<(String, String)>,
    /// Chunks deleted from the index: those of documents removed or changed since the last
    /// run of this stage on this index ([`Layout::index_manifest`](super::Layout::index_manifest)).
    pub deleted: usize,
    /// Documents the last run indexed that are gone from the corpus.
    pub documents_removed: usize,
    /// Documents whose chunks changed since the last run.
    pub documents_changed: usize,
}

/// Ids deleted per call.
const DELETE_BATCH: usize = 1000;
/// Bytes of the manifest's JSON written per part: a manifest is never whole in memory as text.
const MANIFEST_PART: usize = 1 << 20;

impl Pipeline {
    /// The index schema for vectors of `model`: its dimension, cosine similarity, and the chunk
    /// metadata fields that answers cite.
    pub fn index_schema(&self, model: &dyn EmbeddingModel) -> IndexSchema {
        IndexSchema::new(&self.options.index_name, model.dims(), Metric::Cosine)
            .with_field("doc_id", FieldKind::Keyword)
            .with_field("source", FieldKind::Keyword)
            .with_field("title", FieldKind::Keyword)
            .with_field("start", FieldKind::Integer)
            .with_field("end", FieldKind::Integer)
            .with_field("ordinal", FieldKind::Integer)
            .with_field("section", FieldKind::Keyword)
            .with_field("page", FieldKind::Integer)
            .with_field("page_end", FieldKind::Integer)
            .with_analyzer(self.options.analyzer)
    }

    /// Stage 6: creates the index (a dimension mismatch with an existing one fails before any
    /// write) and upserts every shard of `model`, retrying records the index reports as
    /// retryable. Records that still fail are returned, never dropped silently; so are shards
    /// that are not readable Parquet ([`IndexReport::unreadable`]), while the others go in.
    pub async fn index(&self, model: &dyn EmbeddingModel) -> Result<IndexReport> {
        let stage = Stage::Index;
        let index = self.index_backend()?;
        let name = &self.options.index_name;
        index.create_index(&self.index_schema(model)).await?;
        let prefix = self.layout.vector_shards(model.model_id());
        let shards: Vec<_> = self.store.list(&prefix).try_collect().await?;
        let shards: Vec<_> = shards
            .into_iter()
            .filter(|m| shard_number(m.uri.file_name()).is_some())
            .collect();
        if shards.is_empty() {
            return Err(Error::not_found(format!(
                "vector shards under {prefix} (run the embed stage)"
            )));
        }
        self.progress.begin(stage, None);
        let mut report = IndexReport {
            shards: shards.len(),
            ..Default::default()
        };
        let mut manifest = ManifestBuilder::default();
        for shard in shards {
            let read = read_shard_batches(
                self.store.get_bytes(&shard.uri).await?,
                self.options.index_batch.max(1),
            );
            let (meta, batches) = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(shard = %shard.uri, error = %e, "unreadable vector shard skipped");
                    report
                        .unreadable
                        .push((shard.uri.to_string(), e.to_string()));
                    continue;
                }
            };
            if meta.model_id != model.model_id() || meta.dims != model.dims() {
                return Err(Error::invalid(format!(
                    "{} holds vectors of {} ({} dims), not of {} ({} dims)",
                    shard.uri,
                    meta.model_id,
                    meta.dims,
                    model.model_id(),
                    model.dims()
                )));
            }
            for batch in batches {
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => {
                        // The rows before this batch were indexed; the rest of the shard is lost.
                        report
                            .unreadable
                            .push((shard.uri.to_string(), e.to_string()));
                        break;
                    }
                };
                for row in &batch {
                    manifest.add(&row.chunk.doc_id, ChunkKey::new(&row.chunk.id));
                }
                let records: Vec<IndexRecord> = batch.iter().map(record_of).collect();
                let (written, failed) = self.upsert_with_retries(name, records).await?;
                report.written += written;
                report.failed.extend(failed);
                self.progress.advance(stage, batch.len() as u64);
            }
        }
        // After the writes, so no document is ever missing from the index: the chunks of
        // documents removed or changed since the last run. Not with a shard unread (its
        // documents' chunks would look removed).
        if report.unreadable.is_empty() {
            self.sync_deletions(name, manifest.finish(), &mut report)
                .await?;
        }
        report.count = index.count(name).await?;
        self.progress.end(
            stage,
            &format!(
                "{} records written, {} deleted, {} failed, {} unreadable shards; {} in {name}",
                report.written,
                report.deleted,
                report.failed.len(),
                report.unreadable.len(),
                report.count
            ),
        );
        Ok(report)
    }

    /// Deletes from index `name` the chunks the last run's manifest holds and `manifest` (this
    /// run's) does not, then records `manifest`. Deleting is idempotent, so a run killed in
    /// between deletes the rest next time; an index with no manifest yet (a first run, or one
    /// built before manifests) deletes nothing.
    async fn sync_deletions(
        &self,
        name: &str,
        manifest: IndexManifest,
        report: &mut IndexReport,
    ) -> Result<()> {
        let uri = self.layout.index_manifest(name);
        // The last run's manifest is compared a document at a time as its JSON is read: it is
        // never built in memory beside this run's.
        let (stale, removed, changed, same) = match self.store.get_bytes(&uri).await {
            Ok(bytes) => manifest.stale_since_json(&bytes).map_err(|e| {
                Error::corrupt(
                    uri.to_string(),
                    format!(
                        "{e}; remove it and drop the index to rebuild it (stale chunks cannot be found without it)"
                    ),
                )
            })?,
            Err(e) if e.is_not_found() => (Vec::new(), 0, 0, manifest.is_empty()),
            Err(e) => return Err(e),
        };
        let index = self.index_backend()?;
        for ids in stale.chunks(DELETE_BATCH) {
            index.delete(name, ids).await?;
        }
        report.deleted = stale.len();
        report.documents_removed = removed;
        report.documents_changed = changed;
        if same {
            return Ok(());
        }
        let parts = manifest.into_json_parts(MANIFEST_PART);
        self.store
            .put_stream(&uri, futures::stream::iter(parts).boxed())
            .await?;
        Ok(())
    }

    /// Upserts `records`, resending the ones the index reports as retryable with the
    /// pauses of [`PipelineOptions::upsert_retry`](super::PipelineOptions::upsert_retry).
    /// Returns how many were written and what failed.
    async fn upsert_with_retries(
        &self,
        name: &str,
        records: Vec<IndexRecord>,
    ) -> Result<(usize, Vec<ItemError>)> {
        let policy = &self.options.upsert_retry;
        let index = self.index_backend()?;
        let mut written = 0;
        let mut failures = Vec::new();
        let mut pending = records;
        for retry in 0..=policy.max_retries {
            if retry > 0 {
                tokio::time::sleep(policy.pause(retry, None)).await;
            }
            let mut by_id: HashMap<String, IndexRecord> =
                pending.iter().map(|r| (r.id.clone(), r.clone())).collect();
            let report = index.upsert(name, pending).await?;
            written += report.written.len();
            let (again, give_up): (Vec<_>, Vec<_>) =
                report.failed.into_iter().partition(|f| f.retryable);
            failures.extend(give_up);
            if again.is_empty() {
                return Ok((written, failures));
            }
            if retry == policy.max_retries {
                failures.extend(again);
                break;
            }
            tracing::warn!(
                count = again.len(),
                retry = retry + 1,
                "retrying records the index refused"
            );
            pending = again.iter().filter_map(|f| by_id.remove(&f.id)).collect();
        }
        Ok((written, failures))
    }
}

fn record_of(row: &EmbeddedChunk) -> IndexRecord {
    let c = &row.chunk;
    let metadata: Metadata = [
        ("doc_id", json!(c.doc_id)),
        ("source", json!(c.source)),
        ("title", json!(c.title)),
        ("start", json!(c.start)),
        ("end", json!(c.end)),
        ("ordinal", json!(c.ordinal)),
    ]
    .into_iter()
    // Structure only where the document has it: plain-text corpora index as before.
    .chain((!c.section.is_empty()).then(|| ("section", json!(c.section))))
    .chain(c.page.map(|p| ("page", json!(p))))
    .chain(c.page_end.map(|p| ("page_end", json!(p))))
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    IndexRecord {
        id: c.id.clone(),
        vector: row.vector.clone(),
        text: c.text.clone(),
        metadata,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn chunk_keys_read_and_write_the_ids_they_were_made_from() {
        let hash = crate::chunk::chunk_id("doc", "text");
        let ids = [
            hash.as_str(),
            "0123456789ABCDEF0123456789abcdef", // upper case: kept as it is
            "0123456789abcdef0123456789abcde",  // 31 digits
            "doc.md#3",
            "",
        ];
        for id in ids {
            let key = ChunkKey::new(id);
            assert_eq!(key.to_string(), id);
            assert_eq!(serde_json::to_string(&key).unwrap(), format!("{id:?}"));
            let back: ChunkKey = serde_json::from_str(&format!("{id:?}")).unwrap();
            assert_eq!(back, key);
        }
        assert!(matches!(ChunkKey::new(&hash), ChunkKey::Hash(_)));
        assert!(matches!(ChunkKey::new(ids[1]), ChunkKey::Other(_)));
        // Content-hash keys order as their ids do.
        let mut hashes: Vec<String> = (0..50)
            .map(|i| crate::chunk::chunk_id("d", &i.to_string()))
            .collect();
        let mut keys: Vec<ChunkKey> = hashes.iter().map(|h| ChunkKey::new(h)).collect();
        hashes.sort();
        keys.sort();
        let keys: Vec<String> = keys.iter().map(ChunkKey::to_string).collect();
        assert_eq!(keys, hashes);
    }
}
