//! Fine-tunes and deployments against a scripted Model Studio on wiremock that answers with
//! the documented native bodies (`{"request_id", "output"}`, errors `{"code", "message"}`) and
//! keeps state: the TrainingBackend and ModelDeployer conformance suites, the fine-tune →
//! deploy hand-off through the output prefix, and the exact requests sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bailian_client::{
    BailianConfig, BailianDeployer, BailianFineTunes, DeployPlan, MODEL_RECORD, ModelStudio, Region,
};
use rag_core::conformance::training::TrainingFixtures;
use rag_core::deploy::{DeploySpec, DeploymentStatus, ModelDeployer};
use rag_core::local::InMemoryStore;
use rag_core::training::{JobId, JobKind, JobSpec, JobStatus, TrainingBackend, WaitOptions};
use rag_core::{ObjectStore, Secret, StoreUri};
use serde_json::{Value, json};
use wiremock::matchers::path_regex;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Default)]
struct Job {
    name: String,
    model: String,
    polls: u32,
    canceled: bool,
}

#[derive(Default)]
struct State {
    files: HashMap<String, String>,
    jobs: HashMap<String, Job>,
    deployments: HashMap<String, (String, u32, u32)>,
    bodies: Vec<(String, String, Value)>,
    next: u32,
}

#[derive(Clone, Default)]
struct FakeStudio(Arc<Mutex<State>>);

fn ok(output: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"request_id": "9654e55a-d74b-4113-aee1-fa19c9384fcc", "output": output}),
    )
}

fn not_found(what: &str) -> ResponseTemplate {
    ResponseTemplate::new(404).set_body_json(json!({"request_id": "ca218d57-b91b-46b2-bd35-c41c6287bcf4", "message": format!("{what} not found!"), "code": "NotFound"}))
}

impl FakeStudio {
    /// The bodies of the requests `method path` received so far, oldest first.
    fn bodies_of(&self, method: &str, path: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .bodies
            .iter()
            .filter(|(m, p, _)| m == method && p == path)
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    fn job_json(id: &str, job: &Job) -> Value {
        let status = if job.canceled {
            "CANCELED"
        } else if job.polls < 2 {
            "PENDING"
        } else {
            match job.name.as_str() {
                "ok" | "llm-ft" => "SUCCEEDED",
                "bad" => "FAILED",
                _ => "RUNNING",
            }
        };
        let mut v = json!({"job_id": id, "job_name": id, "status": status, "model": job.model, "base_model": job.model,
                           "training_type": "sft", "create_time": "2024-10-29 16:53:53"});
        if status == "SUCCEEDED" {
            v["finetuned_output"] = json!(format!("{}-ft-{id}", job.model));
        }
        if status == "FAILED" {
            v["code"] = json!("InvalidDataFormat");
            v["message"] = json!("line 3 of the training file is not a messages object");
        }
        v
    }
}

impl Respond for FakeStudio {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        let path = req.url.path().trim_start_matches("/api/v1/").to_string();
        let parts: Vec<&str> = path.split('/').collect();
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        st.bodies
            .push((req.method.to_string(), path.clone(), body.clone()));
        match (req.method.as_str(), parts.as_slice()) {
            ("POST", ["files"]) => {
                let ct = req
                    .headers
                    .get("content-type")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                assert!(ct.starts_with("multipart/form-data"), "{ct}");
                let text = String::from_utf8_lossy(&req.body).to_string();
                assert!(
                    text.contains("name=\"files\"") && text.contains("name=\"descriptions\""),
                    "{text}"
                );
                // The file management reference marks `purpose` required.
                assert!(
                    text.contains("name=\"purpose\"\r\n\r\nfine-tune\r\n"),
                    "{text}"
                );
                st.next += 1;
                let id = format!("976bd01a-f30b-4414-86fd-{:012}", st.next);
                st.files.insert(id.clone(), text);
                ResponseTemplate::new(200).set_body_json(json!({"request_id": "r", "data": {"uploaded_files": [{"file_id": id, "name": "train.jsonl"}], "failed_uploads": []}}))
            }
            ("POST", ["fine-tunes"]) => {
                let files = body["training_file_ids"].as_array().unwrap();
                if files
                    .iter()
                    .any(|f| !st.files.contains_key(f.as_str().unwrap()))
                {
                    return ResponseTemplate::new(400).set_body_json(json!({"request_id": "r", "code": "InvalidParameter", "message": "training file not found"}));
                }
                st.next += 1;
                let id = format!("ft-202410291653-{:04}", st.next);
                let job = Job {
                    name: body["job_name"].as_str().unwrap().into(),
                    model: body["model"].as_str().unwrap().into(),
                    ..Default::default()
                };
                let v = Self::job_json(&id, &job);
                st.jobs.insert(id, job);
                ok(v)
            }
            ("GET", ["fine-tunes", id]) => match st.jobs.get_mut(*id) {
                Some(job) => {
                    job.polls += 1;
                    ok(Self::job_json(id, job))
                }
                None => not_found(&format!("Job: {id}")),
            },
            ("GET", ["fine-tunes", id, "logs"]) => match st.jobs.get(*id) {
                Some(job) => ok(
                    json!({"total": 2, "logs": [format!("training {} on qa-pairs", job.model), "step 10 loss 0.42"]}),
                ),
                None => not_found(&format!("Job: {id}")),
            },
            ("POST", ["fine-tunes", id, "cancel"]) => match st.jobs.get_mut(*id) {
                Some(job) => {
                    job.canceled = true;
                    ok(json!({"status": "success"}))
                }
                None => not_found(&format!("Job: {id}")),
            },
            ("GET", ["deployments", "models"]) => {
                // Every fine-tuned model, base capacity 2 (the reference's `base_capacity`).
                let models: Vec<Value> = st
                    .jobs
                    .iter()
                    .map(|(id, j)| json!({"model_name": format!("{}-ft-{id}", j.model), "base_capacity": 2}))
                    .collect();
                ok(json!({"models": models, "page_no": 1, "page_size": 100, "total": models.len()}))
            }
            ("POST", ["deployments"]) => {
                let model = body["model_name"].as_str().unwrap().to_string();
                let known = st
                    .jobs
                    .iter()
                    .any(|(id, j)| model == format!("{}-ft-{id}", j.model));
                if !known {
                    return not_found(&format!("Model: {model}"));
                }
                if body["plan"].is_null() && !body["capacity"].as_u64().unwrap().is_multiple_of(2) {
                    return ResponseTemplate::new(400).set_body_json(json!({"request_id": "r", "code": "InvalidParameter", "message": "capacity must be a multiple of base_capacity"}));
                }
                st.next += 1;
                let suffix = body["suffix"]
                    .as_str()
                    .map_or_else(|| format!("{:08x}", st.next), str::to_string);
                let id = format!("{model}-{suffix}");
                st.deployments.insert(
                    id.clone(),
                    // PTU deployments are sized in tokens per minute, not units.
                    (
                        model.clone(),
                        body["capacity"].as_u64().unwrap_or(0) as u32,
                        0,
                    ),
                );
                ok(
                    json!({"deployed_model": id, "status": "PENDING", "model_name": model, "capacity": body["capacity"], "ready_capacity": 0, "charge_type": "post_paid"}),
                )
            }
            ("GET", ["deployments"]) => {
                let list: Vec<Value> = st
                    .deployments
                    .iter()
                    .map(|(id, (m, c, _))| json!({"deployed_model": id, "status": "RUNNING", "model_name": m, "capacity": c}))
                    .collect();
                ok(
                    json!({"deployments": list, "page_no": 1, "page_size": 100, "total": list.len()}),
                )
            }
            ("GET", ["deployments", id]) => match st.deployments.get_mut(*id) {
                Some((m, c, polls)) => {
                    *polls += 1;
                    let status = if *polls > 1 { "RUNNING" } else { "DEPLOYING" };
                    ok(
                        json!({"deployed_model": id, "status": status, "model_name": m, "capacity": c, "ready_capacity": if *polls > 1 { *c } else { 0 }}),
                    )
                }
                None => not_found(&format!("Model: {id}")),
            },
            ("PUT", ["deployments", id, "scale"]) => match st.deployments.get_mut(*id) {
                Some((m, c, _)) => {
                    *c = body["capacity"].as_u64().unwrap() as u32;
                    ok(
                        json!({"deployed_model": id, "status": "UPDATING", "model_name": m, "capacity": c}),
                    )
                }
                None => not_found(&format!("Model: {id}")),
            },
            ("DELETE", ["deployments", id]) => match st.deployments.remove(*id) {
                Some(_) => ok(json!({"deployed_model": id, "status": "DELETING"})),
                None => not_found(&format!("Model: {id}")),
            },
            ("POST", ["models"]) => {
                ok(json!({"model_name": body["model_name"], "status": "IMPORTING"}))
            }
            _ => ResponseTemplate::new(404)
                .set_body_json(json!({"code": "NotFound", "message": format!("no route {path}")})),
        }
    }
}

async fn setup() -> (MockServer, FakeStudio, ModelStudio, Arc<InMemoryStore>) {
    let server = MockServer::start().await;
    let fake = FakeStudio::default();
    Mock::given(path_regex("^/api/v1/.*"))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    let mut config = BailianConfig::new(Region::Beijing).with_api_key(Secret::new("sk-studio"));
    config = config.with_native_base(format!("{}/api/v1", server.uri()));
    config.retry.initial_backoff = Duration::from_millis(5);
    let api = ModelStudio::new(config).unwrap();
    let store = Arc::new(InMemoryStore::new());
    store
        .put(
            &"mem://bkt/qa-pairs/train.jsonl".parse().unwrap(),
            br#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#
                .to_vec()
                .into(),
        )
        .await
        .unwrap();
    (server, fake, api, store)
}

fn spec(name: &str) -> JobSpec {
    let mut s = JobSpec::new(
        name,
        JobKind::LlmFineTune,
        vec!["bailian-fine-tune".into()],
        format!("mem://bkt/models/{name}/").parse().unwrap(),
    )
    .with_input("data", "mem://bkt/qa-pairs/".parse().unwrap())
    .with_hyper_parameter("n_epochs", 3)
    .with_hyper_parameter("learning_rate", "1.6e-5");
    s.base_model = Some("qwen3-14b".into());
    s
}

fn fast() -> WaitOptions {
    WaitOptions {
        interval: Duration::from_millis(5),
        max_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    }
}

/// A fine-tune of spec "ok" run to success: its spec and job id.
async fn fine_tuned(api: &ModelStudio, store: &Arc<InMemoryStore>) -> (JobSpec, JobId) {
    let trainer = BailianFineTunes::new(api.clone(), store.clone());
    let s = spec("ok");
    let id = trainer.submit(&s).await.unwrap();
    trainer.wait(&id, fast()).await.unwrap();
    (s, id)
}

#[tokio::test]
async fn training_backend_conformance() {
    let (_server, _fake, api, store) = setup().await;
    let backend = BailianFineTunes::new(api, store);
    let fx = TrainingFixtures {
        succeeding: spec("ok"),
        expected_log: "step 10 loss 0.42".into(),
        failing: spec("bad"),
        expected_reason: "InvalidDataFormat: line 3".into(),
        long_running: spec("long"),
        wait: fast(),
    };
    rag_core::conformance::training::run_all(&backend, &fx).await;
}

#[tokio::test]
async fn the_create_request_is_the_documented_body() {
    let (_server, fake, api, store) = setup().await;
    let backend = BailianFineTunes::new(api, store);
    let s = spec("llm-ft")
        .with_hyper_parameter("split", 0.9)
        .with_hyper_parameter("lr_scheduler_type", "linear")
        .with_hyper_parameter("training_type", "efficient_sft")
        .with_hyper_parameter(bailian_client::SUFFIX_KEY, "rag");
    backend.submit(&s).await.unwrap();
    let create = &fake.bodies_of("POST", "fine-tunes")[0];
    let file = create["training_file_ids"][0].as_str().unwrap();
    // Numbers as numbers (`learning_rate` is a Float in the reference), the suffix in its
    // documented field.
    assert_eq!(
        create,
        &json!({"model": "qwen3-14b", "training_file_ids": [file], "hyper_parameters": {"learning_rate": 1.6e-5, "n_epochs": 3, "split": 0.9, "lr_scheduler_type": "linear"},
                "training_type": "efficient_sft", "job_name": "llm-ft", "finetuned_output_suffix": "rag"})
    );
}

#[tokio::test]
async fn a_finished_fine_tune_hands_its_model_to_the_deployment() {
    let (_server, fake, api, store) = setup().await;
    let trainer = BailianFineTunes::new(api.clone(), store.clone());
    let s = spec("llm-ft");
    let id = trainer.submit(&s).await.unwrap();
    assert_eq!(
        trainer.wait(&id, fast()).await.unwrap(),
        JobStatus::Succeeded
    );
    let record: Value = serde_json::from_slice(
        &store
            .get_bytes(&s.output.join(MODEL_RECORD).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["finetuned_output"], format!("qwen3-14b-ft-{}", id.0));
    assert!(
        store
            .exists(&s.output.join("_SUCCESS").unwrap())
            .await
            .unwrap()
    );

    let deployer = BailianDeployer::new(api.clone(), Some(store.clone() as Arc<dyn ObjectStore>));
    let dep = deployer
        .deploy(&DeploySpec {
            model_name: "custom-llm-v1".into(),
            model_path: s.output.to_string(),
            capacity: 2,
        })
        .await
        .unwrap();
    let model = format!("qwen3-14b-ft-{}", id.0);
    assert!(dep.id.starts_with(&model), "{}", dep.id);
    assert_eq!(dep.model_name, "custom-llm-v1");
    // 2 instances of the model's base capacity (2), the spec's name as the display name.
    let create = fake.bodies_of("POST", "deployments").pop().unwrap();
    assert_eq!(
        create,
        json!({"model_name": model, "name": "custom-llm-v1", "capacity": 4})
    );
    let mut status = deployer.status(&dep.id).await.unwrap().status;
    while status == DeploymentStatus::Pending {
        status = deployer.status(&dep.id).await.unwrap().status;
    }
    assert_eq!(status, DeploymentStatus::Running);
    assert_eq!(
        api.scale_deployment(&dep.id, 4).await.unwrap().capacity,
        Some(4)
    );
    deployer.undeploy(&dep.id).await.unwrap();
    assert!(deployer.status(&dep.id).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn model_deployer_conformance() {
    let (_server, _fake, api, store) = setup().await;
    let (s, _) = fine_tuned(&api, &store).await;
    let deployer = BailianDeployer::new(api, Some(store as Arc<dyn ObjectStore>));
    rag_core::conformance::deploy::run_all(
        &deployer,
        &s.output.to_string(),
        "mem://bkt/models/never-trained/",
    )
    .await;
}

#[tokio::test]
async fn the_seeds_model_import_call() {
    let (_server, fake, api, _store) = setup().await;
    let out = api
        .import_model("custom-llm-v1", "oss://bucket/models/llm-ft/")
        .await
        .unwrap();
    assert_eq!(out["model_name"], "custom-llm-v1");
    let bodies = fake.0.lock().unwrap().bodies.clone();
    assert_eq!(
        bodies.last().unwrap().2,
        json!({"model_name": "custom-llm-v1", "model_path": "oss://bucket/models/llm-ft/"})
    );
}

#[tokio::test]
async fn missing_inputs_and_keys_are_clear_errors() {
    let (_server, _fake, api, store) = setup().await;
    let backend = BailianFineTunes::new(api, store);
    let mut s = spec("ok");
    s.base_model = None;
    assert!(
        backend
            .submit(&s)
            .await
            .unwrap_err()
            .to_string()
            .contains("base_model")
    );
    let mut s = spec("ok");
    s.inputs.insert(
        "data".into(),
        "mem://bkt/empty/".parse::<StoreUri>().unwrap(),
    );
    assert!(backend.submit(&s).await.unwrap_err().is_not_found());
    let err = ModelStudio::new(BailianConfig::new(Region::Beijing)).unwrap_err();
    assert!(err.to_string().contains("DASHSCOPE_API_KEY"), "{err}");
}

#[tokio::test]
async fn plans_size_the_deployment_and_an_undeployable_model_fails_before_creating() {
    let (_server, fake, api, store) = setup().await;
    let (_, id) = fine_tuned(&api, &store).await;
    let model = format!("qwen3-14b-ft-{}", id.0);
    let spec = |capacity| DeploySpec {
        model_name: "rag-llm".into(),
        model_path: model.clone(),
        capacity,
    };
    let last_create = || fake.bodies_of("POST", "deployments").pop();

    let mu = BailianDeployer::new(api.clone(), None)
        .with_plan("mu:MU1".parse().unwrap())
        .with_suffix("mu1");
    let d = mu.deploy(&spec(3)).await.unwrap();
    assert_eq!(d.id, format!("{model}-mu1"));
    assert_eq!(
        last_create().unwrap(),
        json!({"model_name": model, "name": "rag-llm", "plan": "mu", "deploy_spec": "MU1", "capacity": 6, "suffix": "mu1"})
    );
    mu.undeploy(&d.id).await.unwrap();

    let ptu = BailianDeployer::new(api.clone(), None).with_plan(DeployPlan::Ptu {
        input_tpm: 10_000,
        output_tpm: 1_000,
    });
    let d = ptu.deploy(&spec(1)).await.unwrap();
    assert_eq!(
        last_create().unwrap(),
        json!({"model_name": model, "name": "rag-llm", "plan": "ptu", "ptu_capacity": {"input_tpm": 10_000, "output_tpm": 1_000}})
    );
    ptu.undeploy(&d.id).await.unwrap();

    // A suffix the service would refuse is refused here, before any request creates anything.
    let long = BailianDeployer::new(api.clone(), None).with_suffix("custom-llm-v1");
    let err = long.deploy(&spec(1)).await.unwrap_err();
    assert!(matches!(err, rag_core::Error::InvalidInput { .. }), "{err}");

    let creates = |f: &FakeStudio| f.bodies_of("POST", "deployments").len();
    let before = creates(&fake);
    let err = BailianDeployer::new(api, None)
        .deploy(&DeploySpec {
            model_path: "qwen3-14b-ft-never".into(),
            ..spec(1)
        })
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("/deployments/models"), "{err}");
    assert_eq!(creates(&fake), before, "nothing was created");
}

#[tokio::test]
async fn the_workspace_header_goes_with_every_call() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::header(
        "X-DashScope-WorkSpace",
        "llm-v71tlv3d",
    ))
    .and(path_regex("^/api/v1/fine-tunes/ft-1$"))
    .respond_with(ok(json!({"job_id": "ft-1", "status": "RUNNING"})))
    .mount(&server)
    .await;
    let config = BailianConfig::new(Region::Beijing)
        .with_api_key(Secret::new("sk-studio"))
        .with_native_base(format!("{}/api/v1", server.uri()))
        .with_workspace("llm-v71tlv3d");
    let api = ModelStudio::new(config).unwrap();
    assert_eq!(api.fine_tune("ft-1").await.unwrap().status, "RUNNING");
    // Without it the same call is not the workspace's (the fake answers 404 as the
    // service does for a job of another workspace).
    let config = BailianConfig::new(Region::Beijing)
        .with_api_key(Secret::new("sk-studio"))
        .with_native_base(format!("{}/api/v1", server.uri()));
    assert!(
        ModelStudio::new(config)
            .unwrap()
            .fine_tune("ft-1")
            .await
            .is_err()
    );
}
