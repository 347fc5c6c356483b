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
    let mut rows = vec![Row {
        engine: "embed-runtime".into(),
        texts: texts.len(),
        seconds,
        p50_ms: p50(lat),
        rss_mib: peak_rss_mib(),
    }];
    let python = flag("--python").or_else(|| std::env::var("RAGLOOP_REF_PYTHON").ok());
    match python {
        Some(py) => {
            let script = root.join("scripts/bench/st_embed.py");
            let mut cmd = Command::new(py);
            cmd.arg(script)
                .arg(&model)
                .arg(&data)
                .arg(threads.to_string());
            if let Some(n) = limit {
                cmd.arg(n.to_string());
            }
            let out = cmd
                .env("OMP_NUM_THREADS", threads.to_string())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value =
                serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
            rows.push(Row {
                engine: v["engine"].as_str().unwrap().to_string(),
                texts: v["texts"].as_u64().unwrap() as usize,
                seconds: v["seconds"].as_f64().unwrap(),
                p50_ms: v["p50_ms"].as_f64().unwrap(),
                rss_mib: v["rss_mib"].as_f64().unwrap(),
            });
        }
        None => {
            eprintln!("no --python / RAGLOOP_REF_PYTHON: the sentence-transformers row is left out")
        }
    }
    let base = rows[0].texts as f64 / rows[0].seconds;
    let mut table = String::from(
        "| engine | texts | seconds | texts/s | embed-runtime speed-up | p50 latency, 1 query (ms) | peak RSS (MiB) |\n|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let rate = r.texts as f64 / r.seconds;
        table += &format!(
            "| {} | {} | {:.1} | {:.1} | {:.2}× | {:.2} | {:.0} |\n",
            r.engine,
            r.texts,
            r.seconds,
            rate,
            base / rate,
            r.p50_ms,
            r.rss_mib
        );
    }
    print!("{table}");
    if args.iter().any(|a| a == "--write") {
        let path = root.join("BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- embed-runtime:begin -->", "<!-- embed-runtime:end -->");
        let (a, b) = (
            doc.find(begin).expect("begin marker"),
            doc.find(end).expect("end marker"),
        );
        std::fs::write(&path, format!("{}{begin}\n{table}{}", &doc[..a], &doc[b..])).unwrap();
    }
}
