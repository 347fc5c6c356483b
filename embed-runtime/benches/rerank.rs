//! Rerank latency: one call scoring 20 (query, passage) pairs of up to 256 tokens with a
//! MiniLM-L6 cross-encoder, embed-runtime's `CrossEncoder` (f32 and int8) beside
//! sentence-transformers' `CrossEncoder` on the same directory, same pairs, same threads;
//! p50 and p90 over the runs.
//!
//! ```text
//! cargo bench -p embed-runtime --bench rerank -- [--model DIR] [--python PY] [--runs 30] [--threads 2] [--write]
//! ```
//! No pretrained cross-encoder can be fetched here, so the directory is made from the
//! bi-encoder's encoder (all-MiniLM-L6-v2) with an untrained head
//! (`CrossEncoderTrainer::load` + `save`): the same architecture and size as
//! cross-encoder/ms-marco-MiniLM-L6-v2, so the latency is that model's; the scores mean
//! nothing but must agree between the engines. `--python` names an interpreter with
//! sentence-transformers (else its row is left out); `--write` replaces the rerank section of
//! BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use embed_runtime::train::CrossEncoderTrainer;
use embed_runtime::{CrossEncoder, CrossEncoderOptions, Quantization};

const PAIRS: usize = 20;
const MAX_TOKENS: usize = 256;

fn passages(path: &Path) -> Vec<String> {
    let mut raw = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut raw)
        .unwrap();
    raw.lines()
        .take(PAIRS)
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

fn percentile(times: &mut [f64], p: f64) -> f64 {
    times.sort_by(f64::total_cmp);
    times[((times.len() - 1) as f64 * p).round() as usize] * 1e3
}

struct Row {
    engine: String,
    p50: f64,
    p90: f64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let model = arg("--model").map_or(root.join("models/all-MiniLM-L6-v2"), PathBuf::from);
    let python = arg("--python");
    let runs: usize = arg("--runs").map_or(30, |v| v.parse().unwrap());
    let threads: usize = arg("--threads").map_or(2, |v| v.parse().unwrap());

    let dir = root.join("target/rerank-bench");
    let ce = dir.join("minilm-l6-cross-encoder");
    CrossEncoderTrainer::load(&model, 42)
        .unwrap()
        .save(&ce, MAX_TOKENS)
        .unwrap();
    let query = "How do I duplicate a file descriptor?";
    let docs = passages(&root.join("data/manpages/docs/corpus.jsonl.gz"));
    let pairs: Vec<(&str, &str)> = docs.iter().map(|d| (query, d.as_str())).collect();
    let pairs_path = dir.join("pairs.json");
    std::fs::write(&pairs_path, serde_json::to_vec(&pairs).unwrap()).unwrap();

    let mut rows = Vec::new();
    let mut ours = Vec::new();
    for quantize in [Quantization::None, Quantization::Int8] {
        let options = CrossEncoderOptions {
            threads: Some(threads),
            quantize,
            ..Default::default()
        };
        let m = CrossEncoder::load_with(&ce, options).unwrap();
        let tokens: usize = pairs
            .iter()
            .map(|(q, d)| m.count_tokens(q, d).unwrap())
            .sum();
        for _ in 0..2 {
            m.predict(&pairs).unwrap();
        }
        let mut times = Vec::with_capacity(runs);
        let mut scores = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            scores = m.predict(&pairs).unwrap();
            times.push(t.elapsed().as_secs_f64());
        }
        let row = Row {
            engine: format!("embed-runtime CrossEncoder ({quantize})"),
            p50: percentile(&mut times, 0.5),
            p90: percentile(&mut times, 0.9),
        };
        eprintln!(
            "{}: p50 {:.1} ms, p90 {:.1} ms ({tokens} tokens)",
            row.engine, row.p50, row.p90
        );
        rows.push(row);
        ours.push(scores);
    }
    let mut agreement = String::new();
    if let Some(py) = &python {
        let out = Command::new(py)
            .arg(root.join("scripts/bench/st_rerank.py"))
            .arg(&ce)
            .arg(&pairs_path)
            .arg(runs.to_string())
            .arg(threads.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
        let mut times: Vec<f64> = v["times"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        let theirs: Vec<f64> = v["scores"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        let diff = ours[0]
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (f64::from(*a) - b).abs())
            .fold(0.0, f64::max);
        agreement = format!(
            "Scores: embed-runtime f32 vs sentence-transformers, max |difference| {diff:.1e}.\n"
        );
        let row = Row {
            engine: format!(
                "sentence-transformers {} CrossEncoder (torch {})",
                v["version"].as_str().unwrap(),
                v["torch"].as_str().unwrap()
            ),
            p50: percentile(&mut times, 0.5),
            p90: percentile(&mut times, 0.9),
        };
        eprintln!(
            "{}: p50 {:.1} ms, p90 {:.1} ms",
            row.engine, row.p50, row.p90
        );
        rows.push(row);
    }
    let mut table = format!(
        "{PAIRS} (query, man page) pairs of ≤ {MAX_TOKENS} tokens, MiniLM-L6 cross-encoder (H 384, 6 layers), one call per run, {runs} runs, {threads} threads:\n\n| engine | p50 ms | p90 ms |\n|---|---:|---:|\n"
    );
    for r in &rows {
        table.push_str(&format!("| {} | {:.1} | {:.1} |\n", r.engine, r.p50, r.p90));
    }
    table.push('\n');
    table.push_str(&agreement);
    print!("{table}");
    if args.iter().any(|a| a == "--write") {
        let path = root.join("BENCHMARKS.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- rerank:begin -->", "<!-- rerank:end -->");
        let (Some(b), Some(e)) = (text.find(begin), text.find(end)) else {
            panic!("BENCHMARKS.md has no {begin} … {end} section");
        };
        let new = format!("{}{begin}\n{table}{}", &text[..b], &text[e..]);
        std::fs::write(&path, new).unwrap();
    }
}
