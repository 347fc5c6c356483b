//! `ragloop run --config`, `ingest`, `index`, `ask` and `bailian` as a user runs them: an all-local
//! configuration end to end, OSS on a real S3 server (moto) with an OpenAI-compatible LLM
//! (wiremock), Elasticsearch and OpenSearch (vector-store's fake clusters), Bailian deployments
//! on the documented wire format, dry runs and missing credentials.

#![allow(clippy::unwrap_used)]

mod support;

// vector-store's fake Elasticsearch 8 / OpenSearch 2 cluster (the wire format, on wiremock).
#[path = "../../vector-store/tests/support/fake_cluster.rs"]
mod fake_cluster;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{CitingLlm, FakeDashScope, model_dir, walk, write_corpus};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const SECRETS: [&str; 6] = [
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "DASHSCOPE_API_KEY",
    "RAGLOOP_SEARCH_API_KEY",
    "PAI_WORKSPACE_ID",
    "RAGLOOP_CONFIG",
];

fn ragloop(dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_ragloop"));
    c.current_dir(dir);
    for v in SECRETS {
        c.env_remove(v);
    }
    c
}

/// Two man pages and one test query, plus a configuration file with `extra` appended.
fn project(extra: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write_corpus(dir.path());
    let config = dir.path().join("ragloop.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"docs\"\nwork_dir = \"work\"\n[embedding]\ndims = 128\n\
             [eval]\nqueries = \"queries.jsonl\"\nquestion = \"How do I send a signal?\"\n{extra}"
        ),
    )
    .unwrap();
    (dir, config)
}

async fn json_of(cmd: &mut tokio::process::Command) -> Value {
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Stage 3's summary line holds `fine_tuned` and stage 4's holds `deployed`: the model the
/// fine-tune wrote is the one deployed.
fn assert_hand_off(summary: &Value, fine_tuned: &str, deployed: &str) {
    let line = |i: usize| {
        summary["stages"][i]["summary"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (ft, dep) = (line(2), line(3));
    assert!(ft.contains(fine_tuned), "stage 3: {ft}");
    assert!(dep.contains(deployed), "stage 4: {dep}");
}

fn stage_names(summary: &Value) -> Vec<String> {
    summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_local_config_runs_the_loop_and_ingest_index_ask_reuse_it() {
    let (dir, config) = project("[index]\nbackend = \"hnsw\"\n");
    // Nothing trained yet: `ask` says what to run, with the not-found status.
    let early = ragloop(dir.path())
        .args(["ask", "why?"])
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&early.stderr);
    assert_eq!(early.status.code(), Some(4), "{err}");
    assert!(err.contains("run stage 2: `ragloop run`"), "{err}");
    let summary = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    assert_eq!(
        stage_names(&summary),
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
    let rows: Vec<&str> = summary["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0] == "BM25" && rows[1].starts_with("dense ") && rows[2].starts_with("hybrid"));
    for r in summary["evaluation"].as_array().unwrap() {
        assert_eq!(r["metrics"]["hit_at_1"], 1.0, "{r}");
    }
    let citation = &summary["answer"]["citations"][0];
    assert_eq!(citation["doc_id"], "kill.2");
    assert!(citation["end"].as_u64().unwrap() > citation["start"].as_u64().unwrap());
    assert!(dir.path().join("work/eval-report.png").is_file());
    // The HNSW index (vector-store) served it and saved its graph.
    assert!(dir.path().join("work/index/rag-index/ann.json").is_file());

    // The same configuration drives the single-stage commands (found as ./ragloop.toml).
    let ingest = json_of(ragloop(dir.path()).args(["ingest", "--json"])).await;
    assert!(
        ingest["summary"]
            .as_str()
            .unwrap()
            .starts_with("0 files uploaded"),
        "{ingest}"
    );
    let index = json_of(ragloop(dir.path()).args(["index", "--json"])).await;
    assert!(
        index["summary"]
            .as_str()
            .unwrap()
            .contains("2 in rag-index"),
        "{index}"
    );
    let answer = json_of(ragloop(dir.path()).args([
        "ask",
        "--json",
        "How do I duplicate a file descriptor?",
    ]))
    .await;
    assert_eq!(answer["citations"][0]["doc_id"], "dup.2", "{answer}");
    let source = answer["citations"][0]["source"].as_str().unwrap();
    assert!(source.contains("raw-docs/pages.jsonl"), "{source}");

    // New documents: ingest uploads only them.
    std::fs::write(
        dir.path().join("docs/ls.1"),
        "NAME\n   ls - list directory contents\n",
    )
    .unwrap();
    let ingest = json_of(ragloop(dir.path()).args(["ingest", "--json"])).await;
    assert!(
        ingest["summary"]
            .as_str()
            .unwrap()
            .starts_with("1 files uploaded"),
        "{ingest}"
    );
}

#[tokio::test]
async fn stage_5_as_two_embedding_jobs_with_a_sentence_transformers_model() {
    let model = model_dir();
    let (dir, config) = project(&format!(
        "[embedding]\nmodel = \"{}\"\nworkers = 2\n",
        model.display()
    ));
    // `[embedding]` twice is a TOML error: fold the test's line into the one table.
    let text =
        std::fs::read_to_string(&config)
            .unwrap()
            .replacen("[embedding]\ndims = 128\n", "", 1);
    std::fs::write(&config, text).unwrap();
    let summary = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    let stages = summary["stages"].as_array().unwrap();
    assert!(
        stages[1]["summary"]
            .as_str()
            .unwrap()
            .starts_with("skipped"),
        "{}",
        stages[1]
    );
    let embed = stages[4]["summary"].as_str().unwrap();
    assert!(embed.starts_with("2 jobs embedded the corpus"), "{embed}");
    let jobs = std::fs::read_dir(dir.path().join("work/jobs/jobs"))
        .unwrap()
        .count();
    assert_eq!(jobs, 2);
    assert!(
        stages[5]["summary"]
            .as_str()
            .unwrap()
            .contains("2 in rag-index"),
        "{}",
        stages[5]
    );
    assert_eq!(
        summary["answer"]["citations"][0]["doc_id"], "kill.2",
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oss_on_a_real_s3_server_and_an_openai_llm_with_token_summary() {
    let s3 = oss_client::testing::S3TestServer::start();
    s3.store("cfg-bucket").await.unwrap();
    let llm = MockServer::start().await;
    // The LLM's key is sent (the mock only answers with it) …
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer sk-llm-secret-4242",
        ))
        .respond_with(CitingLlm { question: None })
        .expect(1)
        .mount(&llm)
        .await;
    let (dir, config) = project(&format!(
        "[store]\nbackend = \"oss\"\nendpoint = \"{}\"\n\
         [llm]\nbackend = \"openai\"\nbase_url = \"{}/v1\"\nmodel = \"qwen2.5\"\n",
        s3.endpoint(),
        llm.uri()
    ));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("root = \"oss://cfg-bucket/rag/\"\n{text}")).unwrap();
    // A file whose path has spaces and non-ASCII letters goes through every stage by name.
    let odd = dir.path().join("docs/man pages");
    std::fs::create_dir_all(&odd).unwrap();
    std::fs::write(
        odd.join("signaux ünïcode 文档.txt"),
        "Sending signals: use kill(1) from the shell to signal a process by its PID.",
    )
    .unwrap();
    // … and, like the AccessKey secret, never printed: the whole run at `trace` level, its
    // summary and the training job's log hold neither.
    let secrets = ["sEcReT-access-key-7781", "sk-llm-secret-4242"];
    let out = ragloop(dir.path())
        .args(["run", "--json", "--config"])
        .arg(&config)
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-test-id")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secrets[0])
        .env("RAGLOOP_LLM_API_KEY", secrets[1])
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.len() > 10_000, "trace logging was on");
    let mut printed = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
    for log in walk(&dir.path().join("work")) {
        printed.push_str(&String::from_utf8_lossy(&std::fs::read(log).unwrap()));
    }
    for secret in secrets {
        assert!(!printed.contains(secret), "{secret} was printed");
    }
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The training job (a child process) read and wrote OSS as well.
    assert!(
        summary["stages"][1]["summary"]
            .as_str()
            .unwrap()
            .contains("oss://cfg-bucket/rag/models/emb-v1/"),
        "{summary}"
    );
    assert_eq!(
        summary["answer"]["text"]
            .as_str()
            .unwrap()
            .split('[')
            .next()
            .unwrap(),
        "kill() sends a signal. "
    );
    assert_eq!(summary["answer"]["citations"][0]["doc_id"], "kill.2");
    assert_eq!(summary["stages"][6]["tokens"], 158);
    assert_eq!(summary["total_tokens"], 158);
    let store = s3.store("cfg-bucket").await.unwrap();
    let listed: Vec<rag_core::ObjectMeta> = futures::TryStreamExt::try_collect(
        rag_core::ObjectStore::list(&store, &"oss://cfg-bucket/rag/".parse().unwrap()),
    )
    .await
    .unwrap();
    let keys: Vec<&str> = listed.iter().map(|m| m.uri.key()).collect();
    let index = summary["stages"][5]["summary"].as_str().unwrap();
    assert!(index.contains("3 in rag-index"), "{index}");
    for want in [
        "rag/raw-docs/pages.jsonl",
        "rag/raw-docs/man pages/signaux ünïcode 文档.txt",
        "rag/models/emb-v1/_SUCCESS",
    ] {
        assert!(keys.contains(&want), "{want} not in {keys:?}");
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with("rag/vector-indexes/") && k.ends_with(".parquet")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn cloud_config_dry_run_needs_no_credentials_and_a_real_run_names_the_missing_one() {
    let cloud = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/cloud.toml");
    let dir = tempfile::tempdir().unwrap();
    let out = ragloop(dir.path())
        .args(["run", "--dry-run", "--config"])
        .arg(&cloud)
        .output()
        .await
        .unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "PAI-DLC workspace your-workspace-id",
        "job emb-v1-train → oss://my-rag-bucket/models/emb-v1/",
        "4 jobs, e.g. ragloop embed --model oss://my-rag-bucket/models/emb-v1/",
        "--worker 0 --workers 4",
        "Bailian fine-tune of qwen2.5-7b-instruct",
        "Elasticsearch index \"rag-index\"",
    ] {
        assert!(plan.contains(want), "{want:?} not in\n{plan}");
    }

    let out = ragloop(dir.path())
        .args(["run", "--config"])
        .arg(&cloud)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "credentials: exit status 3");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("ALIBABA_CLOUD_ACCESS_KEY_ID"), "{err}");

    // A local store with a Bailian LLM: the DashScope key is the one named.
    let (dir, config) = project("[llm]\nbackend = \"bailian\"\n");
    let out = ragloop(dir.path())
        .args(["ask", "what?", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(err.contains("DASHSCOPE_API_KEY"), "{err}");

    // A typo in the file: the line and the key.
    std::fs::write(&config, "[index]\nbakend = \"hnsw\"\n").unwrap();
    let out = ragloop(dir.path()).args(["index"]).output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "configuration mistake: exit status 2"
    );
    assert!(
        err.contains("line 2 (bakend = \"hnsw\"): unknown field `bakend`"),
        "{err}"
    );
}

/// Model Studio deployments as the API reference shows them: created `PENDING`, serving after
/// a poll.
struct Deployments;

impl Respond for Deployments {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let envelope = |output: Value| {
            ResponseTemplate::new(200).set_body_json(json!({"request_id": "r-1", "output": output}))
        };
        match (req.method.as_str(), req.url.path()) {
            ("GET", "/api/v1/deployments") => {
                envelope(json!({"deployments": [], "page_no": 1, "page_size": 100, "total": 0}))
            }
            ("POST", "/api/v1/deployments") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                assert_eq!(body["model_name"], "qwen2.5-7b-instruct-ft-202611");
                assert_eq!(body["capacity"], 2);
                envelope(
                    json!({"deployed_model": "qwen2.5-7b-instruct-ft-202611-llm-ft",
                                "status": "PENDING", "model_name": body["model_name"],
                                "capacity": 2, "ready_capacity": 0}),
                )
            }
            ("GET", "/api/v1/deployments/qwen2.5-7b-instruct-ft-202611-llm-ft") => envelope(
                json!({"deployed_model": "qwen2.5-7b-instruct-ft-202611-llm-ft",
                       "status": "RUNNING", "model_name": "qwen2.5-7b-instruct-ft-202611",
                       "capacity": 2, "ready_capacity": 2}),
            ),
            other => ResponseTemplate::new(404)
                .set_body_json(json!({"code": "NotFound", "message": format!("{other:?}")})),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bailian_deploy_waits_until_serving_and_status_reports_it() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(Deployments)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let native = format!("{}/api/v1", server.uri());
    let dry = ragloop(dir.path())
        .args([
            "bailian",
            "deploy",
            "--dry-run",
            "--capacity",
            "2",
            "--model",
            "qwen2.5-7b-instruct-ft-202611",
        ])
        .env("DASHSCOPE_NATIVE_BASE_URL", &native)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.starts_with(&format!("POST {native}/deployments")),
        "{text}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());

    let deployed = json_of(
        ragloop(dir.path())
            .args([
                "bailian",
                "deploy",
                "--wait",
                "--json",
                "--capacity",
                "2",
                "--model",
                "qwen2.5-7b-instruct-ft-202611",
            ])
            .env("DASHSCOPE_NATIVE_BASE_URL", &native)
            .env("DASHSCOPE_API_KEY", "sk-test-key"),
    )
    .await;
    assert_eq!(deployed["status"], "running", "{deployed}");
    assert_eq!(deployed["id"], "qwen2.5-7b-instruct-ft-202611-llm-ft");
    let auth = server.received_requests().await.unwrap();
    assert!(
        auth.iter()
            .all(|r| r.headers["authorization"] == "Bearer sk-test-key")
    );

    let status = ragloop(dir.path())
        .args(["bailian", "status", "qwen2.5-7b-instruct-ft-202611-llm-ft"])
        .env("DASHSCOPE_NATIVE_BASE_URL", &native)
        .env("DASHSCOPE_API_KEY", "sk-test-key")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("running"), "{text}");
    assert!(!text.contains("sk-test-key"));

    let missing = ragloop(dir.path())
        .args(["bailian", "status"])
        .env("DASHSCOPE_NATIVE_BASE_URL", &native)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(3));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DASHSCOPE_API_KEY"), "{err}");
}

/// PAI-DLC as its API reference shows it (CreateJob, GetJob, GetPodLogs), running each job's
/// `UserCommand` as a local process — the container — with the job's `Envs` plus what the
/// container would carry (credentials).
#[derive(Clone)]
struct ContainerDlc {
    jobs: std::sync::Arc<std::sync::Mutex<Vec<(std::process::Child, PathBuf, Value)>>>,
    container_env: Vec<(String, String)>,
    dir: PathBuf,
}

impl ContainerDlc {
    /// A fake DLC on a new wiremock server whose containers run in `dir` with test
    /// credentials.
    async fn serve(dir: &Path) -> (Self, MockServer) {
        let dlc = ContainerDlc {
            jobs: Default::default(),
            container_env: vec![
                ("ALIBABA_CLOUD_ACCESS_KEY_ID".into(), "testing".into()),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET".into(), "testing".into()),
            ],
            dir: dir.to_path_buf(),
        };
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(dlc.clone())
            .mount(&server)
            .await;
        (dlc, server)
    }
}

impl Respond for ContainerDlc {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let parts: Vec<&str> = req.url.path().trim_matches('/').split('/').collect();
        let mut jobs = self.jobs.lock().unwrap();
        match (req.method.as_str(), parts.as_slice()) {
            ("POST", ["api", "v1", "jobs"]) => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let id = format!("dlc{:08}", jobs.len() + 1);
                let log_path = self.dir.join(format!("{id}.log"));
                let log = std::fs::File::create(&log_path).unwrap();
                let envs = body["Envs"].as_object().unwrap();
                let child = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(body["UserCommand"].as_str().unwrap())
                    .current_dir(&self.dir)
                    .envs(
                        envs.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())),
                    )
                    .envs(self.container_env.iter().cloned())
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap();
                jobs.push((child, log_path, body));
                ResponseTemplate::new(200)
                    .set_body_json(json!({"JobId": id, "RequestId": "req-create"}))
            }
            ("GET", ["api", "v1", "jobs", id]) => {
                let n: usize = id.trim_start_matches("dlc").parse().unwrap();
                let (child, _, _) = &mut jobs[n - 1];
                let (status, msg) = match child.try_wait().unwrap() {
                    None => ("Running", String::new()),
                    Some(s) if s.success() => ("Succeeded", String::new()),
                    Some(s) => ("Failed", format!("exit {s}")),
                };
                ResponseTemplate::new(200).set_body_json(json!({
                    "JobId": id, "JobType": "PyTorchJob", "Status": status,
                    "ReasonCode": if msg.is_empty() { "" } else { "JobFailed" }, "ReasonMessage": msg,
                    "Pods": [{"PodId": format!("{id}-worker-0"), "Type": "Worker", "Status": status}],
                    "RequestId": "req-get"
                }))
            }
            ("GET", ["api", "v1", "jobs", id, "pods", pod, "logs"]) => {
                let n: usize = id.trim_start_matches("dlc").parse().unwrap();
                let text = std::fs::read_to_string(&jobs[n - 1].1).unwrap_or_default();
                ResponseTemplate::new(200).set_body_json(json!({
                    "JobId": id, "PodId": pod, "RequestId": "req-logs",
                    "Logs": text.lines().collect::<Vec<_>>()
                }))
            }
            other => ResponseTemplate::new(404).set_body_json(
                json!({"Code": "NotFound", "Message": format!("{other:?}"), "RequestId": "r"}),
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cloud_loop_on_oss_and_pai_dlc_trains_and_embeds_with_two_workers() {
    let model = model_dir();
    let s3 = oss_client::testing::S3TestServer::start();
    let store = s3.store("pai-bucket").await.unwrap();
    // The base model is in the bucket, as `ragloop cp -r models/… oss://…` puts it.
    for entry in walk(&model) {
        let rel = entry.strip_prefix(&model).unwrap().display().to_string();
        let uri: rag_core::StoreUri = format!("oss://pai-bucket/models/minilm/{rel}")
            .parse()
            .unwrap();
        rag_core::ObjectStore::put(&store, &uri, std::fs::read(&entry).unwrap().into())
            .await
            .unwrap();
    }
    let containers = tempfile::tempdir().unwrap();
    let (dlc, pai) = ContainerDlc::serve(containers.path()).await;
    let (dir, config) = project("");
    let text =
        std::fs::read_to_string(&config)
            .unwrap()
            .replacen("[embedding]\ndims = 128\n", "", 1);
    std::fs::write(
        &config,
        format!(
            "root = \"oss://pai-bucket/\"\n{text}\
             [store]\nbackend = \"oss\"\nendpoint = \"{}\"\n\
             [jobs]\nbackend = \"pai\"\nworkspace_id = \"ws-1\"\nimage = \"ragloop:test\"\n\
             endpoint = \"{}\"\ncommand = [\"{}\"]\n\
             [embedding]\nmodel = \"oss://pai-bucket/models/minilm/\"\ntrain = \"adapter\"\nworkers = 2\n",
            s3.endpoint(),
            pai.uri(),
            env!("CARGO_BIN_EXE_ragloop")
        ),
    )
    .unwrap();
    let summary = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config)
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testing")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testing"),
    )
    .await;
    let stages = summary["stages"].as_array().unwrap();
    let train = stages[1]["summary"].as_str().unwrap();
    assert!(
        train.starts_with("job dlc00000001 (emb-v1-train) trained"),
        "{train}"
    );
    assert!(
        stages[4]["summary"]
            .as_str()
            .unwrap()
            .starts_with("2 jobs embedded"),
        "{}",
        stages[4]
    );
    assert_eq!(
        summary["answer"]["citations"][0]["doc_id"], "kill.2",
        "{summary}"
    );

    // What PAI received: three PyTorchJobs on the image, the store's endpoint in the
    // environment, the base model and mode for training, a worker index per embedding job —
    // and no credential anywhere.
    let jobs = dlc.jobs.lock().unwrap();
    let bodies: Vec<&Value> = jobs.iter().map(|(_, _, b)| b).collect();
    assert_eq!(bodies.len(), 3);
    for b in &bodies {
        assert_eq!(b["JobSpecs"][0]["Image"], "ragloop:test");
        assert_eq!(b["Envs"]["OSS_ENDPOINT"], s3.endpoint());
        assert!(!b.to_string().contains("ALIBABA_CLOUD_ACCESS_KEY"), "{b}");
    }
    assert_eq!(
        bodies[0]["Envs"]["RAGLOOP_BASE_MODEL"],
        "oss://pai-bucket/models/minilm/"
    );
    assert_eq!(bodies[0]["Envs"]["RAGLOOP_HP_MODE"], "adapter");
    for (i, b) in bodies[1..].iter().enumerate() {
        let cmd = b["UserCommand"].as_str().unwrap();
        assert!(cmd.contains(&format!("--worker {i} --workers 2")), "{cmd}");
        assert!(
            cmd.contains("--model oss://pai-bucket/models/emb-v1/"),
            "{cmd}"
        );
    }
}

/// Stages 3 and 4 offline: `ragloop qa-pairs` builds the dataset, a local job runs the example
/// trainer script on it, the local deployer registers the output.
#[tokio::test]
async fn stage_3_trains_on_the_built_dataset_and_stage_4_deploys_it_offline() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/train_llm_local.py");
    let (dir, config) = project(&format!(
        "[llm_fine_tune]\nbackend = \"local\"\nbase_model = \"tiny-llm\"\n\
         command = [\"python3\", \"{}\"]\nhyper_parameters = {{ n_epochs = 2 }}\n\
         [deploy]\nbackend = \"local\"\n",
        script.display()
    ));
    // Without a dataset, stage 3 says how to build one (not found: status 4).
    let out = ragloop(dir.path())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("ragloop qa-pairs"), "{err}");

    let manifest =
        json_of(ragloop(dir.path()).args(["qa-pairs", "--json", "--validation", "0"])).await;
    assert_eq!(manifest["format"], "ragloop-qa-pairs/1");
    let train = manifest["train"].as_u64().unwrap();
    assert!(train >= 1, "{manifest}");
    let qa = dir
        .path()
        .join("work/store/ragloop-demo/qa-pairs/train.jsonl");
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&qa)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["messages"][2]["role"], "assistant");

    // Your own pairs replace the generated ones, checked the same way.
    std::fs::write(
        dir.path().join("mine.jsonl"),
        "{\"question\": \"What is 2+2?\", \"answer\": \"4\", \"context\": \"2+2 is 4.\"}\n\
         {\"question\": \"broken\"\n",
    )
    .unwrap();
    let manifest = json_of(ragloop(dir.path()).args([
        "qa-pairs",
        "--json",
        "--validation",
        "0",
        "--allow-uncited",
        "--pairs",
        "mine.jsonl",
    ]))
    .await;
    assert_eq!(manifest["generator"], "user");
    assert_eq!(manifest["dropped"]["bad_line"], 1, "{manifest}");
    let train = manifest["train"].as_u64().unwrap();
    assert_eq!(train, 1);

    let summary = json_of(
        ragloop(dir.path())
            .args(["run", "--json", "--config"])
            .arg(&config),
    )
    .await;
    assert_hand_off(
        &summary,
        "fine-tuned tiny-llm → oss://ragloop-demo/models/llm-ft/",
        "serves oss://ragloop-demo/models/llm-ft/",
    );
    let card: Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join("work/store/ragloop-demo/models/llm-ft/model-card.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(card["train_examples"].as_u64(), Some(train));
    assert_eq!(card["hyper_parameters"]["n_epochs"], "2");
    assert_eq!(card["base_model"], "tiny-llm");
}

/// The seed's steps 3 → 4 → 7 on Bailian: the dataset written by the (DashScope) LLM, the
/// fine-tune on Model Studio, its model deployed, and the answer from the deployment — then a
/// failed fine-tune and a deployment that never serves (undeployed, clear error).
#[tokio::test(flavor = "multi_thread")]
async fn bailian_fine_tune_hands_its_model_to_the_deployment_that_answers() {
    let run = |fake: FakeDashScope, timeout: u64| async move {
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(fake)
            .mount(&server)
            .await;
        let (dir, config) = project(&format!(
            "[llm]\nbackend = \"bailian\"\n\
             [llm_fine_tune]\nbackend = \"bailian\"\nbase_model = \"qwen2.5-7b-instruct\"\n\
             hyper_parameters = {{ n_epochs = 2 }}\n\
             [deploy]\nbackend = \"bailian\"\ntimeout_secs = {timeout}\n"
        ));
        let env = |c: &mut tokio::process::Command| {
            c.env("DASHSCOPE_API_KEY", "sk-handoff")
                .env(
                    "DASHSCOPE_BASE_URL",
                    format!("{}/compatible-mode/v1", server.uri()),
                )
                .env(
                    "DASHSCOPE_NATIVE_BASE_URL",
                    format!("{}/api/v1", server.uri()),
                );
        };
        let mut ingest = ragloop(dir.path());
        ingest.args(["ingest", "--json"]);
        env(&mut ingest);
        json_of(&mut ingest).await;
        let mut qa = ragloop(dir.path());
        qa.args(["qa-pairs", "--json", "--validation", "0"]);
        env(&mut qa);
        let manifest = json_of(&mut qa).await;
        let mut run = ragloop(dir.path());
        run.args(["run", "--json", "--config"]).arg(&config);
        env(&mut run);
        let out = run.output().await.unwrap();
        (dir, server, manifest, out)
    };

    let fake = FakeDashScope::default();
    let (dir, _server, manifest, out) = run(fake.clone(), 60).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The dataset was written by the LLM (one question asked per chunk).
    assert_eq!(manifest["generator"], "qwen-plus");
    assert!(manifest["train"].as_u64().unwrap() >= 1, "{manifest}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deployed = "qwen2.5-7b-instruct-ft-ft-202611261000-0001-llm-ft";
    assert_hand_off(
        &summary,
        "job ft-202611261000-0001 fine-tuned qwen2.5-7b-instruct",
        deployed,
    );
    // The record the fine-tune left for the deployment, and the answer from the deployment.
    let record: Value = serde_json::from_slice(
        &std::fs::read(
            dir.path()
                .join("work/store/ragloop-demo/models/llm-ft/bailian-model.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["finetuned_output"],
        "qwen2.5-7b-instruct-ft-ft-202611261000-0001"
    );
    {
        let st = fake.state.lock().unwrap();
        assert_eq!(st.chat_models.last().unwrap(), deployed);
        let (create, _) = st.jobs.values().next().unwrap();
        assert_eq!(create["hyper_parameters"]["n_epochs"], 2);
        assert_eq!(create["training_file_ids"].as_array().unwrap().len(), 1);
        assert!(st.files.values().next().unwrap().contains("\"messages\""));
    }
    assert_eq!(summary["answer"]["citations"][0]["doc_id"], "kill.2");

    // A fine-tune that fails: the vendor's reason, exit status 1, nothing deployed.
    let failing = FakeDashScope {
        fail_fine_tune: true,
        ..Default::default()
    };
    let (_dir, _server, _, out) = run(failing.clone(), 60).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("InvalidDataFormat"), "{err}");
    assert!(failing.state.lock().unwrap().deployments.is_empty());

    // A deployment that never serves: a time-out (status 5) that says it was undeployed.
    let stuck = FakeDashScope {
        never_ready: true,
        ..Default::default()
    };
    let (_dir, _server, _, out) = run(stuck.clone(), 2).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("was undeployed"), "{err}");
    let st = stuck.state.lock().unwrap();
    assert!(
        st.deployments.values().all(|(_, deleted)| *deleted),
        "{:?}",
        st.deployments
    );
}

/// Seed step 3 on PAI-DLC: a DeepSpeed job (the fake DLC runs its command as a container
/// process) writes the model to OSS, and stage 4 registers it; a job that fails brings its
/// reason and the end of its log.
#[tokio::test(flavor = "multi_thread")]
async fn pai_llm_fine_tune_writes_the_model_that_stage_4_deploys() {
    let s3 = oss_client::testing::S3TestServer::start();
    s3.store("llm-bucket").await.unwrap();
    let containers = tempfile::tempdir().unwrap();
    let weights = containers.path().join("weights");
    std::fs::create_dir_all(&weights).unwrap();
    std::fs::write(weights.join("adapter_model.safetensors"), b"trained").unwrap();
    std::fs::write(weights.join("_SUCCESS"), b"").unwrap();
    let (dlc, pai) = ContainerDlc::serve(containers.path()).await;
    // The "trainer": copies finished weights to --output ($4 of the appended arguments).
    let trainer = format!(
        "exec {} cp -r {} \"$4\" --endpoint {}",
        env!("CARGO_BIN_EXE_ragloop"),
        weights.display(),
        s3.endpoint()
    );
    let config_for = |script: &str| {
        format!(
            "[store]\nbackend = \"oss\"\nendpoint = \"{}\"\n\
             [jobs]\nworkspace_id = \"ws-1\"\nimage = \"trainer:1\"\nendpoint = \"{}\"\n\
             [llm_fine_tune]\nbackend = \"pai\"\nbase_model = \"qwen-7b\"\n\
             command = [\"sh\", \"-c\", {}, \"sh\"]\n\
             [deploy]\nbackend = \"local\"\n",
            s3.endpoint(),
            pai.uri(),
            serde_json::to_string(script).unwrap()
        )
    };
    let keys = |c: &mut tokio::process::Command| {
        c.env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testing")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testing");
    };
    // A project on `bucket` whose stage 3 runs `trainer`, ingested and with its dataset built.
    let prepare = async |bucket: &str, trainer: &str| {
        let (dir, config) = project("");
        let text = std::fs::read_to_string(&config).unwrap();
        let root = format!("root = \"oss://{bucket}/\"\n");
        std::fs::write(&config, format!("{root}{text}{}", config_for(trainer))).unwrap();
        for args in [
            &["ingest", "--json"][..],
            &["qa-pairs", "--json", "--validation", "0"],
        ] {
            let mut c = ragloop(dir.path());
            c.args(args);
            keys(&mut c);
            json_of(&mut c).await;
        }
        (dir, config)
    };
    let (dir, config) = prepare("llm-bucket", &trainer).await;
    let mut run = ragloop(dir.path());
    run.args(["run", "--json", "--config"]).arg(&config);
    keys(&mut run);
    let summary = json_of(&mut run).await;
    assert_hand_off(
        &summary,
        "job dlc00000001 fine-tuned qwen-7b → oss://llm-bucket/models/llm-ft/",
        "serves oss://llm-bucket/models/llm-ft/",
    );
    {
        let jobs = dlc.jobs.lock().unwrap();
        let body = &jobs.last().unwrap().2;
        assert_eq!(body["JobType"], "PyTorchJob");
        assert_eq!(body["Envs"]["RAGLOOP_BASE_MODEL"], "qwen-7b");
        assert_eq!(
            body["Envs"]["RAGLOOP_INPUT_DATA"],
            "oss://llm-bucket/qa-pairs/"
        );
        assert!(
            body["UserCommand"]
                .as_str()
                .unwrap()
                .contains("--output oss://llm-bucket/models/llm-ft/")
        );
    }

    // A job that fails: its reason and the end of its log (another bucket: the first run's
    // model is complete in this one).
    s3.store("llm-bucket-2").await.unwrap();
    let failing = "echo 'CUDA out of memory at step 3' >&2; exit 3";
    let (dir, config) = prepare("llm-bucket-2", failing).await;
    let mut run = ragloop(dir.path());
    run.args(["run", "--config"]).arg(&config);
    keys(&mut run);
    let out = run.output().await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CUDA out of memory at step 3"), "{err}");
    assert!(err.contains("JobFailed"), "{err}");
}

/// `[index] backend = "elasticsearch"` and `"opensearch"`: stages 6 and 7 of `ragloop run
/// --config` on a cluster speaking each engine's wire format, then `ragloop ask` on it.
#[tokio::test(flavor = "multi_thread")]
async fn the_loop_indexes_into_and_answers_from_elasticsearch_and_opensearch() {
    for (engine, name) in [
        (vector_store::Engine::Elasticsearch8, "elasticsearch"),
        (vector_store::Engine::OpenSearch2, "opensearch"),
    ] {
        let cluster = fake_cluster::Running::start(engine).await;
        let (dir, config) = project(&format!(
            "[index]\nbackend = \"{name}\"\nurl = \"{}\"\n",
            cluster.uri()
        ));
        let mut run = ragloop(dir.path());
        run.args(["run", "--json", "--config"])
            .arg(&config)
            .env("RAGLOOP_SEARCH_API_KEY", "search-key");
        let summary = json_of(&mut run).await;
        let index = summary["stages"][5]["summary"].as_str().unwrap();
        assert!(index.contains("2 in rag-index"), "{name}: {index}");
        assert_eq!(
            summary["answer"]["citations"][0]["doc_id"], "kill.2",
            "{name}: {summary}"
        );
        let requests = cluster.requests().await;
        assert!(
            requests
                .iter()
                .any(|(m, p, _)| m == "PUT" && p == "/rag-index"),
            "{name}: the index was created"
        );
        assert!(
            requests
                .iter()
                .any(|(m, p, _)| m == "POST" && p.starts_with("/_bulk")),
            "{name}: records went in through _bulk"
        );

        let mut ask = ragloop(dir.path());
        ask.args(["ask", "--json", "How do I duplicate a file descriptor?"])
            .env("RAGLOOP_SEARCH_API_KEY", "search-key");
        let answer = json_of(&mut ask).await;
        assert_eq!(
            answer["citations"][0]["doc_id"], "dup.2",
            "{name}: {answer}"
        );
    }
}
