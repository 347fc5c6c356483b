//! [`EmbeddingModel`] conformance.

use crate::embedding::{EmbeddingModel, cosine};

/// Runs every check.
pub async fn run_all(model: &dyn EmbeddingModel) {
    shapes_and_order(model).await;
    edge_inputs(model).await;
    batch_matches_single(model).await;
    related_texts_are_closer(model).await;
}

fn assert_vector(model: &dyn EmbeddingModel, v: &[f32], what: &str) {
    assert_eq!(v.len(), model.dims(), "{what}: vector has dims() values");
    assert!(v.iter().all(|x| x.is_finite()), "{what}: values are finite");
    if model.normalized() {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            norm < 1.0 + 1e-3,
            "{what}: normalised vectors have norm at most 1, got {norm}"
        );
    }
}

/// One vector per input, in order; an empty batch gives an empty result; an id and limits exist.
pub async fn shapes_and_order(model: &dyn EmbeddingModel) {
    assert!(!model.model_id().is_empty(), "model_id is set");
    assert!(model.dims() > 0 && model.max_input_tokens() > 0);
    assert!(
        model
            .embed_documents(&[])
            .await
            .expect("empty batch")
            .is_empty()
    );
    let texts = vec![
        "first text".to_string(),
        "second, different text".to_string(),
    ];
    let out = model
        .embed_documents(&texts)
        .await
        .expect("embed_documents");
    assert_eq!(out.len(), 2);
    out.iter().for_each(|v| assert_vector(model, v, "document"));
    assert_ne!(out[0], out[1], "different texts give different vectors");
}

/// Empty, very long, non-ASCII and CJK inputs all embed (long ones truncated, not rejected).
pub async fn edge_inputs(model: &dyn EmbeddingModel) {
    let long = "kernel memory page ".repeat(model.max_input_tokens().min(20_000) + 10);
    let texts = vec![
        String::new(),
        long,
        "naïve café — Ünïcödé".to_string(),
        "复制文件描述符".to_string(),
        "emoji 🦀 and\ttabs\nnewlines".to_string(),
    ];
    let out = model
        .embed_documents(&texts)
        .await
        .expect("edge inputs embed");
    assert_eq!(out.len(), texts.len());
    for (v, t) in out.iter().zip(&texts) {
        assert_vector(model, v, &format!("input of {} bytes", t.len()));
    }
    let q = model.embed_query("").await.expect("empty query embeds");
    assert_vector(model, &q, "empty query");
}

/// Embedding in a batch gives the same vectors as one at a time.
pub async fn batch_matches_single(model: &dyn EmbeddingModel) {
    let texts: Vec<String> = ["alpha beta", "gamma delta epsilon", "zeta"]
        .map(String::from)
        .to_vec();
    let batch = model.embed_documents(&texts).await.unwrap();
    for (t, b) in texts.iter().zip(&batch) {
        let single = model
            .embed_documents(std::slice::from_ref(t))
            .await
            .unwrap();
        assert!(
            cosine(&single[0], b) > 0.999,
            "batching does not change {t:?}'s vector"
        );
    }
}

/// A query is closer to a passage about it than to an unrelated one.
pub async fn related_texts_are_closer(model: &dyn EmbeddingModel) {
    let docs = vec![
        "The dup system call duplicates an open file descriptor.".to_string(),
        "Bake the bread in a hot oven until the crust is golden.".to_string(),
    ];
    let d = model.embed_documents(&docs).await.unwrap();
    let q = model
        .embed_query("how to duplicate a file descriptor")
        .await
        .unwrap();
    assert!(
        cosine(&q, &d[0]) > cosine(&q, &d[1]),
        "the related passage scores higher"
    );
}
