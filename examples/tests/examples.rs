//! The `local_loop`, `eval` and `cloud_loop` examples, run as tests (their files included):
//! the first two end to end on a small corpus, the cloud one's configuration from the
//! environment and its plan (no credentials here).

#![allow(clippy::unwrap_used)]

#[path = "../../ragloop/tests/support/mod.rs"]
mod support;

#[path = "../examples/cloud_loop.rs"]
mod cloud_loop;
#[path = "../examples/eval.rs"]
mod eval;
#[path = "../examples/local_loop.rs"]
mod local_loop;

use std::collections::HashMap;
use support::write_corpus;

/// The `ragloop` binary the local loop's jobs run: this package cannot name another package's
/// binary at compile time, so it is the one `cargo test --workspace` builds beside this test's
/// directory (`target/<profile>/ragloop`), or `RAGLOOP_BIN`.
fn ragloop_binary() -> String {
    if let Ok(bin) = std::env::var("RAGLOOP_BIN") {
        return bin;
    }
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile.join(format!("ragloop{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo build -p ragloop` (or the whole workspace's tests), or set RAGLOOP_BIN",
        bin.display()
    );
    bin.display().to_string()
}

#[tokio::test]
async fn local_loop_example_runs_the_seven_stages() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let opts = local_loop::Opts {
        data: dir.path().join("docs"),
        queries: dir.path().join("queries.jsonl"),
        work_dir: dir.path().join("work"),
        question: "How do I send a signal?".into(),
        model: "hashed".into(),
        dims: 128,
    };
    let summary = local_loop::run(opts, vec![ragloop_binary()]).await.unwrap();
    assert_eq!(summary.stages.len(), 7);
    assert_eq!(summary.answer.citations[0].doc_id, "kill.2");
    let trained = summary
        .evaluation
        .iter()
        .find(|r| r.retriever == "dense hashed, trained (IDF)")
        .unwrap();
    assert_eq!(trained.metrics.hit_at_1, 1.0);
}

#[tokio::test]
async fn eval_example_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let args = ragloop::eval::EvalArgs {
        data: dir.path().join("docs"),
        queries: dir.path().join("queries.jsonl"),
        split: "test".into(),
        model: Vec::new(),
        quantize: vec![ragloop::embed_runtime::Quantization::None],
        dims: 128,
        reranker: None,
        rerank_candidates: 50,
        rerank_weight: Vec::new(),
        out: dir.path().join("report"),
        json: false,
    };
    let summary = eval::run(&args).await.unwrap();
    assert!(summary.chart.is_file());
    let md = std::fs::read_to_string(&summary.report).unwrap();
    assert!(md.contains("BM25"), "{md}");
    assert_eq!(summary.rows[0].metrics.hit_at_1, 1.0);
}

#[test]
fn cloud_loop_example_reads_its_configuration_from_the_environment() {
    let vars = |pairs: &[(&str, &str)]| {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| map.get(k).cloned()
    };
    let err = cloud_loop::config_from_vars(vars(&[])).unwrap_err();
    assert!(format!("{err:#}").contains("RAGLOOP_BUCKET"));

    let c = cloud_loop::config_from_vars(vars(&[
        ("RAGLOOP_BUCKET", "my-bucket"),
        ("PAI_WORKSPACE_ID", "ws-1"),
        ("PAI_IMAGE", "img:1"),
        ("RAGLOOP_EMBED_MODEL", "oss://my-bucket/models/minilm/"),
        ("RAGLOOP_EMBED_TRAIN", "adapter"),
        ("RAGLOOP_EMBED_WORKERS", "3"),
        ("RAGLOOP_SEARCH_URL", "https://os.example:9200"),
        ("RAGLOOP_SEARCH_ENGINE", "opensearch"),
        ("DASHSCOPE_API_KEY", "sk-never-printed"),
    ]))
    .unwrap();
    let plan = ragloop::plan::plan(&c, vec!["ragloop".into()]).unwrap();
    for want in [
        "Plan for oss://my-bucket/",
        "PAI-DLC workspace ws-1",
        "3 jobs, e.g. ragloop embed --model oss://my-bucket/models/emb-v1/",
        "Opensearch index",
        "Bailian LLM",
    ] {
        assert!(plan.contains(want), "{want:?} not in\n{plan}");
    }
    assert!(!plan.contains("sk-never-printed"));

    // Without PAI, search or DashScope: OSS with local jobs, the HNSW index, extractive answers.
    let c = cloud_loop::config_from_vars(vars(&[("RAGLOOP_BUCKET", "bkt")])).unwrap();
    let plan = ragloop::plan::plan(&c, vec!["ragloop".into()]).unwrap();
    assert!(
        plan.contains("jobs: local processes") && plan.contains("Hnsw index"),
        "{plan}"
    );
    let bad = cloud_loop::config_from_vars(vars(&[
        ("RAGLOOP_BUCKET", "bkt"),
        ("RAGLOOP_EMBED_MODEL", "hashed"),
        ("RAGLOOP_EMBED_WORKERS", "2"),
    ]))
    .unwrap_err();
    assert!(
        format!("{bad:#}").contains("batch-embedding jobs run sentence"),
        "{bad:#}"
    );
}
