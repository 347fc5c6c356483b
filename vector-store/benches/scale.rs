//! Stages 1, 5 and 6 on a synthetic corpus of `--chunks N` chunks (the hashed model, 64
//! dims; default 100,000): wall time, heap peak and peak resident memory of each stage, in one
//! process (both peaks are reset before each stage, the resident one through
//! `/proc/self/clear_refs`). The allocator is the `ragloop` binary's (mimalloc with its
//! default purging, as every command but `train` runs), counting live bytes: the heap figures
//! are exact; resident memory adds what the allocator keeps of freed memory. Stage 5 streams the
//! documents one file at a time into shards, so its peak should not grow with N; stage 6's
//! includes the embedded index itself: by default the one `[index] local` opens (exact
//! vectors, BM25 in tantivy on disk), with `--hnsw` the `[index] hnsw` one, with `--builtin`
//! rag-core's index alone (BM25 in memory). Stage 6 then runs again with nothing changed, as
//! a rerun of the loop does.
//!
//! `cargo bench -p vector-store --bench scale -- --chunks 1000000 [--no-index] [--hnsw | --builtin]`

use std::alloc::{GlobalAlloc, Layout as AllocLayout};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use std::sync::Arc;
use std::time::Instant;

use rag_core::local::{HashedEmbedding, HashedEmbeddingConfig, LocalFileStore, LocalVectorIndex};
use rag_core::pipeline::{Layout, Pipeline, PipelineOptions};
use rag_core::{EmbeddingModel, Query, SearchRequest, VectorIndex};
use vector_store::{AnnParams, open_local_index};

/// The allocator: mimalloc, as the `ragloop` binary's, counting the bytes allocated and not
/// freed, so each stage's heap peak is exact. Resident memory adds what the allocator keeps of
/// freed memory (and mapped files), which varies from run to run.
struct Counting;

/// Heap bytes live now, and the most since the last [`reset_peak`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to mimalloc unchanged; the counters only observe sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Documents per JSONL file.
const PER_FILE: usize = 5_000;

fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The current resident memory as `anonymous + file-backed` MiB (file pages are mapped
/// files, e.g. tantivy's segments, which the kernel can drop).
fn resident_now() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    format!(
        "{:.0} + {:.0}",
        field("RssAnon:"),
        field("RssFile:") + field("RssShmem:")
    )
}

/// Resets the peak resident set size to the current one (Linux ≥ 4.0) and the heap's peak to
/// what is live; returns both now, in MiB.
fn reset_peak() -> (f64, f64) {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    (peak_mib(), mib(live))
}

/// The heap's and the resident set's peaks since [`reset_peak`], as table cells.
fn peaks() -> String {
    format!("{:.0} | {:.0}", mib(PEAK.load(Relaxed)), peak_mib())
}

/// [`reset_peak`]'s figures as table cells.
fn cells(start: (f64, f64)) -> String {
    format!("{:.0} | {:.0}", start.1, start.0)
}

/// The synthetic corpus's vocabulary.
const WORDS: [&str; 24] = [
    "socket",
    "pipe",
    "signal",
    "process",
    "thread",
    "memory",
    "file",
    "descriptor",
    "buffer",
    "kernel",
    "device",
    "network",
    "packet",
    "route",
    "queue",
    "timer",
    "clock",
    "lock",
    "mutex",
    "page",
    "cache",
    "disk",
    "block",
    "inode",
];

/// A document of two paragraphs of about 900 characters each (two chunks of the default
/// 1,200-character chunker), words drawn from a fixed vocabulary by a counter.
fn document(i: usize) -> String {
    let para = |salt: usize| {
        let mut s = String::new();
        let mut x = (i * 2 + salt).wrapping_mul(0x9E37_79B9) | 1;
        while s.len() < 900 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push_str(WORDS[x % WORDS.len()]);
            s.push(' ');
        }
        format!("Document {i} part {salt}: {s}")
    };
    format!("{}\n\n{}", para(0), para(1))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let chunks: usize = args
        .iter()
        .position(|a| a == "--chunks")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(100_000);
    let docs = chunks.div_ceil(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let t = Instant::now();
    for f in 0..docs.div_ceil(PER_FILE) {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(data.join(format!("part-{f:04}.jsonl"))).expect("file"),
        );
        for i in f * PER_FILE..((f + 1) * PER_FILE).min(docs) {
            let line = serde_json::json!({"id": format!("d{i}"), "title": format!("Doc {i}"), "text": document(i)});
            writeln!(out, "{line}").expect("write");
        }
    }
    eprintln!(
        "corpus: {docs} documents in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let store = Arc::new(LocalFileStore::new(dir.path().join("store")));
    let at = dir.path().join("index");
    let (index, kind) = if args.iter().any(|a| a == "--builtin") {
        let index = LocalVectorIndex::open(&at).await.expect("index");
        (index, "rag-core's alone: exact + BM25 in memory")
    } else if args.iter().any(|a| a == "--hnsw") {
        let index = open_local_index(&at, Some(AnnParams::default()))
            .await
            .expect("index");
        (index, "`hnsw`: HNSW + tantivy BM25")
    } else {
        let index = open_local_index(&at, None).await.expect("index");
        (index, "`local`: exact + tantivy BM25")
    };
    let index = Arc::new(index);
    let pipeline = Pipeline::new(store, Layout::new("oss://bench/".parse().expect("uri")))
        .with_index(index.clone())
        .with_options(PipelineOptions {
            index_batch: 2_000,
            ..Default::default()
        });
    let model = HashedEmbedding::new(HashedEmbeddingConfig {
        dims: 64,
        ..Default::default()
    })
    .expect("model");
    println!(
        "| stage | chunks | seconds | heap at the start MiB | RSS at the start MiB | heap peak MiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    let start = reset_peak();
    let t = Instant::now();
    let ingest = pipeline.ingest(&data).await.expect("ingest");
    println!(
        "| 1 ingest ({} files, {} documents) | {chunks} | {:.1} | {} | {} (at the end: {} anonymous + file) |",
        ingest.uploaded,
        ingest.documents,
        t.elapsed().as_secs_f64(),
        cells(start),
        peaks(),
        resident_now()
    );
    let start = reset_peak();
    let t = Instant::now();
    let embedded = pipeline.embed(&model).await.expect("embed");
    println!(
        "| 5 embed ({} shards) | {} | {:.1} | {} | {} (at the end: {} anonymous + file) |",
        embedded.shards_written,
        embedded.chunks,
        t.elapsed().as_secs_f64(),
        cells(start),
        peaks(),
        resident_now()
    );
    if args.iter().any(|a| a == "--no-index") {
        return;
    }
    let start = reset_peak();
    let t = Instant::now();
    let indexed = pipeline.index(&model).await.expect("index");
    index.flush().await.expect("flush");
    println!(
        "| 6 index ({kind}) | {} | {:.1} | {} | {} (at the end: {} anonymous + file) |",
        indexed.count,
        t.elapsed().as_secs_f64(),
        cells(start),
        peaks(),
        resident_now()
    );
    // Queries after the build: vector (exact, or through the graph) and hybrid, as the
    // answer stage asks; a persisted index maps in the vector pages they read.
    let name = PipelineOptions::default().index_name;
    let start = reset_peak();
    let t = Instant::now();
    let queries = 20;
    for q in 0..queries {
        let text = format!(
            "{} {}",
            WORDS[q % WORDS.len()],
            WORDS[(q * 7 + 3) % WORDS.len()]
        );
        let vector = model.embed_query(&text).await.expect("embed");
        let query = if q % 2 == 0 {
            Query::Vector(vector)
        } else {
            Query::Hybrid { vector, text }
        };
        let hits = index
            .search(&name, &SearchRequest::new(query, 10))
            .await
            .expect("search");
        assert_eq!(hits.len(), 10);
    }
    println!(
        "| {queries} queries (vector and hybrid, top 10) | {} | {:.3} per query | {} | {} (at the end: {} anonymous + file) |",
        indexed.count,
        t.elapsed().as_secs_f64() / queries as f64,
        cells(start),
        peaks(),
        resident_now()
    );
    // Stage 6 again with nothing changed, as a rerun of the loop does: every shard read and
    // written again, and the last run's manifest compared with this one's.
    let start = reset_peak();
    let t = Instant::now();
    let again = pipeline.index(&model).await.expect("index again");
    index.flush().await.expect("flush");
    assert_eq!((again.count, again.deleted), (indexed.count, 0));
    println!(
        "| 6 index again, nothing changed | {} | {:.1} | {} | {} (at the end: {} anonymous + file) |",
        again.count,
        t.elapsed().as_secs_f64(),
        cells(start),
        peaks(),
        resident_now()
    );
}
