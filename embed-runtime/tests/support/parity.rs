//! Checks a model directory made by a reference script (`tests/fixtures/*/expected.json`:
//! the texts, their token ids and the reference library's embeddings) against
//! `SentenceEmbedder`. Included by `#[path]` from the model-family tests.

use std::path::{Path, PathBuf};

use embed_runtime::{EmbedderOptions, SentenceEmbedder};
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
