//! The batch embedding job (seed step 5) for any [`EmbeddingModel`] and any [`ObjectStore`]:
//! chunks → vectors → Parquet shards `part-NNNNN.parquet` under one prefix.
//!
//! Shards are cut deterministically from the chunk order (`shard_rows` each), so a re-run
//! makes the same shards; a shard whose file metadata (model id, dims, normalisation, hash of
//! its chunk ids) already matches is kept, and every shard is written with one atomic `put`.
//! A job killed at any point therefore resumes where it stopped, with no duplicate or missing
//! rows. `workers > 1` splits the shards round-robin (worker `i` writes shards `i`, `i + n`, …),
//! e.g. for N PAI-DLC workers each writing its own shards.

use futures::TryStreamExt;

use crate::chunk::Chunk;
use crate::embedding::EmbeddingModel;
use crate::error::{Error, Result};
use crate::stage::{Progress, Stage};
use crate::store::ObjectStore;
use crate::uri::StoreUri;
use crate::vectors::{
    EmbeddedChunk, ShardMeta, read_shard_meta, source_hash, verify_shard, write_shard,
};

/// How [`embed_to_shards`] cuts and spreads the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardOptions {
    /// Chunks per shard.
    pub shard_rows: usize,
    /// Texts per `embed_documents` call (progress moves per call).
    pub batch: usize,
    /// This worker's index, `0..workers`.
    pub worker: usize,
    /// Number of workers sharing the job.
    pub workers: usize,
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self {
            shard_rows: 4096,
            batch: 256,
            worker: 0,
            workers: 1,
        }
    }
}

/// What [`embed_to_shards`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardReport {
    /// Shards the whole job has (all workers).
    pub shards: usize,
    /// Shards this worker embedded and wrote.
    pub written: usize,
    /// Shards this worker found current and kept.
    pub current: usize,
    /// Chunks this worker embedded (in written shards).
    pub rows_embedded: usize,
    /// Shards past the end (left by a larger corpus) that were removed.
    pub stale_removed: usize,
}

/// The URI of shard `n` under `prefix`.
pub fn shard_uri(prefix: &StoreUri, n: usize) -> Result<StoreUri> {
    prefix.join(&format!("part-{n:05}.parquet"))
}

/// The shard number of a `part-NNNNN.parquet` file name.
pub fn shard_number(name: &str) -> Option<usize> {
    name.strip_prefix("part-")?
        .strip_suffix(".parquet")?
        .parse()
        .ok()
}

/// Embeds `chunks` with `model` into shards under `prefix` (see the module docs).
pub async fn embed_to_shards(
    store: &dyn ObjectStore,
    model: &dyn EmbeddingModel,
    chunks: &[Chunk],
    prefix: &StoreUri,
    options: &ShardOptions,
    progress: &dyn Progress,
) -> Result<ShardReport> {
    if options.workers == 0 || options.worker >= options.workers {
        return Err(Error::invalid(format!(
            "worker {} of {}: the index must be below the number of workers",
            options.worker, options.workers
        )));
    }
    if !prefix.is_prefix() {
        return Err(Error::invalid(format!(
            "{prefix}: the output must be a prefix (end with '/')"
        )));
    }
    let stage = Stage::Embed;
    let shards: Vec<&[Chunk]> = chunks.chunks(options.shard_rows.max(1)).collect();
    let mine: Vec<(usize, &[Chunk])> = shards
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| i % options.workers == options.worker)
        .collect();
    let mut report = ShardReport {
        shards: shards.len(),
        ..Default::default()
    };
    progress.begin(stage, Some(mine.iter().map(|(_, s)| s.len() as u64).sum()));
    for (i, shard) in mine {
        let uri = shard_uri(prefix, i)?;
        let meta = ShardMeta {
            model_id: model.model_id().to_string(),
            dims: model.dims(),
            normalized: model.normalized(),
            source_hash: source_hash(shard.iter()),
        };
        if shard_is_current(store, &uri, &meta).await {
            report.current += 1;
            progress.advance(stage, shard.len() as u64);
            continue;
        }
        let mut rows = Vec::with_capacity(shard.len());
        for batch in shard.chunks(options.batch.max(1)) {
            let texts: Vec<String> = batch.iter().map(Chunk::embedding_text).collect();
            let vectors = model.embed_documents(&texts).await?;
            if vectors.len() != batch.len() {
                return Err(Error::backend_msg(
                    "embedding",
                    format!(
                        "model returned {} vectors for {} texts",
                        vectors.len(),
                        batch.len()
                    ),
                ));
            }
            if let Some(v) = vectors.iter().find(|v| v.len() != model.dims()) {
                return Err(Error::DimensionMismatch {
                    expected: model.dims(),
                    actual: v.len(),
                });
            }
            rows.extend(batch.iter().zip(vectors).map(|(c, vector)| EmbeddedChunk {
                chunk: c.clone(),
                vector,
            }));
            progress.advance(stage, batch.len() as u64);
        }
        store.put(&uri, write_shard(&rows, &meta)?).await?;
        report.written += 1;
        report.rows_embedded += rows.len();
    }
    // Shards past the new end are left over from a larger corpus: remove them.
    let stale: Vec<_> = store
        .list(prefix)
        .try_filter(|m| {
            let n = shard_number(m.uri.file_name());
            futures::future::ready(n.is_some_and(|n| n >= shards.len()))
        })
        .try_collect()
        .await?;
    for m in stale {
        store.delete(&m.uri).await?;
        report.stale_removed += 1;
    }
    progress.end(
        stage,
        &format!(
            "{} chunks in {} shards: {} written ({} rows), {} current, {} stale removed",
            chunks.len(),
            report.shards,
            report.written,
            report.rows_embedded,
            report.current,
            report.stale_removed
        ),
    );
    Ok(report)
}

/// Whether the shard at `uri` was written for exactly these chunks and model, and is whole: a
/// shard whose metadata matches but whose rows fail [`verify_shard`] is embedded again.
async fn shard_is_current(store: &dyn ObjectStore, uri: &StoreUri, meta: &ShardMeta) -> bool {
    let Ok(bytes) = store.get_bytes(uri).await else {
        return false;
    };
    if !read_shard_meta(bytes.clone()).is_ok_and(|m| m == *meta) {
        return false;
    }
    match tokio::task::spawn_blocking(move || verify_shard(bytes)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(shard = %uri, error = %e, "damaged vector shard; embedding it again");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::chunk::{Chunker, Document};
    use crate::embedding::Embedding;
    use crate::local::{HashedEmbedding, HashedEmbeddingConfig, InMemoryStore};
    use crate::stage::LogProgress;
    use crate::vectors::read_shard;

    fn chunks(n_docs: usize) -> Vec<Chunk> {
        let chunker = Chunker::chars(200, 0);
        (0..n_docs)
            .flat_map(|i| {
                chunker.chunk(&Document {
                    id: format!("doc{i}"),
                    title: format!("Doc {i}"),
                    text: format!("Paragraph one of document {i} about pipes.\n\nParagraph two mentions sockets {i}."),
                    source: format!("mem://bkt/raw/doc{i}"),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// The hashed model, but the `fail_at`-th call (0-based) fails: a job killed mid-way.
    struct Failing {
        inner: HashedEmbedding,
        calls: AtomicUsize,
        fail_at: usize,
    }

    #[async_trait]
    impl EmbeddingModel for Failing {
        fn model_id(&self) -> &str {
            self.inner.model_id()
        }
        fn dims(&self) -> usize {
            self.inner.dims()
        }
        fn max_input_tokens(&self) -> usize {
            self.inner.max_input_tokens()
        }
        fn normalized(&self) -> bool {
            self.inner.normalized()
        }
        async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>> {
            // Yield like a real model would, so a caller can drop the job between calls.
            tokio::task::yield_now().await;
            if self.calls.fetch_add(1, Ordering::SeqCst) == self.fail_at {
                return Err(Error::backend_msg("test", "killed"));
            }
            self.inner.embed_documents(texts).await
        }
        async fn embed_query(&self, text: &str) -> Result<Embedding> {
            self.inner.embed_query(text).await
        }
    }

    fn model() -> HashedEmbedding {
        HashedEmbedding::new(HashedEmbeddingConfig {
            dims: 32,
            ..Default::default()
        })
        .unwrap()
    }

    /// Every row of every shard under `prefix`, as (chunk id, vector), in shard order.
    async fn rows(store: &InMemoryStore, prefix: &StoreUri) -> Vec<(String, Vec<f32>)> {
        let mut metas: Vec<_> = store.list(prefix).try_collect().await.unwrap();
        metas.sort_by_key(|m| m.uri.to_string());
        let mut out = Vec::new();
        for m in metas {
            let (_, rows) = read_shard(store.get_bytes(&m.uri).await.unwrap()).unwrap();
            out.extend(rows.into_iter().map(|r| (r.chunk.id, r.vector)));
        }
        out
    }

    fn opts(shard_rows: usize) -> ShardOptions {
        ShardOptions {
            shard_rows,
            batch: 3,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_damaged_shard_is_embedded_again_not_kept_as_current() {
        // Before the content CRC a shard whose metadata matched was "current" however its rows
        // had been changed, and stage 6 indexed the changed text.
        let all = chunks(6);
        let prefix: StoreUri = "mem://bkt/vector-indexes/m/".parse().unwrap();
        let store = InMemoryStore::new();
        embed_to_shards(&store, &model(), &all, &prefix, &opts(4), &LogProgress)
            .await
            .unwrap();
        let want = rows(&store, &prefix).await;
        let first = prefix.join("part-00000.parquet").unwrap();
        let mut b = store.get_bytes(&first).await.unwrap().to_vec();
        let at = b.windows(9).position(|w| w == b"Paragraph").unwrap();
        b[at] = b'Q';
        store.put(&first, b.into()).await.unwrap();
        let again = embed_to_shards(&store, &model(), &all, &prefix, &opts(4), &LogProgress)
            .await
            .unwrap();
        assert_eq!((again.written, again.current), (1, again.shards - 1));
        assert_eq!(
            rows(&store, &prefix).await,
            want,
            "the shard is whole again"
        );
    }

    #[tokio::test]
    async fn a_killed_job_resumes_without_lost_or_duplicate_rows() {
        let all = chunks(20);
        let prefix: StoreUri = "mem://bkt/vector-indexes/m/".parse().unwrap();
        let reference = InMemoryStore::new();
        let full = embed_to_shards(&reference, &model(), &all, &prefix, &opts(7), &LogProgress)
            .await
            .unwrap();
        assert_eq!(full.shards, all.len().div_ceil(7));
        let want = rows(&reference, &prefix).await;
        assert_eq!(want.len(), all.len());

        let store = InMemoryStore::new();
        // Killed in the 6th embedding call: shards 0 and 1 (3 calls each) are written.
        let failing = Failing {
            inner: model(),
            calls: AtomicUsize::new(0),
            fail_at: 6,
        };
        let err = embed_to_shards(&store, &failing, &all, &prefix, &opts(7), &LogProgress).await;
        assert!(err.is_err());
        assert_eq!(rows(&store, &prefix).await.len(), 14);
        // Resumed: the two shards are kept, the rest written, and the result is identical.
        let resumed = embed_to_shards(&store, &model(), &all, &prefix, &opts(7), &LogProgress)
            .await
            .unwrap();
        assert_eq!((resumed.current, resumed.written), (2, full.shards - 2));
        assert_eq!(rows(&store, &prefix).await, want);
        // Dropping the future part-way (an aborted task) is just as safe.
        let store = InMemoryStore::new();
        let yielding = Failing {
            inner: model(),
            calls: AtomicUsize::new(0),
            fail_at: usize::MAX,
        };
        let o = opts(7);
        let mut job = Box::pin(embed_to_shards(
            &store,
            &yielding,
            &all,
            &prefix,
            &o,
            &LogProgress,
        ));
        for _ in 0..8 {
            assert!(futures::poll!(&mut job).is_pending());
        }
        drop(job);
        let partial = rows(&store, &prefix).await.len();
        assert!(partial > 0 && partial < all.len(), "{partial}");
        embed_to_shards(&store, &model(), &all, &prefix, &opts(7), &LogProgress)
            .await
            .unwrap();
        assert_eq!(rows(&store, &prefix).await, want);
    }

    #[tokio::test]
    async fn workers_split_the_shards_and_stale_shards_go() {
        let all = chunks(20);
        let prefix: StoreUri = "mem://bkt/v/".parse().unwrap();
        let single = InMemoryStore::new();
        embed_to_shards(&single, &model(), &all, &prefix, &opts(5), &LogProgress)
            .await
            .unwrap();
        let store = InMemoryStore::new();
        let mut written = 0;
        for worker in 0..3 {
            let o = ShardOptions {
                worker,
                workers: 3,
                ..opts(5)
            };
            written += embed_to_shards(&store, &model(), &all, &prefix, &o, &LogProgress)
                .await
                .unwrap()
                .written;
        }
        assert_eq!(written, all.len().div_ceil(5));
        assert_eq!(rows(&store, &prefix).await, rows(&single, &prefix).await);
        // A smaller corpus: the shards past its end are removed.
        let report = embed_to_shards(&store, &model(), &all[..6], &prefix, &opts(5), &LogProgress)
            .await
            .unwrap();
        assert_eq!((report.shards, report.stale_removed), (2, written - 2));
        assert_eq!(rows(&store, &prefix).await.len(), 6);
    }

    #[tokio::test]
    async fn bad_options_are_refused() {
        let store = InMemoryStore::new();
        let prefix: StoreUri = "mem://bkt/v/".parse().unwrap();
        let bad = ShardOptions {
            worker: 2,
            workers: 2,
            ..Default::default()
        };
        let err = embed_to_shards(&store, &model(), &chunks(1), &prefix, &bad, &LogProgress).await;
        assert!(matches!(err, Err(Error::InvalidInput { .. })));
        let file: StoreUri = "mem://bkt/v/file.parquet".parse().unwrap();
        let err =
            embed_to_shards(&store, &model(), &chunks(1), &file, &opts(5), &LogProgress).await;
        assert!(matches!(err, Err(Error::InvalidInput { .. })));
    }
}
