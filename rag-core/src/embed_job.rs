//! The batch embedding job (seed step 5) for any [`EmbeddingModel`] and any [`ObjectStore`]:
//! chunks → vectors → Parquet shards `part-NNNNN.parquet` under one prefix.
//!
//! Shards are cut deterministically from the chunk order (`shard_rows` each), so a re-run
//! makes the same shards; a shard whose file metadata (model id, dims, normalisation, hash of
//! its chunk ids) already matches is kept, and every shard is written with one atomic `put`.
//! A job killed at any point therefore resumes where it stopped, with no duplicate or missing
//! rows. `workers > 1` splits the shards round-robin (worker `i` writes shards `i`, `i + n`, …),
//! e.g. for N PAI-DLC workers each writing its own shards.

use std::collections::HashSet;

use futures::TryStreamExt;

use crate::chunk::{Chunk, Chunker};
use crate::embedding::EmbeddingModel;
use crate::error::{Error, Result};
use crate::loader::{DocumentReader, LoadReport};
use crate::parse::Parsers;
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
    let mut writer = ShardWriter::new(store, model, prefix, options, chunks.len(), progress)?;
    for shard in chunks.chunks(options.shard_rows.max(1)) {
        writer.push(shard.to_vec()).await?;
    }
    writer.finish().await
}

/// What [`embed_corpus`] read and wrote.
#[derive(Debug, Clone, Default)]
pub struct CorpusReport {
    /// Documents read.
    pub documents: usize,
    /// Their chunks (repeated chunk ids dropped).
    pub chunks: usize,
    /// What was skipped, renamed and counted per format while reading (no documents: they
    /// are never all held).
    pub load: LoadReport,
    /// The shards.
    pub shards: ShardReport,
}

/// Stage 5 over a corpus too big to hold: the objects under `input` are read, parsed and
/// chunked one file at a time into [`ShardWriter`], so memory holds one file's documents
/// and one shard, never the corpus. A first pass over the files counts the chunks (for the
/// progress bar's total and each worker's share); the second embeds them. The shards are
/// the ones [`embed_to_shards`] makes of `chunker.chunk_all(all documents)`. No documents is
/// `InvalidInput`.
#[allow(clippy::too_many_arguments)]
pub async fn embed_corpus(
    src: &dyn ObjectStore,
    input: &StoreUri,
    parsers: &Parsers,
    chunker: &Chunker,
    dst: &dyn ObjectStore,
    model: &dyn EmbeddingModel,
    output: &StoreUri,
    options: &ShardOptions,
    progress: &dyn Progress,
) -> Result<CorpusReport> {
    let mut report = CorpusReport::default();
    let mut counting = CorpusChunks::open(src, input, parsers, chunker).await?;
    while let Some(chunks) = counting.next_chunks().await? {
        report.chunks += chunks.len();
    }
    report.documents = counting.documents;
    report.load = std::mem::take(&mut counting.load);
    drop(counting);
    if report.documents == 0 {
        return Err(Error::invalid(format!(
            "no documents under {input} ({} inputs skipped)",
            report.load.skipped.len()
        )));
    }
    let mut writer = ShardWriter::new(dst, model, output, options, report.chunks, progress)?;
    let mut chunks = CorpusChunks::open(src, input, parsers, chunker).await?;
    while let Some(next) = chunks.next_chunks().await? {
        writer.push(next).await?;
    }
    report.shards = writer.finish().await?;
    Ok(report)
}

/// The chunks of the documents under a prefix, one file at a time, in the order
/// [`Chunker::chunk_all`] gives for all of them (a chunk id seen before is dropped).
struct CorpusChunks<'a> {
    reader: DocumentReader<'a>,
    chunker: &'a Chunker,
    /// The chunk ids of the document being chunked, as 128-bit keys ([`id_key`]). A chunk id
    /// hashes its document's id ([`chunk_id`](crate::chunk::chunk_id)), and the reader gives
    /// every document an id of its own ([`DocIds`](crate::loader)), so an id can repeat only
    /// within one document (the same text twice): the set is cleared per document, not kept
    /// for the corpus (16 bytes a chunk were most of this stage's memory at a million).
    seen: HashSet<u128>,
    documents: usize,
    load: LoadReport,
}

impl<'a> CorpusChunks<'a> {
    async fn open(
        store: &'a dyn ObjectStore,
        input: &StoreUri,
        parsers: &'a Parsers,
        chunker: &'a Chunker,
    ) -> Result<Self> {
        Ok(Self {
            reader: DocumentReader::open(store, input, parsers).await?,
            chunker,
            seen: HashSet::new(),
            documents: 0,
            load: LoadReport::default(),
        })
    }

    /// The next file's new chunks (possibly none); `None` after the last file.
    async fn next_chunks(&mut self) -> Result<Option<Vec<Chunk>>> {
        let Some(mut file) = self.reader.next_file().await? else {
            return Ok(None);
        };
        self.documents += file.documents.len();
        let mut chunks = Vec::new();
        for d in &file.documents {
            self.seen.clear();
            let seen = &mut self.seen;
            chunks.extend(
                self.chunker
                    .chunk(d)
                    .into_iter()
                    .filter(|c| seen.insert(id_key(&c.id))),
            );
        }
        file.documents.clear();
        self.load.extend(file);
        Ok(Some(chunks))
    }
}

/// A chunk id as 128 bits: the id itself when it is the chunker's 32 hex digits, else the
/// first 128 bits of its SHA-256.
fn id_key(id: &str) -> u128 {
    if id.len() == 32
        && let Ok(k) = u128::from_str_radix(id, 16)
    {
        return k;
    }
    crate::loader::id_key(id)
}

/// Cuts chunks, pushed in order, into shards of `shard_rows` and writes this worker's (see
/// the module docs): at most one shard's chunks and vectors are held.
pub struct ShardWriter<'a> {
    store: &'a dyn ObjectStore,
    model: &'a dyn EmbeddingModel,
    prefix: StoreUri,
    options: ShardOptions,
    progress: &'a dyn Progress,
    buffer: Vec<Chunk>,
    /// The number of the shard being filled.
    next: usize,
    pushed: usize,
    report: ShardReport,
}

impl<'a> ShardWriter<'a> {
    /// A writer for a job of `total` chunks (for the progress total of this worker's share).
    pub fn new(
        store: &'a dyn ObjectStore,
        model: &'a dyn EmbeddingModel,
        prefix: &StoreUri,
        options: &ShardOptions,
        total: usize,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
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
        let rows = options.shard_rows.max(1);
        let mine: usize = (0..total.div_ceil(rows))
            .filter(|i| i % options.workers == options.worker)
            .map(|i| rows.min(total - i * rows))
            .sum();
        progress.begin(Stage::Embed, Some(mine as u64));
        Ok(Self {
            store,
            model,
            prefix: prefix.clone(),
            options: ShardOptions {
                shard_rows: rows,
                ..*options
            },
            progress,
            buffer: Vec::with_capacity(rows),
            next: 0,
            pushed: 0,
            report: ShardReport::default(),
        })
    }

    /// Takes the next chunks in order, writing each shard they fill.
    pub async fn push(&mut self, chunks: Vec<Chunk>) -> Result<()> {
        for chunk in chunks {
            self.buffer.push(chunk);
            self.pushed += 1;
            if self.buffer.len() == self.options.shard_rows {
                self.shard().await?;
            }
        }
        Ok(())
    }

    /// Writes the last, partial shard, removes shards past the end (left by a larger
    /// corpus) and reports.
    pub async fn finish(mut self) -> Result<ShardReport> {
        if !self.buffer.is_empty() {
            self.shard().await?;
        }
        self.report.shards = self.next;
        let shards = self.next;
        let stale: Vec<_> = self
            .store
            .list(&self.prefix)
            .try_filter(|m| {
                let n = shard_number(m.uri.file_name());
                futures::future::ready(n.is_some_and(|n| n >= shards))
            })
            .try_collect()
            .await?;
        for m in stale {
            self.store.delete(&m.uri).await?;
            self.report.stale_removed += 1;
        }
        let r = &self.report;
        self.progress.end(
            Stage::Embed,
            &format!(
                "{} chunks in {} shards: {} written ({} rows), {} current, {} stale removed",
                self.pushed, r.shards, r.written, r.rows_embedded, r.current, r.stale_removed
            ),
        );
        Ok(self.report)
    }

    /// The buffered chunks as shard `next`: kept when current, embedded and written when it is
    /// this worker's, skipped when another's.
    async fn shard(&mut self) -> Result<()> {
        let i = self.next;
        self.next += 1;
        let shard = std::mem::take(&mut self.buffer);
        if i % self.options.workers != self.options.worker {
            return Ok(());
        }
        let (store, model, stage) = (self.store, self.model, Stage::Embed);
        let uri = shard_uri(&self.prefix, i)?;
        let meta = ShardMeta {
            model_id: model.model_id().to_string(),
            dims: model.dims(),
            normalized: model.normalized(),
            source_hash: source_hash(shard.iter()),
        };
        if shard_is_current(store, &uri, &meta).await {
            self.report.current += 1;
            self.progress.advance(stage, shard.len() as u64);
            return Ok(());
        }
        let mut rows = Vec::with_capacity(shard.len());
        for batch in shard.chunks(self.options.batch.max(1)) {
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
            self.progress.advance(stage, batch.len() as u64);
            rows.extend(
                batch
                    .iter()
                    .cloned()
                    .zip(vectors)
                    .map(|(chunk, vector)| EmbeddedChunk { chunk, vector }),
            );
        }
        store.put(&uri, write_shard(&rows, &meta)?).await?;
        self.report.written += 1;
        self.report.rows_embedded += rows.len();
        self.buffer = Vec::with_capacity(self.options.shard_rows);
        Ok(())
    }
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

    #[tokio::test]
    async fn a_streamed_corpus_makes_the_shards_of_the_whole_one() {
        // Stage 5 reads one file at a time; its shards must be those of chunking every
        // document at once (repeated chunk ids dropped across files), for any worker split.
        let store = InMemoryStore::new();
        let raw: StoreUri = "mem://bkt/raw-docs/".parse().unwrap();
        let lines: String = (0..9)
            .map(|i| format!("{{\"id\":\"j{i}\",\"text\":\"json page {i} about pipes\\n\\nsecond paragraph {i}\"}}\n"))
            .collect();
        store
            .put(&raw.join("a/pages.jsonl").unwrap(), lines.into())
            .await
            .unwrap();
        for (name, text) in [
            ("b.txt", "Notes on sockets.\n\nMore notes on sockets."),
            ("c.txt", "Notes on signals."),
            ("empty.txt", ""),
        ] {
            store
                .put(&raw.join(name).unwrap(), text.to_string().into())
                .await
                .unwrap();
        }
        let parsers = Parsers::builtin();
        let chunker = Chunker::chars(30, 0);
        let whole = crate::loader::load_documents_with(&store, &raw, &parsers)
            .await
            .unwrap();
        let all = chunker.chunk_all(&whole.documents);
        let want_prefix: StoreUri = "mem://bkt/vector-indexes/whole/".parse().unwrap();
        embed_to_shards(&store, &model(), &all, &want_prefix, &opts(4), &LogProgress)
            .await
            .unwrap();
        let want = rows(&store, &want_prefix).await;

        for workers in [1, 2, 3] {
            let prefix: StoreUri = format!("mem://bkt/vector-indexes/streamed-{workers}/")
                .parse()
                .unwrap();
            for worker in 0..workers {
                let o = ShardOptions {
                    worker,
                    workers,
                    ..opts(4)
                };
                let r = embed_corpus(
                    &store,
                    &raw,
                    &parsers,
                    &chunker,
                    &store,
                    &model(),
                    &prefix,
                    &o,
                    &LogProgress,
                )
                .await
                .unwrap();
                assert_eq!((r.documents, r.chunks), (whole.documents.len(), all.len()));
                assert_eq!(r.load.skipped.len(), whole.skipped.len());
            }
            assert_eq!(rows(&store, &prefix).await, want, "{workers} workers");
        }
        // An empty corpus is an error, not an empty set of shards.
        let none: StoreUri = "mem://bkt/nothing/".parse().unwrap();
        let err = embed_corpus(
            &store,
            &none,
            &parsers,
            &chunker,
            &store,
            &model(),
            &want_prefix,
            &opts(4),
            &LogProgress,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no documents under"), "{err}");
        assert_eq!(rows(&store, &want_prefix).await, want, "nothing removed");
    }
}
