//! Alibaba's GTE (gte-multilingual-base's architecture: rotary positions, gated MLP) against
//! transformers' own GTE port. No real GTE weights can be fetched here, so
//! `tests/fixtures/tiny-gte` (model_type `gte`, as transformers 5 saves it) and
//! `tiny-gte-new` (the same weights under the hub's `NewModel` config, with NTK-scaled rotary
//! frequencies) are small randomly initialised models with what transformers computes
//! (`scripts/gte_fixture.py`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/parity.rs"]
mod parity;
use parity::{check_embeddings, fixture, max_diff};

use embed_runtime::{BertConfig, EmbedderOptions, Family, Pooling, Quantization, SentenceEmbedder};

#[test]
fn embeddings_match_transformers() {
    let model = check_embeddings(&fixture("tiny-gte"), 1e-4);
    let layout = model.layout();
    assert_eq!(
        (layout.pooling, layout.normalize, layout.dims),
        (Pooling::Cls, true, 32)
    );
}

#[test]
fn the_hub_config_with_ntk_scaled_rotary_positions_matches() {
    let dir = fixture("tiny-gte-new");
    let config = BertConfig::read(&dir).unwrap();
    assert_eq!(config.family().unwrap(), Family::Gte);
    check_embeddings(&dir, 1e-4);
    // The scaling matters: the same weights without it embed differently.
    let plain = SentenceEmbedder::load(&fixture("tiny-gte")).unwrap();
    let scaled = SentenceEmbedder::load(&dir).unwrap();
    let text = ["dup, dup2, dup3 - duplicate a file descriptor"];
    let d = max_diff(
        &plain.embed_raw(&text).unwrap()[0],
        &scaled.embed_raw(&text).unwrap()[0],
    );
    assert!(d > 1e-3, "NTK scaling changed nothing ({d})");
}

#[test]
fn int8_gte_stays_close_to_f32() {
    let dir = fixture("tiny-gte");
    let f32_model = SentenceEmbedder::load(&dir).unwrap();
    let int8 = SentenceEmbedder::load_with(
        &dir,
        EmbedderOptions {
            quantize: Quantization::Int8,
            ..Default::default()
        },
    )
    .unwrap();
    let texts = [
        "How do I duplicate a file descriptor?",
        "如何复制文件描述符",
    ];
    let a = f32_model.embed_raw(&texts).unwrap();
    let b = int8.embed_raw(&texts).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let c = rag_core::embedding::cosine(x, y);
        assert!(c > 0.99, "int8 cosine {c}");
    }
}

#[test]
fn unsupported_gte_variants_are_named() {
    let dir = fixture("tiny-gte-new");
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    for (key, value, named) in [
        (
            "position_embedding_type",
            serde_json::json!("absolute"),
            "absolute",
        ),
        ("layer_norm_type", serde_json::json!("rms_norm"), "rms_norm"),
        (
            "logn_attention_scale",
            serde_json::json!(true),
            "logn_attention_scale",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "ntk", "factor": 2.0, "mixed_b": 0.5}),
            "mixed_b",
        ),
    ] {
        let mut config = raw.clone();
        config[key] = value;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
        let err = BertConfig::read(tmp.path()).unwrap_err().to_string();
        assert!(err.contains(named), "{key}: {err}");
    }
}

#[test]
fn the_trainer_fine_tunes_gte_and_the_result_loads() {
    parity::check_fine_tuning(&fixture("tiny-gte"));
}

#[test]
fn gte_cross_encoder_scores_match_sentence_transformers_and_it_trains() {
    parity::check_cross_encoder(
        &fixture("tiny-gte-cross-encoder"),
        "GteForSequenceClassification",
    );
}
