//! Checks a model directory made by a reference script (`tests/fixtures/*/expected.json`:
//! the texts, their token ids and the reference library's embeddings) against
//! `SentenceEmbedder`. Included by `#[path]` from the model-family tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use embed_runtime::train::pairs::{Negative, Pair, PairOrigin};
use embed_runtime::train::{CrossEncoderTrainer, CrossTrainConfig, EmbeddingTrainer, TrainConfig};
use embed_runtime::{CrossEncoder, EmbedderOptions, SentenceEmbedder};
use rag_core::EmbeddingModel;
use serde_json::Value;

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `dir/expected.json`.
pub fn expected(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

/// The largest absolute difference of two equally long vectors.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A JSON array of numbers as f32s.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The model in `dir` embeds each text of its `expected.json` as the reference did (max |Δ| ≤
/// `tolerance`), with as many tokens, in a packed batch and one text at a time; returns it.
pub fn check_embeddings(dir: &Path, tolerance: f32) -> SentenceEmbedder {
    let expected = expected(dir);
    let model = SentenceEmbedder::load_with(
        dir,
        EmbedderOptions {
            threads: Some(2),
            // Small batches: packed batches of several sequences and lone ones both run.
            max_batch_tokens: 64,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        model.max_input_tokens() as u64,
        expected["max_seq_length"].as_u64().unwrap()
    );
    let cases = expected["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let got = model.embed_raw(&texts).unwrap();
    for (i, case) in cases.iter().enumerate() {
        let ids = case["ids"].as_array().unwrap().len();
        assert_eq!(model.count_tokens(texts[i]).unwrap(), ids, "{:?}", texts[i]);
        let d = max_diff(&got[i], &floats(&case["embedding"]));
        assert!(d <= tolerance, "case {i} ({:?}): max |Δ| {d}", texts[i]);
        let one = model.embed_raw(&[texts[i]]).unwrap();
        assert!(max_diff(&one[0], &got[i]) <= 1e-5, "case {i} alone");
    }
    model
}

/// Pairs whose queries share no tokens with their passages.
pub fn pairs() -> Vec<Pair> {
    let raw = [
        ("zq1 alpha", "pidfd_getfd 获取另一个进程的文件描述符的副本"),
        (
            "zq2 bravo",
            "mount attaches the filesystem found on a device",
        ),
        ("zq3 charlie", "iconv 将文本从一种字符编码转换为另一种"),
        (
            "zq4 delta",
            "getent displays entries from name service databases",
        ),
        ("zq5 echo", "crontab 维护驱动 cron 守护进程的表"),
        (
            "zq6 foxtrot",
            "tar stores and extracts files from an archive",
        ),
    ];
    raw.iter()
        .enumerate()
        .map(|(i, (q, p))| Pair {
            query: (*q).into(),
            passage: (*p).into(),
            doc_id: format!("doc{i}"),
            origin: PairOrigin::Supplied,
        })
        .collect()
}

/// The tensor names of a safetensors file, sorted.
pub fn safetensors_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: HashMap<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let mut names: Vec<String> = header.into_keys().filter(|k| k != "__metadata__").collect();
    names.sort();
    names
}

/// A few epochs on [`pairs`] lower the loss; the saved directory has the base's tensor names,
/// loads in `SentenceEmbedder` and ranks more pairs right than the base; merged at α = 0 it
/// is the base.
pub fn check_fine_tuning(dir: &Path) {
    let mut trainer = EmbeddingTrainer::load(dir).unwrap();
    let config = TrainConfig {
        epochs: 8,
        batch_size: 6,
        learning_rate: 1e-3,
        warmup_ratio: 0.0,
        max_query_tokens: 16,
        max_passage_tokens: 32,
        dropout: Some(0.0),
        seed: 3,
        ..Default::default()
    };
    let report = trainer.train(&pairs(), &config, &mut |_| {}).unwrap();
    let (first, last) = (report.steps[0].loss, report.steps.last().unwrap().loss);
    assert!(last < first * 0.5, "loss {first} → {last}");

    let out = tempfile::tempdir().unwrap();
    let trained_dir = out.path().join("trained");
    trainer.save(&trained_dir).unwrap();
    // The same tensor names as the base (no BERT prefix slipped in).
    assert_eq!(
        safetensors_names(&trained_dir.join("model.safetensors")),
        safetensors_names(&dir.join("model.safetensors"))
    );
    let trained = SentenceEmbedder::load(&trained_dir).unwrap();
    let base = SentenceEmbedder::load(dir).unwrap();
    let all = pairs();
    let queries: Vec<&str> = all.iter().map(|p| p.query.as_str()).collect();
    let passages: Vec<&str> = all.iter().map(|p| p.passage.as_str()).collect();
    let top1 = |m: &SentenceEmbedder| {
        let q = m.embed_raw(&queries).unwrap();
        let p = m.embed_raw(&passages).unwrap();
        (0..q.len())
            .filter(|&i| {
                let s: Vec<f32> = p
                    .iter()
                    .map(|v| rag_core::embedding::cosine(&q[i], v))
                    .collect();
                (0..s.len()).all(|j| j == i || s[j] < s[i])
            })
            .count()
    };
    let (before, after) = (top1(&base), top1(&trained));
    assert!(after > before, "top-1 {before} → {after}");

    // Merged at α = 0 the saved model is the base, through the trainer's save path.
    let merged = out.path().join("merged");
    trainer.save_merged(&merged, 0.0).unwrap();
    let merged = SentenceEmbedder::load(&merged).unwrap();
    let a = merged.embed_raw(&queries).unwrap();
    let b = base.embed_raw(&queries).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(max_diff(x, y) <= 1e-6);
    }
}

/// The cross-encoder in `dir` scores each pair of its `expected.json` as sentence-transformers
/// did (tokens, logits and scores); saved by the trainer untrained, it is the same model under
/// the same names and `architecture`; and it learns a small ranking task.
pub fn check_cross_encoder(dir: &Path, architecture: &str) {
    let expected = expected(dir);
    let model = CrossEncoder::load(dir).unwrap();
    assert_eq!(
        model.max_seq_length() as u64,
        expected["max_seq_length"].as_u64().unwrap()
    );
    let cases = expected["cases"].as_array().unwrap();
    let owned: Vec<(String, String)> = cases
        .iter()
        .map(|c| {
            (
                c["query"].as_str().unwrap().to_string(),
                c["document"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(q, d)| (q.as_str(), d.as_str()))
        .collect();
    let scores = model.predict(&pairs).unwrap();
    let logits = model.logits(&pairs).unwrap();
    for (i, case) in cases.iter().enumerate() {
        let (q, d) = pairs[i];
        assert_eq!(
            model.count_tokens(q, d).unwrap() as u64,
            case["tokens"].as_u64().unwrap(),
            "case {i}: tokens"
        );
        for (got, key) in [(scores[i], "score"), (logits[i], "logit")] {
            let want = case[key].as_f64().unwrap() as f32;
            assert!(
                (got - want).abs() <= 1e-4,
                "case {i}: {key} {got} vs sentence-transformers {want}"
            );
        }
    }
    let trainer = CrossEncoderTrainer::load(dir, 1).unwrap();
    // Saved untrained, it is the fixture: same head names, architecture and scores.
    let out = tempfile::tempdir().unwrap();
    trainer.save(out.path(), 40).unwrap();
    assert_eq!(
        safetensors_names(&out.path().join("model.safetensors")),
        safetensors_names(&dir.join("model.safetensors"))
    );
    let config: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], architecture);
    let saved = CrossEncoder::load(out.path()).unwrap();
    let case = &expected["cases"][0];
    let pair = (
        case["query"].as_str().unwrap(),
        case["document"].as_str().unwrap(),
    );
    let logit = saved.logits(&[pair]).unwrap()[0];
    let want = case["logit"].as_f64().unwrap() as f32;
    assert!((logit - want).abs() <= 1e-4, "{logit} vs {want}");
    // The trainer's own forward pass (padded, masked) scores as the inference engine does.
    let own = trainer.score(&[pair], 40).unwrap()[0];
    assert!(
        (own - logit).abs() <= 1e-4,
        "trainer {own} vs engine {logit}"
    );

    // It learns a ranking task from the XLM-R start.
    let topics = ["river", "castle", "engine", "garden", "violin", "planet"];
    let passage = |t: &str| format!("these notes describe the {t} in some detail");
    let mut pairs = Vec::new();
    let mut negatives = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        pairs.push(Pair {
            query: format!("about the {t}"),
            passage: passage(t),
            doc_id: t.to_string(),
            origin: PairOrigin::Query,
        });
        negatives.push(
            (1..4)
                .map(|k| Negative {
                    passage: passage(topics[(i + k) % topics.len()]),
                    doc_id: topics[(i + k) % topics.len()].to_string(),
                    margin: None,
                })
                .collect::<Vec<_>>(),
        );
    }
    let mut trainer = trainer;
    let config = CrossTrainConfig {
        epochs: 30,
        batch_size: 3,
        group_size: 4,
        learning_rate: 2e-3,
        warmup_ratio: 0.0,
        max_tokens: 40,
        dropout: Some(0.0),
        ..Default::default()
    };
    let report = trainer
        .train(&pairs, &negatives, &config, &mut |_| {})
        .unwrap();
    let (first, last) = (report.steps[0].loss, report.steps.last().unwrap().loss);
    assert!(last < first * 0.7, "loss {first} → {last}");
}
