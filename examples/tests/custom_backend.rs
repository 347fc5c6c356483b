//! The `custom_backend` example, run as a test: a user's own `VectorIndex` and `ChatModel`
//! drive the whole pipeline, and they pass the same conformance suites as the shipped
//! backends.

#![allow(clippy::unwrap_used)]

#[path = "../examples/custom_backend.rs"]
mod custom_backend;

use custom_backend::{FlatIndex, QuoteChat};

#[tokio::test]
async fn a_custom_index_and_chat_model_run_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pages.jsonl"),
        concat!(
            r#"{"id":"dup.2","title":"dup","text":"The dup() system call allocates a new file descriptor. It refers to the same open file."}"#,
            "\n",
            r#"{"id":"kill.2","title":"kill","text":"The kill() system call sends a signal to a process. Any signal can be sent."}"#,
            "\n"
        ),
    )
    .unwrap();
    let answer = custom_backend::run(dir.path(), "How do I send a signal to a process?")
        .await
        .unwrap();
    assert_eq!(answer.citations[0].doc_id, "kill.2", "{answer:?}");
    assert!(
        answer
            .text
            .starts_with("The kill() system call sends a signal to a process."),
        "{}",
        answer.text
    );
}

#[tokio::test]
async fn flat_index_passes_the_vector_index_conformance_suite() {
    rag_core::conformance::vector_index::run_all(&FlatIndex::default(), "flat").await;
    rag_core::conformance::sync::check(std::sync::Arc::new(FlatIndex::default()), "flat").await;
}

#[tokio::test]
async fn quote_chat_passes_the_chat_model_conformance_suite() {
    rag_core::conformance::chat::run_all(&QuoteChat).await;
}
