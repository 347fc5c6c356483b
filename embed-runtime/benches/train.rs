//! Training step time of the Rust trainer side by side with sentence-transformers' `fit`
//! (torch CPU, `MultipleNegativesRankingLoss`): same model, same pairs (the `train` split of
//! `data/manpages` queries → their pages), same batch size, same token limits, same threads.
//!
//! ```text
//! scripts/fetch-model.sh
//! cargo bench -p embed-runtime --bench train -- [--model DIR] [--python PY] [--steps N]
//!     [--batch-size B] [--write]
//! ```
//! `--python` names an interpreter with sentence-transformers installed (default
//! `$RAGLOOP_REF_PYTHON`; without one the torch row is left out). `--write` puts the table
//! into BENCHMARKS.md between `<!-- train-step:begin -->` and `<!-- train-step:end -->`.
//! `--device cuda` (a build with `--features cuda`) trains on the GPU, torch too, and writes
//! between `<!-- train-step-gpu:begin -->` and `<!-- train-step-gpu:end -->`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use embed_runtime::train::pairs::{self, Pair};
use embed_runtime::train::{AdapterTrainer, EmbeddingTrainer, TrainConfig};
use rag_core::eval::EvalQuery;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn gunzip(path: &Path) -> String {
    let mut raw = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut raw)
        .unwrap();
    raw
}

fn train_pairs(root: &Path) -> Vec<Pair> {
    let corpus = gunzip(&root.join("data/manpages/docs/corpus.jsonl.gz"));
    let docs = rag_core::loader::parse_file("corpus.jsonl", "corpus", corpus.as_bytes()).documents;
    let queries: Vec<EvalQuery> = gunzip(&root.join("data/manpages/queries.jsonl.gz"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|q: &EvalQuery| q.split == "train")
        .collect();
    pairs::pairs_from_queries(&queries, &docs, 2_000).0
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The lowest cosine between sentence-transformers' and embed-runtime's embeddings of a few
/// texts with the model in `dir` (asserted ≥ 0.9999).
fn st_cosine(py: &str, root: &Path, dir: &Path) -> f32 {
    let texts = ["duplicate a file descriptor", "mount a filesystem", ""];
    let mut child = Command::new(py)
        .arg(root.join("scripts/bench/st_encode.py"))
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        serde_json::to_string(&texts).unwrap().as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "st_encode.py failed");
    let theirs: Vec<Vec<f32>> = serde_json::from_slice(&out.stdout).unwrap();
    let ours = embed_runtime::SentenceEmbedder::load(dir)
        .unwrap()
        .embed_raw(&texts)
        .unwrap();
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| rag_core::embedding::cosine(a, b))
        .fold(1.0f32, f32::min);
    assert!(
        worst > 0.9999,
        "sentence-transformers embeds {} differently: cosine {worst}",
        dir.display()
    );
    worst
}

fn main() {
    // As the `ragloop` binary does: keep freed pages mapped (mimalloc's purge_delay = -1),
    // or page faults on re-allocated tensors cost a quarter of each step.
    // SAFETY: a process-wide integer option, set before any other thread starts.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(15, -1);
    }
    let args: Vec<String> = std::env::args().collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model =
        arg(&args, "--model").map_or_else(|| root.join("models/all-MiniLM-L6-v2"), PathBuf::from);
    let steps: usize = arg(&args, "--steps").map_or(8, |s| s.parse().unwrap());
    let batch: usize = arg(&args, "--batch-size").map_or(32, |s| s.parse().unwrap());
    let python = arg(&args, "--python").or_else(|| std::env::var("RAGLOOP_REF_PYTHON").ok());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    let device: embed_runtime::DeviceChoice =
        arg(&args, "--device").map_or(embed_runtime::DeviceChoice::Cpu, |d| d.parse().unwrap());
    let pairs = train_pairs(&root);
    let config = TrainConfig {
        batch_size: batch,
        max_steps: Some(steps),
        ..Default::default()
    };
    let mut trainer = EmbeddingTrainer::load_on(&model, &device.resolve().unwrap()).unwrap();
    let report = trainer
        .train(&pairs, &config, &mut |s| {
            eprintln!(
                "rust step {}/{}: loss {:.4}, {:.2}s",
                s.step, s.total, s.loss, s.seconds
            )
        })
        .unwrap();
    let rust = report.mean_step_seconds();
    let on = if device == embed_runtime::DeviceChoice::Cpu {
        String::new()
    } else {
        format!(", {device}")
    };
    let mut rows = vec![(format!("ragloop (candle autograd{on})"), rust)];
    let saved = tempfile::tempdir().unwrap();
    trainer.save(saved.path()).unwrap();
    let mut load_check = String::new();

    if let Some(py) = python {
        // The trained directories (full and adapter) must load in sentence-transformers and
        // embed as we do.
        let worst = st_cosine(&py, &root, saved.path());
        let mut adapter = AdapterTrainer::load(&model).unwrap();
        let adapter_config = TrainConfig {
            epochs: 2,
            ..TrainConfig::adapter()
        };
        adapter.train(&pairs, &adapter_config, &mut |_| {}).unwrap();
        let adapter_dir = tempfile::tempdir().unwrap();
        adapter.save(adapter_dir.path()).unwrap();
        let adapter_worst = st_cosine(&py, &root, adapter_dir.path());
        load_check = format!(
            "\nThe trained directory (after {steps} steps) loads in sentence-transformers; its embeddings \
             match embed-runtime's on the same directory at cosine ≥ {worst:.5}. So does a linear-adapter \
             directory (`2_Dense` module, {} epochs): cosine ≥ {adapter_worst:.5}.\n",
            adapter_config.epochs
        );

        let tmp = std::env::temp_dir().join("ragloop-train-bench-pairs.jsonl");
        let lines: Vec<String> = pairs
            .iter()
            .map(|p| serde_json::to_string(p).unwrap())
            .collect();
        std::fs::write(&tmp, lines.join("\n")).unwrap();
        let out = Command::new(&py)
            .arg(root.join("scripts/bench/st_train.py"))
            .arg(&model)
            .arg(&tmp)
            .args([
                "--steps",
                &steps.to_string(),
                "--batch-size",
                &batch.to_string(),
            ])
            .args(["--max-query-tokens", &config.max_query_tokens.to_string()])
            .args([
                "--max-passage-tokens",
                &config.max_passage_tokens.to_string(),
            ])
            .args(["--threads", &threads.to_string()])
            .args(["--device", if on.is_empty() { "cpu" } else { "cuda" }])
            .output()
            .unwrap();
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "st_train.py failed");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.push((
            format!(
                "sentence-transformers {} (torch {})",
                v["st_version"].as_str().unwrap(),
                v["torch_version"].as_str().unwrap()
            ),
            v["mean_step_seconds"].as_f64().unwrap(),
        ));
    }

    let mut table = format!(
        "all-MiniLM-L6-v2, MultipleNegativesRankingLoss, batch {batch}, queries ≤ {} tokens, passages ≤ {} tokens, \
         {threads} threads, mean of steps 2–{steps} (the train-split query → page pairs of data/manpages):\n\n\
         | trainer | s/step | pairs/s |\n|---|---|---|\n",
        config.max_query_tokens, config.max_passage_tokens
    );
    for (name, s) in &rows {
        table.push_str(&format!("| {name} | {s:.2} | {:.1} |\n", batch as f64 / s));
    }
    if rows.len() == 2 {
        table.push_str(&format!(
            "\nratio (torch s/step ÷ ours): {:.2}×\n",
            rows[1].1 / rows[0].1
        ));
    }
    table.push_str(&load_check);
    print!("{table}");
    if args.iter().any(|a| a == "--write") {
        let path = root.join("BENCHMARKS.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = if on.is_empty() {
            ("<!-- train-step:begin -->", "<!-- train-step:end -->")
        } else {
            (
                "<!-- train-step-gpu:begin -->",
                "<!-- train-step-gpu:end -->",
            )
        };
        let new = match (text.find(begin), text.find(end)) {
            (Some(b), Some(e)) => format!("{}{begin}\n{table}{}", &text[..b], &text[e..]),
            _ => format!("{text}\n{begin}\n{table}{end}\n"),
        };
        std::fs::write(&path, new).unwrap();
    }
}
