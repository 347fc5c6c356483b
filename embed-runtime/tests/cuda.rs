//! On a CUDA GPU (built with `--features cuda`, a GPU visible; `scripts/gpu/verify.sh` runs
//! these on a GPU machine): the embedder's vectors equal sentence-transformers' fixture as on
//! the CPU, every model family's GPU vectors equal its CPU ones, and full fine-tuning on the
//! GPU takes the CPU's steps (same batches, dropout masks and losses within f32 tolerance).
//! Without a GPU these fail, saying so: they are not run by CI, which type-checks them.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, missing_docs)]

mod support;
use support::model_dir;

use std::path::{Path, PathBuf};

use embed_runtime::train::pairs::{Pair, PairOrigin};
use embed_runtime::train::{EmbeddingTrainer, TrainConfig};
use embed_runtime::{DeviceChoice, EmbedderOptions, SentenceEmbedder};
use serde::Deserialize;

fn gpu() -> candle_core::Device {
    DeviceChoice::Cuda(0)
        .resolve()
        .expect("these tests need a CUDA GPU (nvidia-smi must list one)")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn on(dir: &Path, device: DeviceChoice) -> SentenceEmbedder {
    SentenceEmbedder::load_with(
        dir,
        EmbedderOptions {
            device,
            ..Default::default()
        },
    )
    .unwrap()
}

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    vector: Vec<f32>,
}

#[test]
fn vectors_on_the_gpu_match_sentence_transformers() {
    gpu();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/all-MiniLM-L6-v2.json"
    );
    let fx: Fixture = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let model = on(&model_dir(), DeviceChoice::Cuda(0));
    assert!(format!("{model:?}").contains("cuda:0"), "{model:?}");
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    let got = model.embed_raw(&texts).unwrap();
    for (case, got) in fx.cases.iter().zip(&got) {
        let d = max_diff(got, &case.vector);
        assert!(d < 1e-4, "max |Δ| {d} for {:?}", case.text);
    }
}

#[test]
fn every_family_embeds_on_the_gpu_as_on_the_cpu() {
    gpu();
    let texts = [
        "short",
        "",
        "a somewhat longer sentence about file descriptors and pipes",
        "数据库 索引",
    ];
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for dir in [
        model_dir(),
        fixtures.join("tiny-xlmr"),
        fixtures.join("tiny-gte-new"),
    ] {
        let cpu = on(&dir, DeviceChoice::Cpu).embed_raw(&texts).unwrap();
        let gpu = on(&dir, DeviceChoice::Cuda(0)).embed_raw(&texts).unwrap();
        for (i, (a, b)) in cpu.iter().zip(&gpu).enumerate() {
            let d = max_diff(a, b);
            assert!(d < 1e-4, "{} text {i}: max |Δ| {d}", dir.display());
        }
    }
}

#[test]
fn a_fine_tune_on_the_gpu_takes_the_cpus_steps() {
    let device = gpu();
    let pairs: Vec<Pair> = [
        (
            "zq1 alpha",
            "pidfd_getfd obtains a duplicate of another process's file descriptor",
        ),
        (
            "zq2 bravo",
            "mount attaches the filesystem found on a device to the directory tree",
        ),
        (
            "zq3 charlie",
            "iconv converts text from one character encoding to another",
        ),
        (
            "zq4 delta",
            "getent displays entries from databases supported by name service switch",
        ),
        (
            "zq5 echo",
            "crontab maintains the tables that drive the cron daemon",
        ),
        (
            "zq6 foxtrot",
            "tar stores and extracts files from a tape or disk archive",
        ),
        (
            "zq7 golf",
            "kill sends a signal to a process, by default the terminate signal",
        ),
        (
            "zq8 hotel",
            "chmod changes the file mode bits of each given file",
        ),
    ]
    .iter()
    .enumerate()
    .map(|(i, (q, p))| Pair {
        query: (*q).into(),
        passage: (*p).into(),
        doc_id: format!("doc{i}"),
        origin: PairOrigin::Supplied,
    })
    .collect();
    let config = TrainConfig {
        epochs: 2,
        batch_size: 4,
        learning_rate: 5e-5,
        dropout: Some(0.1),
        ..TrainConfig::default()
    };
    let out = tempfile::tempdir().unwrap();
    let run = |trainer: &mut EmbeddingTrainer, name: &str| {
        let report = trainer.train(&pairs, &config, &mut |_| {}).unwrap();
        trainer.save(&out.path().join(name)).unwrap();
        report
    };
    let cpu = run(&mut EmbeddingTrainer::load(&model_dir()).unwrap(), "cpu");
    let gpu = run(
        &mut EmbeddingTrainer::load_on(&model_dir(), &device).unwrap(),
        "gpu",
    );
    assert_eq!(cpu.steps.len(), gpu.steps.len());
    for (a, b) in cpu.steps.iter().zip(&gpu.steps) {
        assert!(
            (a.loss - b.loss).abs() < 1e-3 * a.loss.abs().max(1.0),
            "step {}: loss {} on the CPU, {} on the GPU",
            a.step,
            a.loss,
            b.loss
        );
    }
    let texts = ["zq1 alpha", "tar stores and extracts files"];
    let a = on(&out.path().join("cpu"), DeviceChoice::Cpu)
        .embed_raw(&texts)
        .unwrap();
    let b = on(&out.path().join("gpu"), DeviceChoice::Cpu)
        .embed_raw(&texts)
        .unwrap();
    for (a, b) in a.iter().zip(&b) {
        let d = max_diff(a, b);
        assert!(d < 1e-3, "the trained models differ by {d}");
    }
}
