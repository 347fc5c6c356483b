//! Interrupt the long stages at random points and resume them: the final state must equal an
//! uninterrupted run's — no lost, duplicated or corrupt objects, shards or index records,
//! compared by content hash.
//!
//! The harness drops the stage's future at the point where a store write or an index upsert
//! hangs (what a crash, a Ctrl-C or a timed-out caller does to an `async` stage): a [`Trip`]
//! counts write steps — each `put`, each chunk of a `put_stream`, each upsert or delete — and
//! after a
//! random budget makes the next one hang forever. A stream is cut in the middle of the object
//! (the store is half-way through writing it); an upsert or a delete is cut after applying part
//! of its batch (a bulk request that died half-way). Each case runs several seeds, each interrupted up
//! to three times before it is let finish.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rag_core::index::{IndexRecord, SearchHit, SearchRequest, UpsertReport};
use rag_core::local::*;
use rag_core::pipeline::*;
use rag_core::store::{ByteStream, GetResult, ListPage, ObjectMeta, PutResult};
use rag_core::*;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

/// Write steps left before everything hangs.
#[derive(Debug)]
struct Trip {
    left: AtomicI64,
    fired: Notify,
}

impl Trip {
    fn after(steps: i64) -> Arc<Self> {
        Arc::new(Self {
            left: AtomicI64::new(steps),
            fired: Notify::new(),
        })
    }

    fn never() -> Arc<Self> {
        Self::after(i64::MAX)
    }

    /// Takes one step; false once the budget is spent (and the trip has fired).
    fn step(&self) -> bool {
        if self.left.fetch_sub(1, Ordering::SeqCst) > 0 {
            return true;
        }
        self.fired.notify_one();
        false
    }

    fn used(&self) -> i64 {
        i64::MAX - self.left.load(Ordering::SeqCst)
    }
}

/// Runs `stage` until it ends or the trip fires; `None` means it was interrupted (the future
/// is dropped, whatever it was doing).
async fn run_or_interrupt<T>(trip: &Trip, stage: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        out = stage => Some(out),
        () = trip.fired.notified() => None,
    }
}

/// An object store whose writes hang once `trip` fires.
#[derive(Debug)]
struct TripStore {
    inner: Arc<dyn ObjectStore>,
    trip: Arc<Trip>,
}

impl TripStore {
    async fn gate(&self) {
        if !self.trip.step() {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait]
impl ObjectStore for TripStore {
    async fn put(&self, uri: &StoreUri, data: Bytes) -> Result<PutResult> {
        self.gate().await;
        self.inner.put(uri, data).await
    }

    async fn put_stream(&self, uri: &StoreUri, data: ByteStream) -> Result<PutResult> {
        self.gate().await;
        let trip = Arc::clone(&self.trip);
        let gated = data
            .then(move |chunk| {
                let go = trip.step();
                async move {
                    if !go {
                        std::future::pending::<()>().await;
                    }
                    chunk
                }
            })
            .boxed();
        self.inner.put_stream(uri, gated).await
    }

    async fn get(&self, uri: &StoreUri) -> Result<GetResult> {
        self.inner.get(uri).await
    }

    async fn get_range(&self, uri: &StoreUri, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(uri, range).await
    }

    async fn head(&self, uri: &StoreUri) -> Result<ObjectMeta> {
        self.inner.head(uri).await
    }

    async fn list_page(
        &self,
        prefix: &StoreUri,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage> {
        self.inner.list_page(prefix, token, max_keys).await
    }

    async fn delete(&self, uri: &StoreUri) -> Result<()> {
        self.gate().await;
        self.inner.delete(uri).await
    }

    async fn copy(&self, from: &StoreUri, to: &StoreUri) -> Result<()> {
        self.gate().await;
        self.inner.copy(from, to).await
    }
}

/// An index whose upserts hang once `trip` fires — after applying the first half of the batch.
#[derive(Debug)]
struct TripIndex {
    inner: Arc<LocalVectorIndex>,
    trip: Arc<Trip>,
}

#[async_trait]
impl VectorIndex for TripIndex {
    async fn create_index(&self, schema: &IndexSchema) -> Result<()> {
        self.inner.create_index(schema).await
    }

    async fn schema(&self, index: &str) -> Result<IndexSchema> {
        self.inner.schema(index).await
    }

    async fn upsert(&self, index: &str, mut records: Vec<IndexRecord>) -> Result<UpsertReport> {
        if !self.trip.step() {
            records.truncate(records.len() / 2);
            self.inner.upsert(index, records).await?;
            return std::future::pending().await;
        }
        self.inner.upsert(index, records).await
    }

    async fn delete(&self, index: &str, ids: &[String]) -> Result<usize> {
        if !self.trip.step() {
            self.inner.delete(index, &ids[..ids.len() / 2]).await?;
            return std::future::pending().await;
        }
        self.inner.delete(index, ids).await
    }

    async fn search(&self, index: &str, request: &SearchRequest) -> Result<Vec<SearchHit>> {
        self.inner.search(index, request).await
    }

    async fn count(&self, index: &str) -> Result<usize> {
        self.inner.count(index).await
    }

    async fn drop_index(&self, index: &str) -> Result<()> {
        self.inner.drop_index(index).await
    }
}

/// SplitMix64: the random interruption points, reproducible from the seed in a failure message.
fn random(seed: u64) -> impl FnMut(i64) -> i64 {
    let mut state = seed;
    move |below| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        i64::try_from((z ^ (z >> 31)) % below.max(1) as u64).unwrap()
    }
}

/// A corpus with small and multi-chunk (> 256 KiB) files, a JSONL file and files in folders.
fn corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("man/sub")).unwrap();
    for i in 0..8 {
        let text: String = (0..40 + i * 30)
            .map(|p| format!("Paragraph {p} of page {i}: the kill signal ends process {p}.\n\n"))
            .collect();
        std::fs::write(dir.join(format!("man/page-{i}.txt")), text).unwrap();
    }
    let big: String = (0..12000)
        .map(|p| format!("Section {p}. Large manual text about sockets, pipes and files.\n\n"))
        .collect();
    assert!(big.len() > 600 * 1024);
    std::fs::write(dir.join("man/sub/large.txt"), big).unwrap();
    let lines: String = (0..20)
        .map(|i| format!("{{\"id\": \"j{i}\", \"title\": \"t{i}\", \"text\": \"json document {i} about signals\"}}\n"))
        .collect();
    std::fs::write(dir.join("man/docs.jsonl"), lines).unwrap();
}

/// Every object under `prefix` → SHA-256 of its content.
async fn snapshot(store: &dyn ObjectStore, prefix: &StoreUri) -> BTreeMap<String, String> {
    let objects: Vec<ObjectMeta> = store.list(prefix).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for o in objects {
        let bytes = store.get_bytes(&o.uri).await.unwrap();
        out.insert(o.uri.to_string(), hex::encode(Sha256::digest(&bytes)));
    }
    out
}

/// Every record of an index → SHA-256 over its text, vector bits and metadata.
async fn index_snapshot(index: &LocalVectorIndex, name: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in index.records(name).await.unwrap() {
        let mut h = Sha256::new();
        h.update(r.text.as_bytes());
        for x in &r.vector {
            h.update(x.to_bits().to_le_bytes());
        }
        h.update(serde_json::to_vec(&r.metadata).unwrap());
        assert!(out.insert(r.id, hex::encode(h.finalize())).is_none());
    }
    out
}

fn options() -> PipelineOptions {
    PipelineOptions {
        shard_rows: 16,
        index_batch: 10,
        ..Default::default()
    }
}

fn pipeline(store: Arc<dyn ObjectStore>, index: Arc<dyn VectorIndex>, work: &Path) -> Pipeline {
    Pipeline::new(store, Layout::new("oss://bucket/".parse().unwrap()))
        .with_trainer(Arc::new(LocalProcessBackend::new(work.join("jobs"))))
        .with_index(index)
        .with_chat(Arc::new(ExtractiveChat::new(2)))
        .with_options(options())
}

fn model() -> HashedEmbedding {
    HashedEmbedding::new(HashedEmbeddingConfig {
        dims: 64,
        ..Default::default()
    })
    .unwrap()
}

/// Files left in the store's temporary folder (a dropped write must remove its own).
fn temp_files(root: &Path) -> usize {
    std::fs::read_dir(root.join(".ragloop-tmp")).map_or(0, Iterator::count)
}

const SEEDS: u64 = 6;

/// Runs `stage` on fresh state per seed, interrupting it up to three times at random write
/// steps below `total`, then lets it finish. Returns how many interruptions happened.
async fn interrupt_and_resume<F, Fut>(seed: u64, total: i64, mut stage: F) -> usize
where
    F: FnMut(Arc<Trip>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut rand = random(seed);
    let mut interruptions = 0;
    for _ in 0..3 {
        let trip = Trip::after(rand(total));
        match run_or_interrupt(&trip, stage(Arc::clone(&trip))).await {
            None => interruptions += 1,
            Some(done) => {
                done.unwrap();
                return interruptions;
            }
        }
    }
    stage(Trip::never()).await.unwrap();
    interruptions
}

/// Copies the store directory `from` to `to` (an empty store when `from` is `None`).
fn copy_store(from: Option<&Path>, to: &Path) {
    let Some(from) = from else { return };
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs a stage that writes to the store — once whole on a copy of `start`, then per seed on
/// a fresh copy, interrupted at random write steps and resumed — and checks that the objects
/// under `prefix` are the same every time and that no temporary file is left. Returns the
/// write steps of the whole run.
async fn store_stage_resumes<F, Fut>(
    dir: &Path,
    start: Option<&Path>,
    prefix: &StoreUri,
    what: &str,
    seed_base: u64,
    stage: F,
) -> i64
where
    F: Fn(Pipeline) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let index: Arc<dyn VectorIndex> = Arc::new(LocalVectorIndex::in_memory());
    let root = dir.join(format!("{what}-whole"));
    copy_store(start, &root);
    let trip = Trip::never();
    let whole: Arc<dyn ObjectStore> = Arc::new(TripStore {
        inner: Arc::new(LocalFileStore::new(&root)),
        trip: Arc::clone(&trip),
    });
    stage(pipeline(Arc::clone(&whole), Arc::clone(&index), dir))
        .await
        .unwrap();
    let total = trip.used();
    let want = snapshot(whole.as_ref(), prefix).await;
    assert!(!want.is_empty(), "{what} wrote nothing under {prefix}");

    let mut interrupted = 0;
    for seed in 0..SEEDS {
        let root = dir.join(format!("{what}-seed-{seed}"));
        copy_store(start, &root);
        let inner: Arc<dyn ObjectStore> = Arc::new(LocalFileStore::new(&root));
        interrupted += interrupt_and_resume(seed_base + seed, total, |trip| {
            let store: Arc<dyn ObjectStore> = Arc::new(TripStore {
                inner: Arc::clone(&inner),
                trip,
            });
            stage(pipeline(store, Arc::clone(&index), dir))
        })
        .await;
        assert_eq!(
            snapshot(inner.as_ref(), prefix).await,
            want,
            "seed {seed}: {what} resumed to other objects than an uninterrupted run"
        );
        assert_eq!(temp_files(&root), 0, "seed {seed}: temporary files left");
    }
    assert!(interrupted >= SEEDS as usize, "{interrupted} interruptions");
    eprintln!(
        "{what}: {SEEDS} seeds, {interrupted} interruptions among {total} write steps; every resumed state equals the uninterrupted one"
    );
    total
}

#[tokio::test]
async fn ingest_interrupted_mid_object_resumes_to_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    corpus(&data);
    let raw = Layout::new("oss://bucket/".parse().unwrap()).raw_docs();
    let total = store_stage_resumes(dir.path(), None, &raw, "ingest", 0, |p| {
        let data = data.clone();
        async move {
            let r = p.ingest(&data).await?;
            assert!(r.failed.is_empty(), "{:?}", r.failed);
            assert_eq!(r.uploaded + r.unchanged, 10);
            Ok(())
        }
    })
    .await;
    assert!(
        total > 12,
        "the large file goes in several chunks: {total} steps"
    );
}

#[tokio::test]
async fn embedding_interrupted_mid_shard_resumes_to_the_same_shards() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    corpus(&data);
    let model = model();
    let shards = Layout::new("oss://bucket/".parse().unwrap()).vector_shards(model.model_id());
    let ingested = dir.path().join("ingested");
    pipeline(
        Arc::new(LocalFileStore::new(&ingested)),
        Arc::new(LocalVectorIndex::in_memory()),
        dir.path(),
    )
    .ingest(&data)
    .await
    .unwrap();
    let total = store_stage_resumes(
        dir.path(),
        Some(&ingested),
        &shards,
        "embedding",
        100,
        |p| {
            let model = model.clone();
            async move { p.embed(&model).await.map(drop) }
        },
    )
    .await;
    assert!(total >= 4, "one put a shard: {total}");
}

#[tokio::test]
async fn indexing_interrupted_mid_batch_resumes_to_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    corpus(&data);
    let model = model();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileStore::new(dir.path().join("store")));
    let scratch: Arc<dyn VectorIndex> = Arc::new(LocalVectorIndex::in_memory());
    let p = pipeline(Arc::clone(&store), scratch, dir.path());
    p.ingest(&data).await.unwrap();
    p.embed(&model).await.unwrap();
    let name = options().index_name;

    let trip = Trip::never();
    let whole = Arc::new(
        LocalVectorIndex::open(dir.path().join("whole"))
            .await
            .unwrap(),
    );
    let report = pipeline(
        Arc::clone(&store),
        Arc::new(TripIndex {
            inner: Arc::clone(&whole),
            trip: Arc::clone(&trip),
        }),
        dir.path(),
    )
    .index(&model)
    .await
    .unwrap();
    assert!(report.failed.is_empty());
    let total = trip.used();
    assert!(total >= 10, "{total} upserts");
    let want = index_snapshot(&whole, &name).await;
    assert_eq!(want.len(), report.count);

    let mut interrupted = 0;
    for seed in 0..SEEDS {
        let index_dir = dir.path().join(format!("seed-{seed}"));
        interrupted += interrupt_and_resume(seed + 200, total, |trip| {
            let store = Arc::clone(&store);
            let model = model.clone();
            let index_dir = index_dir.clone();
            async move {
                // Each attempt opens the index from disk, as a restarted process would.
                let inner = Arc::new(LocalVectorIndex::open(&index_dir).await?);
                let index = Arc::new(TripIndex { inner, trip });
                let dir = index_dir.parent().unwrap().to_path_buf();
                pipeline(store, index, &dir).index(&model).await.map(drop)
            }
        })
        .await;
        let reopened = LocalVectorIndex::open(&index_dir).await.unwrap();
        assert_eq!(
            index_snapshot(&reopened, &name).await,
            want,
            "seed {seed}: records differ from an uninterrupted indexing"
        );
    }
    assert!(interrupted >= SEEDS as usize, "{interrupted} interruptions");
    eprintln!(
        "indexing: {SEEDS} seeds, {interrupted} interruptions among {total} write steps; every resumed state equals the uninterrupted one"
    );
}

#[tokio::test]
async fn a_resync_interrupted_mid_delete_resumes_to_a_fresh_builds_records() {
    // Issue 26: after a page is removed and another edited, stage 6 upserts the new chunks and
    // deletes the stale ones; killed anywhere in between, the rerun ends with exactly the
    // records a fresh build of the new corpus has.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    corpus(&data);
    let model = model();
    let name = options().index_name;
    let before = dir.path().join("before");
    let store0: Arc<dyn ObjectStore> = Arc::new(LocalFileStore::new(before.join("store")));
    let index0 = Arc::new(LocalVectorIndex::open(before.join("index")).await.unwrap());
    let p = pipeline(Arc::clone(&store0), index0.clone(), dir.path());
    p.ingest(&data).await.unwrap();
    p.embed(&model).await.unwrap();
    p.index(&model).await.unwrap();
    drop((p, index0));
    std::fs::remove_file(data.join("man/page-3.txt")).unwrap();
    let edited = std::fs::read_to_string(data.join("man/page-5.txt")).unwrap();
    std::fs::write(
        data.join("man/page-5.txt"),
        edited.replace("Paragraph 7 of page 5", "Paragraph seven, rewritten,"),
    )
    .unwrap();
    let p = pipeline(
        Arc::clone(&store0),
        Arc::new(LocalVectorIndex::in_memory()),
        dir.path(),
    );
    assert_eq!(p.ingest(&data).await.unwrap().removed, ["man/page-3.txt"]);
    p.embed(&model).await.unwrap();

    // A fresh build of the new corpus: what every resumed run must end with.
    let fresh = Arc::new(LocalVectorIndex::in_memory());
    let fresh_store = dir.path().join("fresh");
    copy_store(Some(&before.join("store")), &fresh_store);
    std::fs::remove_file(fresh_store.join("bucket/indexes/rag-index/manifest.json")).unwrap();
    pipeline(
        Arc::new(LocalFileStore::new(&fresh_store)),
        fresh.clone(),
        dir.path(),
    )
    .index(&model)
    .await
    .unwrap();
    let want = index_snapshot(&fresh, &name).await;

    // Uninterrupted, from the state before: counts the write steps.
    let whole = dir.path().join("whole");
    copy_store(Some(&before), &whole);
    let trip = Trip::never();
    let inner = Arc::new(LocalVectorIndex::open(whole.join("index")).await.unwrap());
    let report = pipeline(
        Arc::new(LocalFileStore::new(whole.join("store"))),
        Arc::new(TripIndex {
            inner: Arc::clone(&inner),
            trip: Arc::clone(&trip),
        }),
        dir.path(),
    )
    .index(&model)
    .await
    .unwrap();
    assert_eq!(report.documents_removed, 1, "{report:?}");
    assert_eq!(report.documents_changed, 1, "{report:?}");
    assert!(report.deleted >= 2, "{report:?}");
    assert_eq!(index_snapshot(&inner, &name).await, want);
    let total = trip.used();

    let mut interrupted = 0;
    for seed in 0..SEEDS {
        let root = dir.path().join(format!("resync-{seed}"));
        copy_store(Some(&before), &root);
        interrupted += interrupt_and_resume(seed + 300, total, |trip| {
            let model = model.clone();
            let root = root.clone();
            async move {
                let inner = Arc::new(LocalVectorIndex::open(root.join("index")).await?);
                let index = Arc::new(TripIndex { inner, trip });
                let store = Arc::new(LocalFileStore::new(root.join("store")));
                pipeline(store, index, &root).index(&model).await.map(drop)
            }
        })
        .await;
        let reopened = LocalVectorIndex::open(root.join("index")).await.unwrap();
        assert_eq!(
            index_snapshot(&reopened, &name).await,
            want,
            "seed {seed}: records differ from a fresh build of the new corpus"
        );
    }
    assert!(interrupted >= SEEDS as usize, "{interrupted} interruptions");
}
