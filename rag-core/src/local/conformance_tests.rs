//! Every local backend runs its trait's shared conformance suite.

use std::sync::Arc;
use std::time::Duration;

use crate::conformance;
use crate::conformance::training::TrainingFixtures;
use crate::local::*;
use crate::training::{JobKind, JobSpec, TrainingBackend, WaitOptions};
use crate::{ObjectStore, StoreUri};

fn sh(name: &str, script: &str) -> JobSpec {
    JobSpec::new(
        name,
        JobKind::Script,
        vec!["sh".into(), "-c".into(), script.into()],
        "oss://bucket/out/".parse().unwrap(),
    )
}

#[tokio::test]
async fn local_file_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalFileStore::new(dir.path());
    conformance::object_store::run_all(&store, &"oss://conformance/run/".parse().unwrap()).await;
    // file:// URIs map below the root too.
    conformance::object_store::put_get_head_delete(&store, &"file:///files/".parse().unwrap())
        .await;
}

#[tokio::test]
async fn in_memory_store_conforms() {
    let store = InMemoryStore::new();
    conformance::object_store::run_all(&store, &"mem://conformance/run/".parse().unwrap()).await;
}

#[tokio::test]
async fn local_vector_index_conforms_in_memory_and_persisted() {
    conformance::vector_index::run_all(&LocalVectorIndex::in_memory(), "mem").await;
    let dir = tempfile::tempdir().unwrap();
    let index = LocalVectorIndex::open(dir.path()).await.unwrap();
    conformance::vector_index::run_all(&index, "disk").await;
}

#[tokio::test]
async fn local_vector_index_stays_true_to_the_corpus_in_memory_and_persisted() {
    conformance::sync::check(Arc::new(LocalVectorIndex::in_memory()), "mem").await;
    let dir = tempfile::tempdir().unwrap();
    let index = LocalVectorIndex::open(dir.path()).await.unwrap();
    conformance::sync::check(Arc::new(index), "disk").await;
}

#[tokio::test]
async fn hashed_embedding_conforms_untrained_and_fitted() {
    let untrained = HashedEmbedding::new(HashedEmbeddingConfig::default()).unwrap();
    conformance::embedding::run_all(&untrained).await;
    let corpus = [
        "the dup call duplicates a descriptor",
        "the oven bakes the bread",
        "the kernel",
    ];
    let fitted = HashedEmbedding::fit(HashedEmbeddingConfig::default(), corpus).unwrap();
    conformance::embedding::run_all(&fitted).await;
}

#[tokio::test]
async fn extractive_chat_conforms() {
    conformance::chat::run_all(&ExtractiveChat::default()).await;
}

#[tokio::test]
async fn local_process_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalProcessBackend::new(dir.path());
    let fx = TrainingFixtures {
        succeeding: sh(
            "ok",
            "echo \"training on $RAGLOOP_INPUT_DATA lr=$RAGLOOP_HP_LR\"",
        )
        .with_input("data", "oss://bucket/raw-docs/".parse().unwrap())
        .with_hyper_parameter("lr", 0.01),
        expected_log: "training on oss://bucket/raw-docs/ lr=0.01".into(),
        failing: sh("bad", "echo 'loss is NaN' >&2; exit 3"),
        expected_reason: "loss is NaN".into(),
        long_running: sh("long", "sleep 120"),
        wait: WaitOptions {
            interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(100),
            timeout: Duration::from_secs(30),
        },
    };
    conformance::training::run_all(&backend, &fx).await;
}

#[tokio::test]
async fn local_deployer_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemoryStore::new());
    let model: StoreUri = "mem://bucket/models/llm-ft/weights.bin".parse().unwrap();
    store
        .put(&model, bytes::Bytes::from_static(b"w"))
        .await
        .unwrap();
    let deployer = LocalDeployer::new(dir.path().join("deployments.json"), store);
    conformance::deploy::run_all(
        &deployer,
        "mem://bucket/models/llm-ft/",
        "mem://bucket/models/none/",
    )
    .await;
}

/// A garbled `status.json` of an ended job (a later backend reads it from disk) is `Corrupt`
/// naming the file, the job and what to do; it once said only "corrupt status.json".
#[tokio::test]
async fn a_garbled_job_status_names_the_file_and_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let first = LocalProcessBackend::new(dir.path());
    let id = first.submit(&sh("ok", "true")).await.unwrap();
    let wait = WaitOptions {
        interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
    };
    first.wait(&id, wait).await.unwrap();
    let status = dir.path().join("jobs").join(&id.0).join("status.json");
    assert!(status.is_file(), "{}", status.display());
    std::fs::write(&status, b"{\"Succ").unwrap();

    let later = LocalProcessBackend::new(dir.path());
    let err = later.status(&id).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, crate::Error::Corrupt { .. }), "{text}");
    assert!(
        text.contains(&status.display().to_string())
            && text.contains(&id.0)
            && text.contains("remove the job's directory"),
        "{text}"
    );
}
