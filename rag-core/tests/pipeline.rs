//! The generic pipeline end to end on the local backends, on a small corpus in a temp dir.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use rag_core::eval::EvalQuery;
use rag_core::index::{ItemError, UpsertReport};
use rag_core::local::*;
use rag_core::pipeline::*;
use rag_core::*;

const CORPUS: &str = r#"{"id": "dup.2", "title": "dup, dup2", "text": "SYNOPSIS\n   int dup(int oldfd);\n\nDESCRIPTION\n   The dup() system call allocates a new file descriptor that refers to the same open file description as the descriptor oldfd."}
{"id": "socket.2", "title": "socket", "text": "SYNOPSIS\n   int socket(int domain, int type, int protocol);\n\nDESCRIPTION\n   socket() creates an endpoint for communication and returns a file descriptor that refers to that endpoint."}
{"id": "sleep.3", "title": "sleep", "text": "DESCRIPTION\n   sleep() causes the calling thread to sleep until the number of real-time seconds specified in seconds have elapsed."}
this line is not json
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    store_root: std::path::PathBuf,
    store: Arc<dyn ObjectStore>,
    index: Arc<dyn VectorIndex>,
    jobs: std::path::PathBuf,
}

fn fixture(index: Arc<dyn VectorIndex>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("corpus.jsonl"), CORPUS).unwrap();
    std::fs::write(
        data.join("sub/notes.txt"),
        "Plain notes about signal handlers.",
    )
    .unwrap();
    std::fs::write(data.join("sub/latin1.txt"), b"caf\xe9").unwrap();
    std::fs::write(data.join(".hidden"), "not ingested").unwrap();
    let store_root = dir.path().join("store");
    Fixture {
        store: Arc::new(LocalFileStore::new(&store_root)),
        index,
        jobs: dir.path().join("work"),
        _dir: dir,
        data,
        store_root,
    }
}

fn pipeline(f: &Fixture) -> Pipeline {
    let options = PipelineOptions {
        shard_rows: 2,
        embed_batch: 3,
        top_k: 3,
        ..Default::default()
    };
    Pipeline::new(
        f.store.clone(),
        Layout::new("oss://demo-bucket/".parse().unwrap()),
    )
    .with_trainer(Arc::new(LocalProcessBackend::new(&f.jobs)))
    .with_index(f.index.clone())
    .with_chat(Arc::new(ExtractiveChat::new(2)))
    .with_options(options)
}

fn model() -> HashedEmbedding {
    HashedEmbedding::new(HashedEmbeddingConfig {
        dims: 256,
        ..Default::default()
    })
    .unwrap()
}

fn fast_wait() -> WaitOptions {
    WaitOptions {
        interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test]
async fn the_local_loop_ingests_embeds_indexes_and_answers_with_citations() {
    let f = fixture(Arc::new(LocalVectorIndex::in_memory()));
    let p = pipeline(&f);

    let ingest = p.ingest(&f.data).await.unwrap();
    assert_eq!(
        (ingest.uploaded, ingest.unchanged, ingest.failed.len()),
        (3, 0, 0)
    );
    // Ingest reads every file as the embed stage will, and says what it found.
    assert_eq!(ingest.documents, 4);
    assert_eq!(
        (
            ingest.formats["jsonl"].files,
            ingest.formats["jsonl"].documents
        ),
        (1, 3)
    );
    assert_eq!(ingest.formats["text"].documents, 1);
    assert!(
        ingest
            .unparsed
            .iter()
            .any(|s| s.reason.contains("bad JSON")),
        "{:?}",
        ingest.unparsed
    );
    let again = p.ingest(&f.data).await.unwrap();
    assert_eq!(
        (again.uploaded, again.unchanged),
        (0, 3),
        "re-ingest skips unchanged files"
    );

    let loaded = p.load_documents().await.unwrap();
    let ids: Vec<_> = loaded.documents.iter().map(|d| d.id.as_str()).collect();
    // A whole-file document is named by its path under raw-docs/ (unique across folders).
    assert_eq!(ids, ["dup.2", "socket.2", "sleep.3", "sub/notes.txt"]);
    let reasons: Vec<_> = loaded.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert!(
        reasons.iter().any(|r| r.contains("bad JSON")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("UTF-8")), "{reasons:?}");

    let m = model();
    let embedded = p.embed(&m).await.unwrap();
    assert_eq!(embedded.documents, 4);
    assert!(embedded.shards_written >= 3, "{embedded:?}");
    let again = p.embed(&m).await.unwrap();
    assert_eq!(
        (again.shards_written, again.shards_current),
        (0, embedded.shards_written)
    );

    // Losing a shard (a run killed mid-way) costs exactly that shard on the next run.
    let shard = p
        .layout()
        .vector_shards(m.model_id())
        .join("part-00001.parquet")
        .unwrap();
    f.store.delete(&shard).await.unwrap();
    let resumed = p.embed(&m).await.unwrap();
    assert_eq!(resumed.shards_written, 1);

    let indexed = p.index(&m).await.unwrap();
    assert_eq!(indexed.written, embedded.chunks);
    assert_eq!(indexed.count, embedded.chunks);
    let reindexed = p.index(&m).await.unwrap();
    assert_eq!(
        reindexed.count, embedded.chunks,
        "re-indexing upserts, never duplicates"
    );

    let answer = p
        .answer(&m, "Which call duplicates a file descriptor?")
        .await
        .unwrap();
    assert!(answer.text.contains("dup() system call"), "{}", answer.text);
    let cited = &answer.citations[0];
    assert_eq!(cited.doc_id, "dup.2");
    assert_eq!(
        cited.source,
        "oss://demo-bucket/raw-docs/corpus.jsonl#dup.2"
    );
    let doc = &loaded.documents[0].text;
    let chunk_text = &doc[cited.start as usize..cited.end as usize];
    assert!(
        chunk_text.contains("allocates a new file descriptor"),
        "offsets point into the document"
    );

    let queries = vec![
        EvalQuery {
            id: "q1".into(),
            text: "create an endpoint for communication".into(),
            relevant: vec!["socket.2".into()],
            split: "test".into(),
        },
        EvalQuery {
            id: "q2".into(),
            text: "sleep for a number of seconds".into(),
            relevant: vec!["sleep.3".into()],
            split: "test".into(),
        },
    ];
    for mode in [
        RetrievalMode::Vector,
        RetrievalMode::Text,
        RetrievalMode::Hybrid,
    ] {
        let metrics = p.evaluate(&m, &queries, mode, 10).await.unwrap();
        assert_eq!(metrics.queries, 2);
        assert_eq!(metrics.hit_at_1, 1.0, "{mode:?}: {metrics:?}");
    }
    assert!(matches!(
        p.answer(&m, "  ").await,
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn jobs_run_once_and_failures_carry_the_reason_and_log() {
    let f = fixture(Arc::new(LocalVectorIndex::in_memory()));
    let p = pipeline(&f);
    let out: StoreUri = "oss://demo-bucket/models/emb-v1/".parse().unwrap();
    let target = f.store_root.join("demo-bucket/models/emb-v1");
    let script = format!(
        "echo training; mkdir -p '{0}' && echo w > '{0}/model.bin' && touch '{0}/_SUCCESS'",
        target.display()
    );
    let spec = JobSpec::new(
        "emb-train",
        JobKind::EmbeddingFineTune,
        vec!["sh".into(), "-c".into(), script],
        out.clone(),
    );
    let first = p
        .run_job(Stage::TrainEmbeddings, &spec, fast_wait())
        .await
        .unwrap();
    assert!(!first.skipped && first.job_id.is_some());
    let second = p
        .run_job(Stage::TrainEmbeddings, &spec, fast_wait())
        .await
        .unwrap();
    assert!(second.skipped, "a complete output is not trained again");

    let failing = JobSpec::new(
        "llm-ft",
        JobKind::LlmFineTune,
        vec![
            "sh".into(),
            "-c".into(),
            "echo 'CUDA out of memory'; exit 1".into(),
        ],
        "oss://demo-bucket/models/llm-ft/".parse().unwrap(),
    );
    let err = p
        .run_job(Stage::FineTuneLlm, &failing, fast_wait())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CUDA out of memory"), "{err}");

    let silent = JobSpec::new(
        "no-marker",
        JobKind::Script,
        vec!["true".into()],
        "oss://demo-bucket/models/x/".parse().unwrap(),
    );
    let err = p
        .run_job(Stage::TrainEmbeddings, &silent, fast_wait())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("_SUCCESS"), "{err}");
}

/// A pipeline dropped while its job runs (a crash, Ctrl-C; a cloud job outlives it) finds the
/// job through the `_JOB` record when it is run again and waits for it: one job, not two
/// writing the same output. A job that failed is replaced by a new one.
#[tokio::test]
async fn a_resumed_run_waits_for_the_job_it_submitted_before_it_was_interrupted() {
    let f = fixture(Arc::new(LocalVectorIndex::in_memory()));
    let p = pipeline(&f);
    let go = f.store_root.join("go");
    let target = f.store_root.join("demo-bucket/models/slow");
    let script = format!(
        "while [ ! -f '{go}' ]; do sleep 0.02; done; mkdir -p '{t}' && echo w > '{t}/w' && touch '{t}/_SUCCESS'",
        go = go.display(),
        t = target.display()
    );
    let spec = JobSpec::new(
        "slow",
        JobKind::EmbeddingFineTune,
        vec!["sh".into(), "-c".into(), script],
        "oss://demo-bucket/models/slow/".parse().unwrap(),
    );
    let interrupted = tokio::time::timeout(
        Duration::from_millis(300),
        p.run_job(Stage::TrainEmbeddings, &spec, fast_wait()),
    )
    .await;
    assert!(interrupted.is_err(), "the job cannot finish before `go`");
    let jobs = || {
        std::fs::read_dir(f.store_root.parent().unwrap().join("work/jobs"))
            .unwrap()
            .count()
    };
    assert_eq!(jobs(), 1);

    std::fs::write(&go, "").unwrap();
    let resumed = p
        .run_job(Stage::TrainEmbeddings, &spec, fast_wait())
        .await
        .unwrap();
    assert!(resumed.reattached && !resumed.skipped, "{resumed:?}");
    assert_eq!(jobs(), 1, "no second job was submitted");
    assert!(target.join("_SUCCESS").is_file());

    // The user removes the marker to train again: the finished job is not taken for it.
    std::fs::remove_file(target.join("_SUCCESS")).unwrap();
    let retrained = p
        .run_job(Stage::TrainEmbeddings, &spec, fast_wait())
        .await
        .unwrap();
    assert!(!retrained.reattached && !retrained.skipped, "{retrained:?}");
    assert_eq!(jobs(), 2);

    let failing = JobSpec::new(
        "fails-once",
        JobKind::Script,
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "[ -f '{0}' ] || {{ touch '{0}'; exit 3; }}; mkdir -p '{1}' && touch '{1}/_SUCCESS'",
                f.store_root.join("tried").display(),
                f.store_root.join("demo-bucket/models/retry").display()
            ),
        ],
        "oss://demo-bucket/models/retry/".parse().unwrap(),
    );
    assert!(
        p.run_job(Stage::TrainEmbeddings, &failing, fast_wait())
            .await
            .is_err()
    );
    let again = p
        .run_job(Stage::TrainEmbeddings, &failing, fast_wait())
        .await
        .unwrap();
    assert!(
        !again.reattached,
        "a failed job is replaced, not waited for"
    );
    assert_eq!(jobs(), 4);
}

/// An index that refuses every third record with a retryable error the first time it sees it,
/// like an Elasticsearch bulk response with per-item 429s.
struct Flaky {
    inner: LocalVectorIndex,
    calls: AtomicUsize,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[async_trait]
impl VectorIndex for Flaky {
    async fn create_index(&self, s: &IndexSchema) -> Result<()> {
        self.inner.create_index(s).await
    }
    async fn schema(&self, i: &str) -> Result<IndexSchema> {
        self.inner.schema(i).await
    }
    async fn upsert(&self, i: &str, records: Vec<IndexRecord>) -> Result<UpsertReport> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut refused = Vec::new();
        let mut accepted = Vec::new();
        for (n, r) in records.into_iter().enumerate() {
            let first_time = self.seen.lock().unwrap().insert(r.id.clone());
            if first_time && n % 3 == 0 {
                refused.push(ItemError {
                    id: r.id,
                    reason: "es_rejected_execution_exception".into(),
                    retryable: true,
                });
            } else {
                accepted.push(r);
            }
        }
        let mut report = self.inner.upsert(i, accepted).await?;
        report.failed.extend(refused);
        Ok(report)
    }
    async fn delete(&self, i: &str, ids: &[String]) -> Result<usize> {
        self.inner.delete(i, ids).await
    }
    async fn search(&self, i: &str, r: &SearchRequest) -> Result<Vec<SearchHit>> {
        self.inner.search(i, r).await
    }
    async fn count(&self, i: &str) -> Result<usize> {
        self.inner.count(i).await
    }
    async fn drop_index(&self, i: &str) -> Result<()> {
        self.inner.drop_index(i).await
    }
}

#[tokio::test]
async fn records_an_index_refuses_as_retryable_are_resent_not_lost() {
    let flaky = Arc::new(Flaky {
        inner: LocalVectorIndex::in_memory(),
        calls: AtomicUsize::new(0),
        seen: Default::default(),
    });
    let f = fixture(flaky.clone());
    let p = pipeline(&f);
    p.ingest(&f.data).await.unwrap();
    let m = model();
    let embedded = p.embed(&m).await.unwrap();
    let report = p.index(&m).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.written, embedded.chunks);
    assert_eq!(report.count, embedded.chunks);
    assert!(
        flaky.calls.load(Ordering::Relaxed) > report.shards,
        "retries happened"
    );
}

#[tokio::test]
async fn a_dimension_mismatch_with_the_existing_index_fails_before_any_write() {
    let index = Arc::new(LocalVectorIndex::in_memory());
    let f = fixture(index.clone());
    let p = pipeline(&f);
    index
        .create_index(&IndexSchema::new("rag-index", 8, Metric::Cosine))
        .await
        .unwrap();
    p.ingest(&f.data).await.unwrap();
    let m = model();
    p.embed(&m).await.unwrap();
    let err = p.index(&m).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimensionMismatch {
                expected: 8,
                actual: 256
            }
        ),
        "{err}"
    );
    assert_eq!(index.count("rag-index").await.unwrap(), 0);
}

/// Vector shards that are not Parquet — garbage, or a file cut in half — are reported by name
/// and reason; every other shard is still indexed.
#[tokio::test]
async fn unreadable_shards_are_reported_and_the_others_indexed() {
    let f = fixture(Arc::new(LocalVectorIndex::in_memory()));
    let p = pipeline(&f);
    let m = model();
    p.ingest(&f.data).await.unwrap();
    let embedded = p.embed(&m).await.unwrap();
    assert!(embedded.shards_written >= 3, "{embedded:?}");
    let dir = f
        .store_root
        .join("demo-bucket/vector-indexes")
        .join(m.model_id());
    let mut shards: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    shards.sort();
    std::fs::write(&shards[0], b"PAR1 this is not a parquet file").unwrap();
    let whole = std::fs::read(&shards[1]).unwrap();
    std::fs::write(&shards[1], &whole[..whole.len() / 2]).unwrap();

    let report = p.index(&m).await.unwrap();
    let bad: Vec<&str> = report.unreadable.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(bad.len(), 2, "{:?}", report.unreadable);
    assert!(bad[0].ends_with("part-00000.parquet") && bad[1].ends_with("part-00001.parquet"));
    assert!(report.failed.is_empty());
    // Two rows a shard: everything but the two broken shards' rows is in the index.
    assert_eq!(report.written, embedded.chunks - 4);
    assert_eq!(report.count, embedded.chunks - 4);
}

/// A 100 MB document is above the 64 MiB limit: ingested (streamed), then skipped at loading
/// with the reason, while the rest of the corpus is embedded.
#[tokio::test]
async fn a_100_mb_document_is_skipped_with_its_size_and_the_rest_embedded() {
    let f = fixture(Arc::new(LocalVectorIndex::in_memory()));
    let p = pipeline(&f);
    let line = "The quick brown fox jumps over the lazy dog, again and again.\n";
    let huge: String = line.repeat(100_000_000 / line.len() + 1);
    std::fs::write(f.data.join("huge.txt"), &huge).unwrap();
    drop(huge);

    let ingested = p.ingest(&f.data).await.unwrap();
    assert!(ingested.failed.is_empty(), "{:?}", ingested.failed);
    assert!(ingested.bytes > 100_000_000);
    let embedded = p.embed(&model()).await.unwrap();
    let skipped: Vec<_> = embedded
        .skipped_inputs
        .iter()
        .filter(|s| s.source.ends_with("huge.txt"))
        .collect();
    assert_eq!(skipped.len(), 1, "{:?}", embedded.skipped_inputs);
    assert!(
        skipped[0]
            .reason
            .contains("exceeds the 67108864 byte limit"),
        "{}",
        skipped[0].reason
    );
    // The corpus's three documents and the notes file still go through.
    assert_eq!(embedded.documents, 4, "{embedded:?}");
}

#[tokio::test]
async fn unreadable_entries_are_skipped_and_reported_and_the_rest_ingested() {
    // Each of these once aborted the whole ingest: a dangling symlink, a symlink loop, an
    // unreadable directory (when not root), a file name with a newline.
    use std::os::unix::fs::{PermissionsExt, symlink};
    let f = fixture(Arc::new(LocalVectorIndex::in_memory()));
    symlink(f.data.join("nowhere"), f.data.join("dangling.txt")).unwrap();
    symlink(f.data.join("loop.txt"), f.data.join("loop.txt")).unwrap();
    std::fs::write(f.data.join("new\nline.txt"), "a name with a newline").unwrap();
    let locked = f.data.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::write(locked.join("x.txt"), "secret").unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let locked_out = std::fs::read_dir(&locked).is_err(); // root reads it anyway
    let report = pipeline(&f).ingest(&f.data).await.unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    let failed: Vec<&str> = report.failed.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        failed.iter().any(|p| p.ends_with("dangling.txt")),
        "{failed:?}"
    );
    assert!(failed.iter().any(|p| p.ends_with("loop.txt")), "{failed:?}");
    assert_eq!(
        failed.iter().any(|p| p.ends_with("locked")),
        locked_out,
        "{failed:?}"
    );
    // A key with a control character is refused with the reason, not a crash.
    let newline = report
        .failed
        .iter()
        .find(|(p, _)| p.ends_with("new\nline.txt"));
    assert!(
        newline.is_some_and(|(_, why)| why.contains("control character")),
        "{failed:?}"
    );
    // The good files all went up.
    assert_eq!(
        report.uploaded,
        3 + usize::from(!locked_out),
        "{:?}",
        report.failed
    );
    assert!(
        f.store_root
            .join("demo-bucket/raw-docs/sub/notes.txt")
            .is_file()
    );
}

#[tokio::test]
async fn documents_with_one_id_in_two_files_keep_apart() {
    // `corpus.jsonl` and `sub/more.jsonl` both hold "dup.2": once their chunks merged and
    // cited the wrong file. The later one is renamed by its file, reported at ingest, and
    // found under its new id.
    let f = fixture(Arc::new(LocalVectorIndex::in_memory()));
    std::fs::write(
        f.data.join("sub/more.jsonl"),
        r#"{"id": "dup.2", "title": "another dup", "text": "A different page that happens to reuse the id dup.2 and talks about zebras."}"#,
    )
    .unwrap();
    let p = pipeline(&f);
    let report = p.ingest(&f.data).await.unwrap();
    assert_eq!(report.renamed.len(), 1, "{report:?}");
    assert_eq!(
        (
            report.renamed[0].id.as_str(),
            report.renamed[0].now.as_str()
        ),
        ("dup.2", "sub/more.jsonl#dup.2")
    );
    let m = model();
    let embedded = p.embed(&m).await.unwrap();
    assert!(embedded.documents >= 5, "{embedded:?}");
    p.index(&m).await.unwrap();
    let answer = p
        .answer(&m, "Which page talks about zebras?")
        .await
        .unwrap();
    assert_eq!(
        answer.citations[0].doc_id, "sub/more.jsonl#dup.2",
        "{answer:?}"
    );
}
