//! The cloud stages through the CLI on the vendors' wire formats: PAI-DLC (a fake that runs
//! each CreateJob's command as a container process) for training, embedding workers and the
//! LLM fine-tune; Bailian (Model Studio) deployments and the fine-tune → deployment → answer
//! hand-off.

#![allow(clippy::unwrap_used)]

#[path = "support/cli.rs"]
mod cli;
mod support;

use std::path::{Path, PathBuf};

use cli::{assert_hand_off, json_of, project, ragloop};
use serde_json::{Value, json};
use support::{FakeDashScope, model_dir, walk};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

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
            ("GET", "/api/v1/deployments/models") => envelope(json!({
                "models": [{"model_name": "qwen2.5-7b-instruct-ft-202611", "base_capacity": 4}],
                "page_no": 1, "page_size": 100, "total": 1})),
            ("POST", "/api/v1/deployments") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                // 2 instances of the model's base capacity 4; no plan: billed by compute.
                assert_eq!(
                    body,
                    json!({"model_name": "qwen2.5-7b-instruct-ft-202611", "name": "llm-ft", "capacity": 8})
                );
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
    assert!(text.contains("2 × base_capacity"), "{text}");
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
    /// The S3 server standing in for OSS: `DataSources` the command names are mounted from
    /// it (copied into the container's directory at their `MountPath`).
    s3: Option<oss_client::OssConfig>,
}

impl ContainerDlc {
    /// A fake DLC on a new wiremock server whose containers run in `dir` with test
    /// credentials.
    async fn serve(dir: &Path) -> (Self, MockServer) {
        Self::serve_with(dir, None).await
    }

    /// The same, mounting `DataSources` from the S3 server `s3` configures.
    async fn serve_with_mounts(dir: &Path, s3: oss_client::OssConfig) -> (Self, MockServer) {
        Self::serve_with(dir, Some(s3)).await
    }

    /// `command` with each mounted `DataSources` prefix copied to a local folder and its
    /// `MountPath` replaced by that folder, as the container would see it.
    fn mount(&self, body: &Value, mut command: String) -> String {
        let Some(config) = self.s3.clone() else {
            return command;
        };
        for ds in body["DataSources"].as_array().into_iter().flatten() {
            let mount = ds["MountPath"].as_str().unwrap().to_string();
            if !command.contains(&mount) {
                continue;
            }
            // oss://<bucket>.oss-<region>-internal.aliyuncs.com/<key>
            let uri = ds["Uri"].as_str().unwrap().trim_start_matches("oss://");
            let (host, key) = uri.split_once('/').unwrap();
            let bucket = host.split('.').next().unwrap().to_string();
            let prefix: rag_core::StoreUri = format!("oss://{bucket}/{key}").parse().unwrap();
            let local = self
                .dir
                .join("mnt")
                .join(mount.trim_matches('/').replace('/', "_"));
            std::fs::create_dir_all(&local).unwrap();
            let target = local.clone();
            let config = config.clone();
            // The fake answers inside the server's runtime: the copy runs on its own.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                rt.block_on(async {
                    use futures::TryStreamExt;
                    let store = oss_client::OssStore::new(config).unwrap();
                    let objects: Vec<_> = rag_core::ObjectStore::list(&store, &prefix)
                        .try_collect()
                        .await
                        .unwrap();
                    for m in objects {
                        let bytes = rag_core::ObjectStore::get_bytes(&store, &m.uri)
                            .await
                            .unwrap();
                        std::fs::write(target.join(m.uri.file_name()), &bytes).unwrap();
                    }
                });
            })
            .join()
            .unwrap();
            command = command.replace(&mount, &format!("{}/", local.display()));
        }
        command
    }

    /// The fake DLC, mounting `DataSources` from `s3` when given.
    async fn serve_with(dir: &Path, s3: Option<oss_client::OssConfig>) -> (Self, MockServer) {
        let dlc = ContainerDlc {
            jobs: Default::default(),
            container_env: vec![
                ("ALIBABA_CLOUD_ACCESS_KEY_ID".into(), "testing".into()),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET".into(), "testing".into()),
            ],
            dir: dir.to_path_buf(),
            s3,
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
                let command = self.mount(&body, body["UserCommand"].as_str().unwrap().into());
                let child = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(command)
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
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[embedding]\nmodel = \"hashed\"\ndims = 128\n",
        "",
        1,
    );
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

    // What PAI received: five PyTorchJobs on the image — training, two workers embedding with
    // the trained model, two with the base model for the report's base rows — the loop's store
    // description (with its endpoint) in the environment, the base model and mode for training,
    // a worker index per embedding job, and no credential anywhere.
    let jobs = dlc.jobs.lock().unwrap();
    let bodies: Vec<&Value> = jobs.iter().map(|(_, _, b)| b).collect();
    assert_eq!(bodies.len(), 5);
    for b in &bodies {
        assert_eq!(b["JobSpecs"][0]["Image"], "ragloop:test");
        let store: Value =
            serde_json::from_str(b["Envs"]["RAGLOOP_STORE"].as_str().unwrap()).unwrap();
        assert_eq!(store["backend"], "oss");
        assert_eq!(store["endpoint"], s3.endpoint());
        assert!(!b.to_string().contains("ALIBABA_CLOUD_ACCESS_KEY"), "{b}");
    }
    assert_eq!(
        bodies[0]["Envs"]["RAGLOOP_BASE_MODEL"],
        "oss://pai-bucket/models/minilm/"
    );
    assert_eq!(bodies[0]["Envs"]["RAGLOOP_HP_MODE"], "adapter");
    // The two workers of one model are submitted at once, in either order: the trained
    // model's pair first, then the base model's.
    for (pair, model) in [(&bodies[1..3], "emb-v1"), (&bodies[3..5], "minilm")] {
        let mut workers: Vec<usize> = pair
            .iter()
            .map(|b| {
                let cmd = b["UserCommand"].as_str().unwrap();
                assert!(
                    cmd.contains(&format!("--model oss://pai-bucket/models/{model}/")),
                    "{cmd}"
                );
                (0..2)
                    .find(|w| cmd.contains(&format!("--worker {w} --workers 2")))
                    .unwrap_or_else(|| panic!("no worker index in {cmd}"))
            })
            .collect();
        workers.sort_unstable();
        assert_eq!(workers, [0, 1]);
    }
    // The report compares the base model with the trained one.
    let rows: Vec<&str> = summary["evaluation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["retriever"].as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[1], "dense minilm");
    assert_eq!(rows[2], "dense minilm fine-tuned (adapter)");
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
    // No suffix configured: the fake names the deployment `<model>-x`, as the service adds its
    // own tag to the model id.
    let deployed = "qwen2.5-7b-instruct-ft-ft-202611261000-0001-x";
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

/// `[jobs]` on PAI with no image: the loop uploads its own binary to `<root>bin/` once, and
/// each DLC job runs it from that prefix mounted into the stock image — here the fake DLC
/// mounts it from the S3 server and runs the command as the container would.
#[tokio::test(flavor = "multi_thread")]
async fn image_free_pai_jobs_run_the_uploaded_binary_from_the_mount() {
    let s3 = oss_client::testing::S3TestServer::start();
    let store = s3.store("free-bucket").await.unwrap();
    let containers = tempfile::tempdir().unwrap();
    let (dlc, pai) = ContainerDlc::serve_with_mounts(containers.path(), s3.config()).await;
    let (dir, config) = project("");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "root = \"oss://free-bucket/rag/\"\n{text}\
             [store]\nbackend = \"oss\"\nendpoint = \"{}\"\n\
             [jobs]\nbackend = \"pai\"\nworkspace_id = \"ws-1\"\nbase_image = \"stock:test\"\n\
             endpoint = \"{}\"\n",
            s3.endpoint(),
            pai.uri(),
        ),
    )
    .unwrap();
    let env = |c: &mut tokio::process::Command| {
        c.env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testing")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testing")
            .env_remove("PAI_IMAGE");
    };
    let mut dry = ragloop(dir.path());
    dry.args(["run", "--dry-run", "--config"]).arg(&config);
    env(&mut dry);
    let out = dry.output().await.unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    assert!(
        plan.contains("image-free jobs:") && plan.contains("oss://free-bucket/rag/bin/ragloop-"),
        "{plan}"
    );

    let mut run = ragloop(dir.path());
    run.args(["run", "--json", "--config"]).arg(&config);
    env(&mut run);
    let summary = json_of(&mut run).await;
    let train = summary["stages"][1]["summary"].as_str().unwrap();
    assert!(train.starts_with("job dlc00000001"), "{train}");

    // The binary is in the bucket under its content's name, byte for byte.
    let bin: rag_core::StoreUri = "oss://free-bucket/rag/bin/".parse().unwrap();
    let objects: Vec<_> =
        futures::TryStreamExt::try_collect(rag_core::ObjectStore::list(&store, &bin))
            .await
            .unwrap();
    assert_eq!(objects.len(), 1, "{objects:?}");
    let uploaded = rag_core::ObjectStore::get_bytes(&store, &objects[0].uri)
        .await
        .unwrap();
    assert_eq!(
        uploaded.as_ref(),
        std::fs::read(env!("CARGO_BIN_EXE_ragloop"))
            .unwrap()
            .as_slice()
    );
    let name = objects[0].uri.file_name().to_string();
    let stamp = objects[0].last_modified;
    {
        let jobs = dlc.jobs.lock().unwrap();
        let body = &jobs[0].2;
        assert_eq!(body["JobSpecs"][0]["Image"], "stock:test");
        assert_eq!(
            body["DataSources"][0],
            json!({"Uri": "oss://free-bucket.oss-cn-hangzhou-internal.aliyuncs.com/rag/bin/", "MountPath": "/mnt/data/ragloop-bin/"})
        );
        let cmd = body["UserCommand"].as_str().unwrap();
        assert!(
            cmd.starts_with("sh -c ") && cmd.contains(&format!("/mnt/data/ragloop-bin/{name}")),
            "{cmd}"
        );
        assert!(cmd.contains(" ragloop train "), "{cmd}");
    }

    // A second run finds the binary there and uploads nothing.
    let mut again = ragloop(dir.path());
    again.args(["run", "--json", "--config"]).arg(&config);
    env(&mut again);
    json_of(&mut again).await;
    let objects: Vec<_> =
        futures::TryStreamExt::try_collect(rag_core::ObjectStore::list(&store, &bin))
            .await
            .unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0].last_modified, stamp, "not uploaded again");
}
