//! ANN search: the embedded index's HNSW graph side by side with hnswlib (PyPI) on
//! the same 100k × 384 vectors, same M / ef_construction, same queries; recall@10 against
//! exact search and single-thread QPS for a sweep of `ef`.
//!
//! ```text
//! cargo bench -p vector-store --bench ann -- [--python PY] [--n 100000] [--threads 2]
//!     [--real DIR [--sigma 0.5]] [--write]
//! ```
//! Data: unit vectors drawn around 1,000 random centres (a clustered set, like embeddings of
//! a corpus), 1,000 held-out queries from the same centres; ground truth by brute force.
//! With `--real DIR` (a directory of the loop's vector shards, e.g. a `ragloop run` store's
//! `vector-indexes/all-MiniLM-L6-v2-…/`), points have the structure of real embeddings
//! instead: each is a real chunk vector moved along the difference of two other real chunk
//! vectors (`x_c + σ·(x_a − x_b)`, renormalised), so the displacements have the corpus's own
//! covariance — its few effective dimensions — at any `n`. `--write` leaves the section alone
//! with `--real` (that table is recorded by hand).
//! `--python` names an interpreter with hnswlib and numpy (default `$RAGLOOP_ANN_PYTHON`,
//! else the hnswlib rows are left out). `--write` replaces the ANN section of BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use rag_core::local::LocalVectorIndex;
use rag_core::local::ann::AnnFactory;
use rag_core::{IndexRecord, IndexSchema, Metadata, Metric, Query, SearchRequest, VectorIndex};
use vector_store::{AnnParams, HnswGraphs};

const DIMS: usize = 384;
const QUERIES: usize = 1_000;
/// Spread of points around their centre, relative to the spread of centres.
const NOISE: f32 = 2.0;
const M: usize = 16;
const EF_CONSTRUCTION: usize = 128;
const EFS: [usize; 7] = [16, 32, 64, 128, 256, 512, 768];
/// `--real`: how far a point moves along the difference of two real vectors (`--sigma`).
const REAL_SIGMA: f32 = 0.5;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Sum of three uniforms: roughly normal.
        let u = |x: u64| (x >> 40) as f32 / (1u64 << 24) as f32;
        u(self.0) + u(self.0.rotate_left(21)) + u(self.0.rotate_left(42)) - 1.5
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn data(n: usize, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = Rng(seed);
    let centres: Vec<Vec<f32>> = (0..1_000)
        .map(|_| (0..DIMS).map(|_| rng.next()).collect())
        .collect();
    let mut point = |i: usize| {
        let c = &centres[(i * 7919) % centres.len()];
        let mut v: Vec<f32> = c.iter().map(|x| x + NOISE * rng.next()).collect();
        normalise(&mut v);
        v
    };
    let base = (0..n).map(&mut point).collect();
    let queries = (0..QUERIES).map(|i| point(i + 13)).collect();
    (base, queries)
}

/// The unit vectors of every Parquet shard under `dir` (the loop's stage-5 output).
fn real_vectors(dir: &str) -> Vec<Vec<f32>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("--real {dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in &paths {
        let bytes = bytes::Bytes::from(std::fs::read(p).unwrap());
        let (meta, rows) = rag_core::vectors::read_shard(bytes).unwrap();
        assert_eq!(meta.dims, DIMS, "{}: the bench is {DIMS}-d", p.display());
        out.extend(rows.into_iter().map(|r| {
            let mut v = r.vector;
            normalise(&mut v);
            v
        }));
    }
    assert!(out.len() >= 3, "--real {dir}: no vector shards");
    out
}

/// `n` points and the queries with real embeddings' structure (see the module docs).
fn real_data(
    seeds: &[Vec<f32>],
    n: usize,
    sigma: f32,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut state = seed;
    let mut pick = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % seeds.len()
    };
    let mut point = || {
        let (c, a, b) = (&seeds[pick()], &seeds[pick()], &seeds[pick()]);
        let mut v: Vec<f32> = (0..DIMS).map(|i| c[i] + sigma * (a[i] - b[i])).collect();
        normalise(&mut v);
        v
    };
    let base = (0..n).map(|_| point()).collect();
    let queries = (0..QUERIES).map(|_| point()).collect();
    (base, queries)
}

fn truth(base: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u32>> {
    let chunk = queries.len().div_ceil(2);
    std::thread::scope(|s| {
        let parts: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| {
                            let mut scored: Vec<(f32, u32)> = base
                                .iter()
                                .enumerate()
                                .map(|(i, b)| (q.iter().zip(b).map(|(x, y)| x * y).sum(), i as u32))
                                .collect();
                            scored.select_nth_unstable_by(10, |a, b| b.0.total_cmp(&a.0));
                            scored[..10].iter().map(|x| x.1).collect()
                        })
                        .collect::<Vec<Vec<u32>>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().unwrap()).collect()
    })
}

fn write_f32(path: &PathBuf, rows: &[Vec<f32>]) {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).unwrap();
}

struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
}

/// This process's resident memory in MB (Linux; 0 elsewhere).
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn first_at(points: &[Point], recall: f64) -> Option<&Point> {
    points.iter().find(|p| p.recall >= recall)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = arg("--n").map_or(100_000, |v| v.parse().unwrap());
    let python = arg("--python").or_else(|| std::env::var("RAGLOOP_ANN_PYTHON").ok());
    let threads: usize = arg("--threads").map_or(2, |v| v.parse().unwrap());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = root.join("target/ann-bench");
    std::fs::create_dir_all(&dir).unwrap();

    let real = arg("--real");
    eprintln!("generating {n} × {DIMS} vectors and exact top-10 of {QUERIES} queries …");
    let (base, queries) = match &real {
        Some(dir) => {
            let seeds = real_vectors(dir);
            eprintln!("{} real vectors from {dir}", seeds.len());
            let sigma = arg("--sigma").map_or(REAL_SIGMA, |v| v.parse().unwrap());
            real_data(&seeds, n, sigma, 42)
        }
        None => data(n, 42),
    };
    let truth = truth(&base, &queries);
    write_f32(&dir.join("base.f32"), &base);
    write_f32(&dir.join("queries.f32"), &queries);
    let tb: Vec<u8> = truth
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(dir.join("truth.u32"), tb).unwrap();

    // ragloop HNSW through the embedded index's graph factory.
    let params = AnnParams {
        connectivity: M,
        expansion_add: EF_CONSTRUCTION,
        exact_below: 0,
        threads,
    };
    let schema = IndexSchema::new("bench", DIMS, Metric::Cosine);
    let graph = HnswGraphs::new(params).create(&schema).unwrap();
    let items: Vec<(u64, &[f32])> = base
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u64, v.as_slice()))
        .collect();
    let rss_before = rss_mb();
    let t = Instant::now();
    graph.add_batch(&items).unwrap();
    let build_own = t.elapsed().as_secs_f64();
    let graph_mb = rss_mb() - rss_before;
    eprintln!("own build {build_own:.1} s, the graph adds {graph_mb:.0} MB of RSS");
    let mut own = Vec::new();
    for ef in EFS {
        let t = Instant::now();
        let mut hits = 0;
        for (q, tr) in queries.iter().zip(&truth) {
            let found = graph.search(q, 10, ef, None).unwrap();
            hits += found
                .iter()
                .filter(|(k, _)| tr.contains(&(*k as u32)))
                .count();
        }
        let secs = t.elapsed().as_secs_f64();
        let p = Point {
            ef,
            recall: hits as f64 / (10 * QUERIES) as f64,
            qps: QUERIES as f64 / secs,
        };
        eprintln!("own ef {ef}: recall {:.3} qps {:.0}", p.recall, p.qps);
        own.push(p);
    }
    drop(graph);

    // The same graph behind the VectorIndex trait (hits carry id, text and metadata).
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let index_qps = rt.block_on(async {
        let index = LocalVectorIndex::in_memory_with_ann(Arc::new(HnswGraphs::new(params)));
        index.create_index(&schema).await.unwrap();
        let records: Vec<IndexRecord> = base
            .iter()
            .enumerate()
            .map(|(i, v)| IndexRecord {
                id: format!("c{i}"),
                vector: v.clone(),
                text: format!("chunk {i}"),
                metadata: Metadata::new(),
            })
            .collect();
        for batch in records.chunks(10_000) {
            index.upsert("bench", batch.to_vec()).await.unwrap();
        }
        let ef = first_at(&own, 0.95).map_or(128, |p| p.ef);
        let t = Instant::now();
        for q in &queries {
            let mut req = SearchRequest::new(Query::Vector(q.clone()), 10);
            req.num_candidates = ef;
            index.search("bench", &req).await.unwrap();
        }
        (ef, QUERIES as f64 / t.elapsed().as_secs_f64())
    });
    eprintln!(
        "VectorIndex::search at ef {}: {:.0} qps",
        index_qps.0, index_qps.1
    );

    let mut hnswlib = Vec::new();
    let mut build_hnswlib = f64::NAN;
    if let Some(py) = &python {
        let efs: Vec<String> = EFS.iter().map(|e| e.to_string()).collect();
        let out = Command::new(py)
            .arg(root.join("scripts/bench/hnswlib_ann.py"))
            .args([
                dir.to_str().unwrap(),
                &n.to_string(),
                &QUERIES.to_string(),
                &DIMS.to_string(),
                &M.to_string(),
                &EF_CONSTRUCTION.to_string(),
                &threads.to_string(),
                &efs.join(","),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(b) = v["build_s"].as_f64() {
                build_hnswlib = b;
            } else {
                let p = Point {
                    ef: v["ef"].as_u64().unwrap() as usize,
                    recall: v["recall"].as_f64().unwrap(),
                    qps: v["qps"].as_f64().unwrap(),
                };
                eprintln!(
                    "hnswlib ef {}: recall {:.3} qps {:.0}",
                    p.ef, p.recall, p.qps
                );
                hnswlib.push(p);
            }
        }
    }

    let kind = if real.is_some() {
        "unit vectors with real embeddings' structure (`--real`)"
    } else {
        "clustered unit vectors"
    };
    let mut table = format!(
        "{n} × {DIMS} {kind}, {QUERIES} queries, cosine, M = {M}, \
         ef_construction = {EF_CONSTRUCTION}, build: both on {threads} threads; queries on 1 thread.\n\n\
         | ef | ragloop HNSW recall@10 | ragloop HNSW QPS | hnswlib recall@10 | hnswlib QPS |\n\
         |---:|---:|---:|---:|---:|\n"
    );
    for (i, p) in own.iter().enumerate() {
        let h = hnswlib.get(i);
        table += &format!(
            "| {} | {:.3} | {:.0} | {} | {} |\n",
            p.ef,
            p.recall,
            p.qps,
            h.map_or("–".into(), |h| format!("{:.3}", h.recall)),
            h.map_or("–".into(), |h| format!("{:.0}", h.qps))
        );
    }
    table += &format!(
        "\nBuild: ragloop HNSW {build_own:.1} s (the graph: {graph_mb:.0} MB of RSS), hnswlib {build_hnswlib:.1} s.\n"
    );
    if let (Some(u), Some(h)) = (first_at(&own, 0.95), first_at(&hnswlib, 0.95)) {
        table += &format!(
            "At recall@10 ≥ 0.95: ragloop HNSW {:.0} QPS (ef {}, recall {:.3}) vs hnswlib {:.0} QPS \
             (ef {}, recall {:.3}) = **{:.2}×**.\n",
            u.qps,
            u.ef,
            u.recall,
            h.qps,
            h.ef,
            h.recall,
            u.qps / h.qps
        );
    }
    table += &format!(
        "Through `VectorIndex::search` (the embedded index; hits with id, text, metadata) at ef {}: \
         {:.0} QPS.\n",
        index_qps.0, index_qps.1
    );
    println!("{table}");
    if args.iter().any(|a| a == "--write") && real.is_none() {
        let path = root.join("BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- ann:begin -->", "<!-- ann:end -->");
        let a = doc.find(begin).expect("ann:begin marker");
        let b = doc.find(end).expect("ann:end marker");
        std::fs::write(&path, format!("{}{begin}\n{table}{}", &doc[..a], &doc[b..])).unwrap();
    }
}
