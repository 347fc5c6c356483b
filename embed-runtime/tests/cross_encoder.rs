//! The cross-encoder against sentence-transformers: `tests/fixtures/tiny-cross-encoder` is a
//! randomly initialised BERT sequence classifier saved by sentence-transformers 6.3's
//! CrossEncoder, with the scores its `predict` gives (`scripts/cross_encoder_fixture.py`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use embed_runtime::{CrossEncoder, CrossEncoderOptions, Quantization, ScoreActivation};
use rag_core::Error;
use rag_core::rerank::Reranker;
use serde_json::Value;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-cross-encoder")
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap()
}

fn cases(expected: &Value) -> Vec<(String, String)> {
    expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["query"].as_str().unwrap().to_string(),
                c["document"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn scores_match_sentence_transformers() {
    let model = CrossEncoder::load(&fixture()).unwrap();
    let expected = expected();
    assert_eq!(
        model.max_seq_length() as u64,
        expected["max_seq_length"].as_u64().unwrap()
    );
    assert_eq!(model.activation(), ScoreActivation::Sigmoid);
    let cases = cases(&expected);
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .map(|(q, d)| (q.as_str(), d.as_str()))
        .collect();
    let scores = model.predict(&pairs).unwrap();
    let logits = model.logits(&pairs).unwrap();
    for (i, case) in expected["cases"].as_array().unwrap().iter().enumerate() {
        let (q, d) = pairs[i];
        assert_eq!(
            model.count_tokens(q, d).unwrap() as u64,
            case["tokens"].as_u64().unwrap(),
            "case {i}: tokens"
        );
        let want = case["score"].as_f64().unwrap() as f32;
        assert!(
            (scores[i] - want).abs() <= 1e-4,
            "case {i}: score {} vs sentence-transformers {want}",
            scores[i]
        );
        let want = case["logit"].as_f64().unwrap() as f32;
        assert!(
            (logits[i] - want).abs() <= 1e-4,
            "case {i}: logit {} vs sentence-transformers {want}",
            logits[i]
        );
    }
}

#[test]
fn over_long_pairs_are_truncated_and_counted() {
    let model = CrossEncoder::load(&fixture()).unwrap();
    let expected = expected();
    let cases = cases(&expected);
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .map(|(q, d)| (q.as_str(), d.as_str()))
        .collect();
    model.predict(&pairs).unwrap();
    let max = model.max_seq_length() as u64;
    let long = expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tokens"].as_u64().unwrap() == max)
        .count() as u64;
    assert_eq!(long, 4, "the fixture has four pairs over the limit");
    assert_eq!(model.truncated_pairs(), long);
    // A huge passage is cut before it is tokenised whole, and still counted once.
    let huge = "kernel memory page ".repeat(200_000);
    let before = model.truncated_pairs();
    let score = model.predict(&[("memory", huge.as_str())]).unwrap();
    assert!(score[0].is_finite());
    assert_eq!(model.truncated_pairs(), before + 1);
    assert_eq!(
        model.count_tokens("memory", &huge).unwrap(),
        model.max_seq_length()
    );
}

#[tokio::test]
async fn the_reranker_contract_holds() {
    let model = CrossEncoder::load(&fixture()).unwrap();
    rag_core::conformance::rerank::run_contract(&model).await;
    // Packing several pairs per forward pass gives the scores of one pair at a time.
    let one_at_a_time = CrossEncoder::load_with(
        &fixture(),
        CrossEncoderOptions {
            max_batch_tokens: 1,
            threads: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let docs: Vec<String> = cases(&expected()).into_iter().map(|(_, d)| d).collect();
    let packed = model.score("a file descriptor", &docs).await.unwrap();
    let single = one_at_a_time
        .score("a file descriptor", &docs)
        .await
        .unwrap();
    for (a, b) in packed.iter().zip(&single) {
        assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
    }
}

#[test]
fn int8_scores_stay_close_to_f32() {
    let f32_model = CrossEncoder::load(&fixture()).unwrap();
    let int8 = CrossEncoder::load_with(
        &fixture(),
        CrossEncoderOptions {
            quantize: Quantization::Int8,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(Reranker::model_id(&int8).ends_with("-int8"));
    let cases = cases(&expected());
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .map(|(q, d)| (q.as_str(), d.as_str()))
        .collect();
    let a = f32_model.predict(&pairs).unwrap();
    let b = int8.predict(&pairs).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 0.02, "f32 {x} vs int8 {y}");
    }
}

/// A copy of the fixture with `edit` applied to its config.json.
fn edited(dir: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join(entry.file_name())).unwrap();
    }
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(
        out.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    out
}

fn invalid(dir: &Path) -> String {
    match CrossEncoder::load(dir) {
        Err(Error::InvalidInput { message }) => message,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn other_kinds_of_directory_are_typed_errors() {
    // A bi-encoder (what a user most often points at by mistake).
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(tmp.path(), |c| {
        c["architectures"] = serde_json::json!(["BertModel"])
    });
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let message = invalid(&dir);
    assert!(
        message.contains("bi-encoder") && message.contains("not a cross-encoder"),
        "{message}"
    );

    // A classifier with three labels.
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(tmp.path(), |c| {
        c["id2label"] = serde_json::json!({"0": "a", "1": "b", "2": "c"})
    });
    assert!(invalid(&dir).contains("3 labels"));

    // An activation we do not know.
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(tmp.path(), |_| {});
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        r#"{"activation_fn": "my_package.Softplus"}"#,
    )
    .unwrap();
    assert!(invalid(&dir).contains("Softplus"));

    // A model family we do not run.
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(tmp.path(), |c| c["model_type"] = serde_json::json!("gpt2"));
    assert!(invalid(&dir).contains("gpt2"));

    // BERT weights labelled XLM-R: the head XLM-R's classifier has is named as missing.
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(tmp.path(), |c| {
        c["model_type"] = serde_json::json!("xlm-roberta")
    });
    assert!(invalid(&dir).contains("classifier.dense.weight"));

    // No weights.
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited(tmp.path(), |_| {});
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    assert!(matches!(
        CrossEncoder::load(&dir),
        Err(Error::NotFound { .. })
    ));

    // Not a model directory at all.
    let tmp = tempfile::tempdir().unwrap();
    assert!(CrossEncoder::load(tmp.path()).is_err());
}
