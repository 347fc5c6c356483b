//! Embedding throughput of embed-runtime side by side with sentence-transformers (torch CPU):
//! same model, same texts (the man pages of `data/manpages`, `title + "\n" + text`, truncated to
//! the model's max_seq_length), same threads.
//!
//! ```text
//! scripts/fetch-model.sh                       # models/all-MiniLM-L6-v2
//! cargo bench -p embed-runtime --bench embed -- [--model DIR] [--python PY] [--threads N] [--limit N] [--write]
//! ```
//! Each engine runs in its own process (so each peak RSS is its own): embed-runtime f32 and
//! int8 (this binary again, `--engine f32|int8`), then, with `--python` (an interpreter with
//! sentence-transformers, onnx and onnxruntime; default `$RAGLOOP_REF_PYTHON`, else those rows
//! are left out), sentence-transformers (`scripts/bench/st_embed.py`) and ONNX Runtime fp32 and
//! dynamic int8 (`scripts/bench/ort_embed.py`, which exports the model with `torch.onnx`).
//! The last column compares every engine's vectors with embed-runtime f32's. With `--write`
//! the table replaces this CPU kind's section of BENCHMARKS.md (AVX-512 or AVX2, Intel or AMD).
//!
//! `--device cuda` (a build with `--features cuda`): embed-runtime f32 on the GPU against
//! sentence-transformers on the same GPU (`--write` fills the GPU section); no int8 or ONNX
//! Runtime rows (int8 is a CPU path).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use embed_runtime::int8::Kernel;
use embed_runtime::{DeviceChoice, EmbedderOptions, Quantization, SentenceEmbedder};

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

struct Args {
    root: PathBuf,
    model: PathBuf,
    data: PathBuf,
    threads: usize,
    limit: Option<usize>,
    device: DeviceChoice,
}

/// Child mode: embeds the corpus with embed-runtime, writes the vectors to `vectors_out` and
/// prints one JSON line like the Python scripts do.
fn child(args: &Args, quantize: Quantization, vectors_out: &Path) {
    let mut texts = corpus(&args.data);
    if let Some(n) = args.limit {
        texts.truncate(n);
    }
    let embedder = SentenceEmbedder::load_with(
        &args.model,
        EmbedderOptions {
            threads: Some(args.threads),
            quantize,
            device: args.device,
            ..Default::default()
        },
    )
    .expect("load the model (scripts/fetch-model.sh)");
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let vectors = embedder.embed_raw(&refs).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), texts.len());
    let bytes: Vec<u8> = vectors
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(vectors_out, bytes).unwrap();
    let mut lat = Vec::new();
    for q in QUERIES.iter().cycle().take(60) {
        let t = Instant::now();
        embedder.embed_raw(&[q]).unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let engine = match quantize {
        Quantization::None if args.device != DeviceChoice::Cpu => {
            format!("embed-runtime f32 ({})", args.device)
        }
        Quantization::None => "embed-runtime f32".to_string(),
        Quantization::Int8 => format!("embed-runtime int8 ({:?})", Kernel::detect().unwrap()),
    };
    println!(
        "{}",
        serde_json::json!({
            "engine": engine, "texts": texts.len(), "seconds": seconds,
            "p50_ms": p50(lat), "rss_mib": peak_rss_mib(),
        })
    );
}

const QUERIES: [&str; 3] = [
    "how do I duplicate a file descriptor",
    "list open files",
    "change file permissions",
];

/// Runs one engine's process and reads its JSON line (and its vectors, when it wrote them).
fn run(mut cmd: Command, vectors: Option<&Path>, threads: usize) -> (Row, Option<Vec<f32>>) {
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
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
    let row = Row {
        engine: v["engine"].as_str().unwrap().to_string(),
        texts: v["texts"].as_u64().unwrap() as usize,
        seconds: v["seconds"].as_f64().unwrap(),
        p50_ms: v["p50_ms"].as_f64().unwrap(),
        rss_mib: v["rss_mib"].as_f64().unwrap(),
    };
    let vectors = vectors.map(|p| {
        std::fs::read(p)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    });
    (row, vectors)
}

/// (min, mean) cosine between corresponding rows.
fn cosines(a: &[f32], b: &[f32], dims: usize) -> (f64, f64) {
    let mut min = f64::INFINITY;
    let mut sum = 0.0;
    let rows = a.len() / dims;
    for (x, y) in a.chunks_exact(dims).zip(b.chunks_exact(dims)) {
        let dot: f64 = x.iter().zip(y).map(|(p, q)| f64::from(p * q)).sum();
        let nx: f64 = x.iter().map(|p| f64::from(p * p)).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|p| f64::from(p * p)).sum::<f64>().sqrt();
        let c = dot / (nx * ny).max(1e-12);
        min = min.min(c);
        sum += c;
    }
    (min, sum / rows.max(1) as f64)
}

/// The CPU's model name and the flags that decide the kernels, and its section of
/// BENCHMARKS.md: the vector width and the vendor (`avx512-amd`), since the same kernels
/// compare differently with torch's on Intel and AMD cores.
fn cpu() -> (String, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let width = if has("avx512f") { "avx512" } else { "avx2" };
    let vendor = match info.lines().find_map(|l| l.strip_prefix("vendor_id")) {
        Some(v) if v.contains("AuthenticAMD") => "amd",
        Some(v) if v.contains("GenuineIntel") => "intel",
        _ => "other",
    };
    let kind = format!("{width}-{vendor}");
    let listed: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512bw",
        "avx512_vnni",
        "avx_vnni",
    ]
    .into_iter()
    .filter(|f| has(f))
    .collect();
    (format!("{name} ({})", listed.join(" ")), kind)
}

/// The GPU's name (nvidia-smi) and its section of BENCHMARKS.md.
fn gpu_name() -> (String, String) {
    let name = Command::new("nvidia-smi")
        .args(["--query-gpu=name,driver_version", "--format=csv,noheader"])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown GPU".into());
    (format!("GPU: {name} (name, driver)"), "gpu".into())
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .map(|i| argv[i + 1].clone())
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let args = Args {
        model: flag("--model").map_or(root.join("models/all-MiniLM-L6-v2"), PathBuf::from),
        data: flag("--data").map_or(
            root.join("data/manpages/docs/corpus.jsonl.gz"),
            PathBuf::from,
        ),
        threads: flag("--threads").map_or(2, |t| t.parse().unwrap()),
        limit: flag("--limit").map(|t| t.parse().unwrap()),
        device: flag("--device").map_or(DeviceChoice::Cpu, |d| d.parse().unwrap()),
        root,
    };
    let gpu = args.device != DeviceChoice::Cpu;
    if let Some(engine) = flag("--engine") {
        let quantize: Quantization = engine.parse().unwrap();
        child(&args, quantize, Path::new(&flag("--vectors").unwrap()));
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let limit = args.limit.map(|n| n.to_string());
    let mut rows: Vec<(Row, Option<Vec<f32>>)> = Vec::new();
    let engines: &[&str] = if gpu { &["f32"] } else { &["f32", "int8"] };
    for engine in engines {
        let vectors = work.path().join(format!("{engine}.f32"));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--engine", engine, "--vectors"])
            .arg(&vectors)
            .arg("--model")
            .arg(&args.model)
            .arg("--data")
            .arg(&args.data)
            .args(["--threads", &args.threads.to_string()])
            .args(["--device", &args.device.to_string()]);
        if let Some(n) = &limit {
            cmd.args(["--limit", n]);
        }
        rows.push(run(cmd, Some(&vectors), args.threads));
    }
    let python = flag("--python").or_else(|| std::env::var("RAGLOOP_REF_PYTHON").ok());
    match python {
        Some(py) => {
            let mut cmd = Command::new(&py);
            cmd.arg(args.root.join("scripts/bench/st_embed.py"))
                .arg(&args.model)
                .arg(&args.data)
                .arg(args.threads.to_string());
            cmd.args(&limit);
            if gpu {
                cmd.args(["--device", "cuda"]);
            }
            rows.push(run(cmd, None, args.threads));
            let onnx = args.root.join("target/bench-onnx");
            let precisions: &[&str] = if gpu { &[] } else { &["fp32", "int8"] };
            for precision in precisions {
                let vectors = work.path().join(format!("ort-{precision}.f32"));
                let mut cmd = Command::new(&py);
                cmd.arg(args.root.join("scripts/bench/ort_embed.py"))
                    .arg(&args.model)
                    .arg(&args.data)
                    .arg(args.threads.to_string())
                    .arg(precision)
                    .arg(&onnx)
                    .arg(&vectors);
                cmd.args(&limit);
                rows.push(run(cmd, Some(&vectors), args.threads));
            }
        }
        None => eprintln!(
            "no --python / RAGLOOP_REF_PYTHON: the sentence-transformers and ONNX Runtime rows are left out"
        ),
    }
    let reference = rows[0].1.clone().unwrap();
    let dims = reference.len() / rows[0].0.texts;
    let st_rate = rows
        .iter()
        .find(|(r, _)| r.engine.starts_with("sentence-transformers"))
        .map(|(r, _)| r.texts as f64 / r.seconds);
    let (cpu, kind) = if gpu { gpu_name() } else { cpu() };
    let mut table = String::from(
        "| engine | texts | seconds | texts/s | × sentence-transformers | p50 latency, 1 query (ms) | peak RSS (MiB) | cosine to embed-runtime f32, min / mean |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (i, (r, vectors)) in rows.iter().enumerate() {
        let rate = r.texts as f64 / r.seconds;
        let speedup = st_rate.map_or("–".into(), |st| format!("{:.2}×", rate / st));
        let cosine = match vectors {
            Some(v) if i > 0 && v.len() == reference.len() => {
                let (min, mean) = cosines(v, &reference, dims);
                format!("{min:.4} / {mean:.4}")
            }
            _ => "–".into(),
        };
        table += &format!(
            "| {} | {} | {:.1} | {:.1} | {speedup} | {:.2} | {:.0} | {cosine} |\n",
            r.engine, r.texts, r.seconds, rate, r.p50_ms, r.rss_mib
        );
    }
    table += &format!(
        "\n{cpu}, {} threads per engine, `cargo bench -p embed-runtime --bench embed`.\n",
        args.threads
    );
    print!("{table}");
    if argv.iter().any(|a| a == "--write") {
        let path = args.root.join("BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let begin = format!("<!-- embed-runtime:{kind}:begin -->");
        let end = format!("<!-- embed-runtime:{kind}:end -->");
        let (a, b) = (
            doc.find(&begin).expect("begin marker"),
            doc.find(&end).expect("end marker"),
        );
        std::fs::write(&path, format!("{}{begin}\n{table}{}", &doc[..a], &doc[b..])).unwrap();
    }
}
