//! The `ragloop` binary as a user runs it.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::write_corpus;

fn ragloop() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ragloop"));
    // Pretrained models by name come from the copy `scripts/fetch-model.sh` made.
    c.env(
        "RAGLOOP_MODELS",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../models"),
    );
    c
}

#[test]
fn run_executes_the_whole_local_loop_and_reports_metrics_and_citations() {
    let dir = tempfile::tempdir().unwrap();
    let (data, queries) = write_corpus(dir.path());
    let out = ragloop()
        .args([
            "run",
            "--json",
            "--quick",
            "--dims",
            "128",
            "--question",
            "How do I send a signal?",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--queries")
        .arg(&queries)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ragloop run failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages: Vec<&str> = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "Ingest",
            "TrainEmbeddings",
            "FineTuneLlm",
            "Deploy",
            "Embed",
            "Index",
            "Answer"
        ]
    );
    // BM25, then the untrained and the trained hashed model, dense and hybrid.
    let eval = summary["evaluation"].as_array().unwrap();
    assert_eq!(eval.len(), 5);
    assert_eq!(eval[2]["retriever"], "dense hashed, trained (IDF)");
    assert_eq!(
        eval[0]["metrics"]["hit_at_1"], 1.0,
        "BM25 finds kill.2 first"
    );
    let answer = &summary["answer"];
    assert!(
        answer["text"].as_str().unwrap().contains("sends a signal"),
        "{answer}"
    );
    assert_eq!(answer["citations"][0]["doc_id"], "kill.2");

    // The evaluation report: the table and its chart in the work directory.
    let report = std::path::PathBuf::from(summary["report"].as_str().unwrap());
    assert_eq!(report, dir.path().join("work/eval-report.md"));
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains("| BM25 | 1.000 |"), "{md}");
    let png = std::fs::read(report.with_extension("png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");

    let work = dir.path().join("work");
    let rerun = || {
        ragloop()
            .args(["run", "--quick", "--dims", "128", "--queries", "none"])
            .arg("--data")
            .arg(&data)
            .arg("--work-dir")
            .arg(&work)
            .output()
            .unwrap()
    };
    let ask_signal = || {
        ragloop()
            .args(["ask", "--quick", "--json", "How do I send a signal?"])
            .arg("--work-dir")
            .arg(&work)
            .output()
            .unwrap()
    };
    // A second run resumes: everything is in place, nothing is trained or embedded again.
    let again = rerun();
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("already trained"), "{text}");
    assert!(text.contains("(0 written)"), "{text}");

    // `ask` finds what the quick run built when told the same mode and work dir.
    let ask = ask_signal();
    let stderr = String::from_utf8_lossy(&ask.stderr);
    assert!(ask.status.success(), "ragloop ask failed: {stderr}");
    let answer: serde_json::Value = serde_json::from_slice(&ask.stdout).unwrap();
    assert_eq!(answer["citations"][0]["doc_id"], "kill.2", "{answer}");

    // While another process writes the work directory (here: this test holds its lock), a
    // second run fails at once naming it — two runs once raced to "No such file or
    // directory" — and `ask`, which only reads, still answers.
    let held = rag_core::local::DirLock::acquire(&work, "test").unwrap();
    let second = rerun();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by pid {}", std::process::id())),
        "{stderr}"
    );
    let ask = ask_signal();
    assert!(
        ask.status.success(),
        "{}",
        String::from_utf8_lossy(&ask.stderr)
    );
    drop(held);
}

/// `--dry-run` prints the plan of exactly the configuration `run` would run: the defaults
/// with the flags applied.
#[test]
fn run_dry_run_shows_what_run_will_do_with_its_flags() {
    // From the repository's root, as the README runs it: stage 2 trains on the bundled
    // queries' train split (a corpus with neither queries nor an LLM trains nothing).
    let plan = |args: &[&str]| {
        let out = ragloop()
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["run", "--dry-run"])
            .args(args)
            .env_remove("RAGLOOP_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let default = plan(&[]);
    for want in [
        "data/manpages/docs → oss://ragloop-demo/raw-docs/",
        "job emb-v1-train",
        "train --data oss://ragloop-demo/raw-docs/ --output oss://ragloop-demo/models/emb-v1/",
        "--queries-split train --mine none",
        "all-MiniLM-L6-v2",
        "bm25, dense:base, dense, hybrid:base, hybrid on the \"test\" split of data/manpages/queries.jsonl.gz",
    ] {
        assert!(default.contains(want), "{want:?} not in\n{default}");
    }
    let neural = plan(&[
        "--model",
        "models/m",
        "--fine-tune",
        "full",
        "--dims",
        "64",
        "--queries",
        "none",
    ]);
    assert!(neural.contains("job emb-v1-train"), "{neural}");
    assert!(neural.contains("no query set: no evaluation"), "{neural}");
    assert!(!neural.contains("--dims"), "{neural}");
}

/// The training job opens the loop's own store (the description it is handed), so a
/// `file://` root means the same objects to both: the loop runs, and nothing is written to
/// the real `/ragloop-file-root-test/`.
#[test]
fn a_file_root_is_one_store_for_the_loop_and_its_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (data, _) = write_corpus(dir.path());
    let work = dir.path().join("work");
    let out = ragloop()
        .args([
            "run",
            "--json",
            "--quick",
            "--dims",
            "64",
            "--queries",
            "none",
            "--root",
            "file:///ragloop-file-root-test/",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let trained = work.join("store/ragloop-file-root-test/models/emb-v1/_SUCCESS");
    assert!(trained.is_file(), "{}", trained.display());
    assert!(!std::path::Path::new("/ragloop-file-root-test").exists());
}

#[test]
fn a_missing_data_directory_is_a_one_line_error_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let out = ragloop()
        .args([
            "run",
            "--quick",
            "--data",
            "/nonexistent/ragloop-data",
            "--queries",
            "none",
        ])
        .arg("--work-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn cp_uploads_and_downloads_a_tree_like_ossutil() {
    let server = oss_client::testing::S3TestServer::start();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(server.store("cli-bucket"))
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("man1")).unwrap();
    std::fs::write(src.path().join("man1/ls.1"), "list directory contents").unwrap();
    std::fs::write(src.path().join("notes.txt"), "notes").unwrap();
    let cp = |args: &[&str]| {
        ragloop()
            .arg("cp")
            .args(args)
            .args(["--endpoint", server.endpoint()])
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testing")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testing")
            .output()
            .unwrap()
    };
    let up = cp(&[
        "-r",
        src.path().to_str().unwrap(),
        "oss://cli-bucket/raw-docs/",
    ]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let text = String::from_utf8_lossy(&up.stdout);
    assert!(text.contains("2 files: 2 copied"), "{text}");

    let again = cp(&[
        "-r",
        src.path().to_str().unwrap(),
        "oss://cli-bucket/raw-docs/",
    ]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("2 unchanged"));

    let dst = tempfile::tempdir().unwrap();
    let down = cp(&[
        "-r",
        "oss://cli-bucket/raw-docs/",
        dst.path().to_str().unwrap(),
    ]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dst.path().join("man1/ls.1")).unwrap(),
        "list directory contents"
    );
}

#[test]
fn cp_without_credentials_says_which_variable_is_missing() {
    let out = ragloop()
        .args(["cp", "-r", ".", "oss://some-bucket/x/"])
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ALIBABA_CLOUD_ACCESS_KEY_ID is not set"),
        "{stderr}"
    );
}

fn pai(args: &[&str]) -> std::process::Output {
    ragloop()
        .arg("pai")
        .args(args)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIcli")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "cli-secret-value")
        .env("ALIBABA_CLOUD_SECURITY_TOKEN", "cli-sts-token")
        .output()
        .unwrap()
}

const SUBMIT: &[&str] = &[
    "submit",
    "--workspace",
    "ws-1",
    "--job-name",
    "emb-train",
    "--framework",
    "pytorch",
    "--script",
    "train_emb.py",
    "--data",
    "oss://bkt/raw-docs/",
    "--output",
    "oss://bkt/models/emb-v1/",
    "--image",
    "reg/trainer:1",
];

#[test]
fn pai_submit_dry_run_prints_the_signed_request_without_secrets() {
    let mut args = SUBMIT.to_vec();
    args.push("--dry-run");
    let out = pai(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("POST https://pai-dlc.cn-hangzhou.aliyuncs.com/api/v1/jobs\n"),
        "{text}"
    );
    assert!(
        text.contains("authorization: ACS3-HMAC-SHA256 Credential=LTAIcli,"),
        "{text}"
    );
    assert!(text.contains("x-acs-action: CreateJob"));
    assert!(text.contains("\"UserCommand\": \"python train_emb.py --data oss://bkt/raw-docs/ --output oss://bkt/models/emb-v1/\""), "{text}");
    assert!(
        !text.contains("cli-secret-value") && !text.contains("cli-sts-token"),
        "{text}"
    );
}

#[test]
fn pai_submit_sends_create_job_and_prints_the_job_id() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/jobs"))
            .and(header("x-acs-action", "CreateJob"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"JobId": "dlc7abc", "RequestId": "r-1"})),
            )
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/jobs/dlc7abc"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "JobId": "dlc7abc", "Status": "Failed", "ReasonCode": "JobFailed",
                "ReasonMessage": "exit code 1", "RequestId": "r-2"
            })))
            .mount(&server)
            .await;
        server
    });
    let mut args = SUBMIT.to_vec();
    let uri = server.uri();
    args.extend(["--endpoint", uri.as_str()]);
    let out = pai(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "submitted dlc7abc\n");
    rt.block_on(server.verify());

    // `pai status --json` for scripts: the status as rag-core serialises it.
    let out = ragloop()
        .args(["pai", "status", "--json", "dlc7abc"])
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIcli")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "cli-secret-value")
        .env("PAI_REGION", "cn-hangzhou")
        .env("PAI_WORKSPACE_ID", "ws-1")
        .env("PAI_DLC_ENDPOINT", &uri)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["job_id"], "dlc7abc");
    assert_eq!(
        status["status"],
        serde_json::json!({"state": "failed", "reason": "JobFailed: exit code 1"})
    );
}

/// Secrets given through the environment never reach the output, even with every log level on:
/// an OSS copy against moto (STS token included) and a PAI dry run, at `RUST_LOG=trace`.
#[test]
fn secrets_never_appear_in_output_or_trace_logs() {
    const SECRET: &str = "sk-never-print-7f3a9c";
    const TOKEN: &str = "sts-never-print-51be02";
    let server = oss_client::testing::S3TestServer::start();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(server.store("secret-bucket"))
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), "some text").unwrap();
    let with_secrets = |cmd: &mut Command| {
        cmd.env("RUST_LOG", "trace,aws_sigv4=trace,aws_smithy_runtime=trace")
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testing")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
            .env("ALIBABA_CLOUD_SECURITY_TOKEN", TOKEN)
            .env("DASHSCOPE_API_KEY", SECRET)
            .output()
            .unwrap()
    };
    let cp = with_secrets(
        ragloop()
            .args([
                "cp",
                "-r",
                src.path().to_str().unwrap(),
                "oss://secret-bucket/x/",
            ])
            .args(["--endpoint", server.endpoint()]),
    );
    let mut dry = SUBMIT.to_vec();
    dry.push("--dry-run");
    let pai = with_secrets(ragloop().arg("pai").args(&dry));
    for out in [&cp, &pai] {
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.is_empty(), "trace logging produced output");
        assert!(!all.contains(SECRET), "secret leaked: {all}");
        assert!(!all.contains(TOKEN), "STS token leaked");
    }
    assert!(
        cp.status.success(),
        "{}",
        String::from_utf8_lossy(&cp.stderr)
    );
}

/// A slice of the bundled corpus: its first `n` pages and the queries about them.
fn bundled_slice(dir: &std::path::Path, n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/manpages");
    let read = |rel: &str| {
        let path = root.join(rel);
        ragloop::queries::decode_text(rel, std::fs::read(&path).unwrap()).unwrap()
    };
    let corpus = read("docs/corpus.jsonl.gz");
    let pages: Vec<&str> = corpus.lines().take(n).collect();
    let ids: std::collections::HashSet<String> = pages
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .collect();
    let all_queries = read("queries.jsonl.gz");
    let queries: Vec<&str> = all_queries
        .lines()
        .filter(|l| {
            let q: serde_json::Value = serde_json::from_str(l).unwrap();
            q["relevant"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| ids.contains(&r.to_string()))
        })
        .collect();
    let docs = dir.join("slice");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("pages.jsonl"), pages.join("\n")).unwrap();
    let qpath = dir.join("queries.jsonl");
    std::fs::write(&qpath, queries.join("\n")).unwrap();
    (docs, qpath)
}

/// The README's main command as it is — no flags but the data: all-MiniLM-L6-v2 by name (from
/// the model cache), the adapter trained in stage 2 on the train split with chunk positives and
/// hard negatives, the base and trained models evaluated side by side — on a 100-page slice
/// of the bundled corpus, so CI runs the same code path in seconds. The rerun encodes nothing.
#[test]
fn the_neural_default_loop_runs_on_a_slice_of_the_bundled_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let (data, queries) = bundled_slice(dir.path(), 100);
    let work = dir.path().join("work");
    let run = || {
        let out = ragloop()
            .args([
                "run",
                "--json",
                "--question",
                "How do I get entries from the name service?",
            ])
            .arg("--data")
            .arg(&data)
            .arg("--queries")
            .arg(&queries)
            .arg("--work-dir")
            .arg(&work)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "ragloop run failed: {stderr}");
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (summary, stderr)
    };
    let (summary, _) = run();
    let train = summary["stages"][1]["summary"].as_str().unwrap();
    assert!(
        train.contains("(adapter) on the queries' train split"),
        "{train}"
    );
    let report =
        std::fs::read_to_string(work.join("store/ragloop-demo/models/emb-v1/training-report.md"))
            .unwrap();
    assert!(report.contains("hard negatives"), "{report}");
    let rows: Vec<&str> = summary["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[0], "BM25");
    assert!(
        rows.iter().any(|r| r.contains("all-MiniLM-L6-v2")),
        "{rows:?}"
    );
    for r in summary["evaluation"].as_array().unwrap() {
        let ndcg = r["metrics"]["ndcg_at_10"].as_f64().unwrap();
        assert!(ndcg > 0.3 && ndcg <= 1.0, "{r}");
    }
    assert_eq!(summary["answer"]["citations"][0]["doc_id"], "getent.1");
    // Hybrid fusion: the base model's weight chosen on the slice's train-split queries (the
    // trained model learnt them); the trained model's out of fold by its job (else the base
    // model's). Each hybrid row names its own; the served one is saved for `ask`.
    let details: Vec<&str> = summary["stages"][5]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(
        details[1].starts_with("hybrid fusion, base model: ")
            && details[1].contains("train-split queries with all-MiniLM-L6-v2:"),
        "{details:?}"
    );
    // 84 train-split queries in the slice, ~80 after the job's hold-out: enough to fold.
    assert!(details[0].contains("chosen out of fold on"), "{details:?}");
    let named = |row: &str| {
        row.rsplit_once(" (")
            .unwrap()
            .1
            .trim_end_matches(')')
            .to_string()
    };
    assert!(details[1].contains(&named(rows[3])), "{rows:?} {details:?}");
    assert!(details[0].contains(&named(rows[4])), "{rows:?} {details:?}");
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("store/ragloop-demo/fusion.json")).unwrap(),
    )
    .unwrap();
    assert!(
        details[0].ends_with(saved["reason"].as_str().unwrap()),
        "{saved}"
    );
    assert!(
        work.join("store/ragloop-demo/models/emb-v1/fusion.json")
            .is_file()
    );

    // A rerun with nothing changed trains and embeds nothing.
    let (again, _) = run();
    let train = again["stages"][1]["summary"].as_str().unwrap();
    assert!(
        train.contains("not run again") || train.contains("already"),
        "{train}"
    );
    let embed = again["stages"][4]["summary"].as_str().unwrap();
    assert!(embed.contains("(0 written"), "{embed}");
    // … and chooses the same fusions (the base model's reused: same queries and shards).
    assert_eq!(
        again["stages"][5]["details"],
        summary["stages"][5]["details"]
    );
    assert!(work.join("store/ragloop-demo/fusion-base.json").is_file());

    // Trained again (its output removed), stage 2 finds every chunk's vector in the cache.
    let model = work.join("store/ragloop-demo/models/emb-v1");
    std::fs::remove_file(model.join("_SUCCESS")).unwrap();
    run();
    let report = std::fs::read_to_string(model.join("training-report.md")).unwrap();
    let chunks: usize = report
        .split("the best of ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        report.contains(&format!("({chunks} from the cache)")),
        "{report}"
    );
}

/// `[rerank] backend = "local"` without a model: stage 2 trains a cross-encoder from the
/// embedding model's encoder as a second job, which chooses its weight against the search's
/// order (the prior here: the slice holds out too few queries to choose on); the answer and
/// the report's reranked row use it; a rerun trains nothing.
#[test]
fn a_reranker_trained_in_stage_2_reranks_the_answer_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let (data, queries) = bundled_slice(dir.path(), 40);
    let config = dir.path().join("ragloop.toml");
    std::fs::write(
        &config,
        "[embedding]\ntrain = \"none\"\n[rerank]\nbackend = \"local\"\ncandidates = 20\n",
    )
    .unwrap();
    let work = dir.path().join("work");
    let run = || {
        let out = ragloop()
            .args(["run", "--json", "--question", "How do I print a file?"])
            .arg("--config")
            .arg(&config)
            .arg("--data")
            .arg(&data)
            .arg("--queries")
            .arg(&queries)
            .arg("--work-dir")
            .arg(&work)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "ragloop run failed: {stderr}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let summary = run();
    let stages = summary["stages"].as_array().unwrap();
    let line = stages[2]["summary"].as_str().unwrap();
    assert!(
        line.contains("trained a cross-encoder reranker from all-MiniLM-L6-v2"),
        "{line}"
    );
    let output = work.join("store/ragloop-demo/models/emb-v1-reranker");
    assert!(output.join("_SUCCESS").is_file());
    let choice: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("rerank.json")).unwrap()).unwrap();
    assert_eq!(choice["weight"], 0.5, "{choice}");
    assert!(
        choice["reason"].as_str().unwrap().contains("the prior"),
        "{choice}"
    );
    let rows: Vec<&str> = summary["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    let reranked = rows.last().unwrap();
    assert!(
        reranked.contains("→ rerank top 20 with") && reranked.ends_with("weight 0.5"),
        "{rows:?}"
    );
    for r in summary["evaluation"].as_array().unwrap() {
        let ndcg = r["metrics"]["ndcg_at_10"].as_f64().unwrap();
        assert!(ndcg > 0.3 && ndcg <= 1.0, "{r}");
    }
    assert!(
        !summary["answer"]["citations"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{summary}"
    );

    let again = run();
    let line = again["stages"][2]["summary"].as_str().unwrap();
    assert!(line.contains("already trained"), "{line}");
    assert_eq!(again["evaluation"], summary["evaluation"]);
}

#[test]
fn sizes_a_user_types_are_bounded_before_anything_runs() {
    // `--dims 4000000000` once trained a 4e9-dimension model, then embedding was OOM-killed.
    for args in [
        &[
            "train",
            "--dims",
            "4000000000",
            "--data",
            "d",
            "--output",
            "o",
        ][..],
        &["run", "--quick", "--dims", "4000000000"],
        &["train", "--batch-size", "0", "--data", "d", "--output", "o"],
    ] {
        let out = ragloop().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is not in 1..="), "{args:?}: {stderr}");
    }
}

#[test]
fn passages_both_is_refused_for_the_adapter_before_anything_loads() {
    let out = ragloop()
        .args([
            "train",
            "--base-model",
            "/nonexistent/model",
            "--mode",
            "adapter",
            "--passages",
            "both",
            "--data",
            "/nonexistent/docs",
            "--output",
            "o",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--passages both is for full fine-tuning"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let out = ragloop()
        .args(["run", "--config", "/nonexistent/ragloop.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the config file /nonexistent/ragloop.toml does not exist"),
        "{stderr}"
    );
}
