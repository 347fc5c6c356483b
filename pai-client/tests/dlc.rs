//! pai-client against a scripted PAI-DLC server (wiremock) speaking the API's wire format: JSON
//! bodies with the documented field names, ROA paths, Alibaba Cloud error bodies
//! (`{"RequestId", "HostId", "Code", "Message"}`), and signatures checked as the real service
//! checks them.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pai_client::signing::{SignableRequest, sign};
use pai_client::{DlcDefaults, PaiBackend, PaiClient, PaiConfig};
use rag_core::conformance::training::{TrainingFixtures, run_all};
use rag_core::training::{Framework, JobKind, JobSpec, Resources, TrainingBackend, WaitOptions};
use rag_core::{AccessKey, Error, Secret};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY_ID: &str = "LTAI5tTestKeyId";
const SECRET: &str = "test-secret-never-printed";

fn error_body(code: &str, message: &str) -> Value {
    json!({
        "RequestId": "9B5C1E2A-0C3B-5C2D-9B1A-7E5F0D1C2B3A",
        "HostId": "pai-dlc.cn-hangzhou.aliyuncs.com",
        "Code": code,
        "Message": message
    })
}

/// Recomputes the request's ACS3 signature with the known secret, as the service does.
fn signature_ok(req: &Request) -> bool {
    let Some(auth) = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(rest) = auth.strip_prefix(&format!(
        "ACS3-HMAC-SHA256 Credential={KEY_ID},SignedHeaders="
    )) else {
        return false;
    };
    let Some((signed, signature)) = rest.split_once(",Signature=") else {
        return false;
    };
    let headers: BTreeMap<String, String> = signed
        .split(';')
        .map(|h| {
            let v = req
                .headers
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            (h.to_string(), v.to_string())
        })
        .collect();
    let query: Vec<(String, String)> = req
        .url
        .query_pairs()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let path = percent_decode(req.url.path());
    let (expected, _) = sign(
        &SignableRequest {
            method: req.method.as_str(),
            path: &path,
            query: &query,
            headers: &headers,
            body: &req.body,
        },
        SECRET,
    );
    expected == signature
        && headers.get("x-acs-content-sha256").map(String::as_str)
            == Some(pai_client::signing::sha256_hex(&req.body).as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[derive(Default)]
struct FakeJob {
    name: String,
    polls: u32,
    stopped: bool,
}

/// A scripted DLC: jobs named `ok` go Creating → Queuing → Running → Succeeded, `bad` fails
/// with a reason, anything else runs until stopped.
#[derive(Default, Clone)]
struct FakeDlc {
    jobs: Arc<Mutex<HashMap<String, FakeJob>>>,
    created: Arc<Mutex<Vec<Value>>>,
}

impl FakeDlc {
    fn job_json(id: &str, job: &FakeJob) -> Value {
        let (status, code, msg) = match (job.name.as_str(), job.polls, job.stopped) {
            (_, _, true) => ("Stopped", "", ""),
            (_, 0, _) => ("Creating", "", ""),
            (_, 1, _) => ("Queuing", "", ""),
            ("ok", 2, _) => ("Running", "", ""),
            ("ok", _, _) => ("Succeeded", "", ""),
            ("bad", _, _) => ("Failed", "JobFailed", "loss is NaN at step 12"),
            _ => ("Running", "", ""),
        };
        json!({
            "JobId": id, "DisplayName": job.name, "JobType": "PyTorchJob", "Status": status,
            "ReasonCode": code, "ReasonMessage": msg, "WorkspaceId": "ws-test",
            "Pods": [{"PodId": format!("{id}-worker-0"), "Type": "Worker", "Status": status, "Ip": "10.0.0.1"}],
            "RequestId": "req-get"
        })
    }

    async fn mount(&self, server: &MockServer) {
        let me = self.clone();
        Mock::given(method("POST"))
            .and(path("/api/v1/jobs"))
            .respond_with(move |req: &Request| {
                if !signature_ok(req) {
                    return ResponseTemplate::new(403).set_body_json(error_body(
                        "SignatureDoesNotMatch",
                        "Specified signature is not matched with our calculation.",
                    ));
                }
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                me.created.lock().unwrap().push(body.clone());
                let name = body["DisplayName"].as_str().unwrap_or_default().to_string();
                let mut jobs = me.jobs.lock().unwrap();
                let id = format!("dlc{:08}", jobs.len() + 1);
                jobs.insert(
                    id.clone(),
                    FakeJob {
                        name,
                        ..Default::default()
                    },
                );
                ResponseTemplate::new(200)
                    .set_body_json(json!({"JobId": id, "RequestId": "req-create"}))
            })
            .mount(server)
            .await;
        let me = self.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/jobs/[^/]+$"))
            .respond_with(move |req: &Request| {
                if !signature_ok(req) {
                    return ResponseTemplate::new(400)
                        .set_body_json(error_body("SignatureDoesNotMatch", "bad signature"));
                }
                let id = req.url.path().rsplit('/').next().unwrap().to_string();
                let mut jobs = me.jobs.lock().unwrap();
                match jobs.get_mut(&id) {
                    Some(job) => {
                        let body = Self::job_json(&id, job);
                        job.polls += 1;
                        ResponseTemplate::new(200).set_body_json(body)
                    }
                    None => ResponseTemplate::new(404)
                        .set_body_json(error_body("JobNotFound", &format!("Job {id} not found"))),
                }
            })
            .mount(server)
            .await;
        let me = self.clone();
        Mock::given(method("POST"))
            .and(path_regex(r"^/api/v1/jobs/[^/]+/stop$"))
            .respond_with(move |req: &Request| {
                let id = req.url.path().split('/').nth(4).unwrap().to_string();
                match me.jobs.lock().unwrap().get_mut(&id) {
                    Some(job) => {
                        job.stopped = true;
                        ResponseTemplate::new(200)
                            .set_body_json(json!({"JobId": id, "RequestId": "req-stop"}))
                    }
                    None => ResponseTemplate::new(404)
                        .set_body_json(error_body("JobNotFound", "no such job")),
                }
            })
            .mount(server)
            .await;
        let me = self.clone();
        Mock::given(method("GET"))
            .and(path_regex(r"^/api/v1/jobs/[^/]+/pods/[^/]+/logs$"))
            .respond_with(move |req: &Request| {
                let parts: Vec<&str> = req.url.path().split('/').collect();
                let (id, pod) = (parts[4], parts[6]);
                let jobs = me.jobs.lock().unwrap();
                let name = jobs.get(id).map(|j| j.name.clone()).unwrap_or_default();
                ResponseTemplate::new(200).set_body_json(json!({
                    "JobId": id, "PodId": pod, "PodUid": "uid-1", "RequestId": "req-logs",
                    "Logs": [format!("starting {name}"), "training on oss://bucket/raw-docs/ lr=0.01"]
                }))
            })
            .mount(server)
            .await;
    }
}

fn config(server: &MockServer, secret: &str) -> PaiConfig {
    config_at(server.uri(), secret)
}

fn config_at(endpoint: String, secret: &str) -> PaiConfig {
    let mut c = PaiConfig::new("cn-hangzhou", "ws-test")
        .unwrap()
        .with_endpoint(endpoint)
        .with_credentials(AccessKey {
            id: KEY_ID.into(),
            secret: Secret::new(secret),
            security_token: None,
        });
    c.retry.initial_backoff = Duration::from_millis(5);
    c.retry.max_retries = 2;
    c.request_timeout = Duration::from_millis(800);
    c
}

fn backend(server: &MockServer, secret: &str) -> PaiBackend {
    backend_at(config(server, secret))
}

fn backend_at(config: PaiConfig) -> PaiBackend {
    PaiBackend::new(
        PaiClient::new(config).unwrap(),
        DlcDefaults {
            image: "registry.cn-hangzhou.aliyuncs.com/ragloop/trainer:1".into(),
            resource_id: None,
            ecs_spec: "ecs.gn7i-c8g1.2xlarge".into(),
            oss_region: "cn-hangzhou".into(),
            mounts: Vec::new(),
        },
    )
}

fn spec(name: &str) -> JobSpec {
    JobSpec::new(
        name,
        JobKind::EmbeddingFineTune,
        vec![
            "ragloop".into(),
            "train".into(),
            "--dims".into(),
            "768".into(),
        ],
        "oss://bucket/models/emb-v1/".parse().unwrap(),
    )
    .with_input("data", "oss://bucket/raw-docs/".parse().unwrap())
    .with_hyper_parameter("lr", 0.01)
}

#[tokio::test]
async fn the_training_backend_conformance_suite_passes_on_a_scripted_dlc() {
    let server = MockServer::start().await;
    FakeDlc::default().mount(&server).await;
    let fx = TrainingFixtures {
        succeeding: spec("ok"),
        expected_log: "training on oss://bucket/raw-docs/ lr=0.01".into(),
        failing: spec("bad"),
        expected_reason: "loss is NaN".into(),
        long_running: spec("long"),
        wait: WaitOptions {
            interval: Duration::from_millis(10),
            max_interval: Duration::from_millis(40),
            timeout: Duration::from_secs(20),
        },
    };
    run_all(&backend(&server, SECRET), &fx).await;
}

#[tokio::test]
async fn a_job_spec_becomes_the_documented_create_job_body() {
    let server = MockServer::start().await;
    let fake = FakeDlc::default();
    fake.mount(&server).await;
    let mut s = spec("emb-train");
    s.framework = Framework::DeepSpeed;
    s.resources = Resources {
        workers: 2,
        gpus: 1,
        instance_type: Some("ecs.gn7i-c16g1.4xlarge".into()),
        ..Default::default()
    };
    let id = backend(&server, SECRET).submit(&s).await.unwrap();
    assert_eq!(id.0, "dlc00000001");
    let body = fake.created.lock().unwrap()[0].clone();
    assert_eq!(
        body,
        json!({
            "DisplayName": "emb-train",
            "JobType": "PyTorchJob",
            "JobSpecs": [{"Type": "Worker", "Image": "registry.cn-hangzhou.aliyuncs.com/ragloop/trainer:1",
                          "PodCount": 2, "EcsSpec": "ecs.gn7i-c16g1.4xlarge"}],
            "UserCommand": "ragloop train --dims 768",
            "WorkspaceId": "ws-test",
            "DataSources": [{"Uri": "oss://bucket.oss-cn-hangzhou-internal.aliyuncs.com/raw-docs/", "MountPath": "/mnt/data/data/"}],
            "Envs": {
                "RAGLOOP_HP_LR": "0.01",
                "RAGLOOP_INPUT_DATA": "oss://bucket/raw-docs/",
                "RAGLOOP_JOB_NAME": "emb-train",
                "RAGLOOP_OUTPUT": "oss://bucket/models/emb-v1/"
            }
        })
    );
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_that_never_shows_the_secret() {
    let server = MockServer::start().await;
    FakeDlc::default().mount(&server).await;
    let err = backend(&server, "not-the-secret")
        .submit(&spec("ok"))
        .await
        .unwrap_err();
    match &err {
        Error::Auth { message } => assert!(message.contains("SignatureDoesNotMatch"), "{message}"),
        other => panic!("expected Auth, got {other:?}"),
    }
    let shown = format!("{err} {err:?} {:?}", backend(&server, SECRET));
    assert!(
        !shown.contains(SECRET) && !shown.contains("not-the-secret"),
        "{shown}"
    );
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/jobs/dlc1"))
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body(
            "Throttling.User",
            "Request was denied due to user flow control.",
        )))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/jobs/dlc1"))
        .respond_with(
            ResponseTemplate::new(503).set_body_json(error_body("ServiceUnavailable", "try later")),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/jobs/dlc1"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"JobId": "dlc1", "Status": "Running"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let status = backend(&server, SECRET)
        .status(&rag_core::JobId("dlc1".into()))
        .await
        .unwrap();
    assert_eq!(status, rag_core::JobStatus::Running);
}

#[tokio::test]
async fn persistent_throttling_gives_up_as_rate_limited() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .set_body_json(error_body("Throttling", "slow down")),
        )
        .expect(3)
        .mount(&server)
        .await;
    let err = backend(&server, SECRET)
        .status(&rag_core::JobId("dlc1".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
}

#[tokio::test]
async fn list_jobs_walks_every_page() {
    let server = MockServer::start().await;
    for (page, ids) in [("1", vec!["a", "b"]), ("2", vec!["c"])] {
        let jobs: Vec<Value> = ids
            .iter()
            .map(|id| json!({"JobId": id, "Status": "Succeeded"}))
            .collect();
        Mock::given(method("GET"))
            .and(path("/api/v1/jobs"))
            .and(wiremock::matchers::query_param("PageNumber", page))
            .and(wiremock::matchers::query_param("WorkspaceId", "ws-test"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"Jobs": jobs, "TotalCount": 3, "RequestId": "r"})),
            )
            .mount(&server)
            .await;
    }
    let client = PaiClient::new(config(&server, SECRET)).unwrap();
    let all = client.list_all_jobs().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
}

#[tokio::test]
async fn follow_logs_streams_each_line_once_until_the_job_ends() {
    let server = MockServer::start().await;
    FakeDlc::default().mount(&server).await;
    let b = backend(&server, SECRET);
    let id = b.submit(&spec("ok")).await.unwrap();
    let mut lines = Vec::new();
    let status = b
        .follow_logs(&id, Duration::from_millis(5), |l| lines.push(l.to_string()))
        .await
        .unwrap();
    assert_eq!(status, rag_core::JobStatus::Succeeded);
    assert_eq!(
        lines,
        [
            "[dlc00000001-worker-0] starting ok",
            "[dlc00000001-worker-0] training on oss://bucket/raw-docs/ lr=0.01"
        ]
    );
}

/// An answer cut mid-body: a read (GetJob) is asked again and succeeds; a CreateJob is not
/// sent twice — the job may exist — and the error says so.
#[tokio::test]
async fn a_cut_answer_is_retried_for_reads_but_create_job_is_never_sent_twice() {
    use rag_core::conformance::http_faults::{FaultServer, Reply};
    let job = serde_json::to_vec(&json!({
        "JobId": "dlc-cut", "DisplayName": "emb", "JobType": "PyTorchJob", "Status": "Running",
        "WorkspaceId": "ws-test", "RequestId": "req-get"
    }))
    .unwrap();
    let server = FaultServer::start(move |req, n| match (req.method.as_str(), n) {
        ("GET", 0) => Reply::cut(200, &job[..20], job.len()),
        ("GET", _) => Reply::ok(&job),
        _ => Reply::cut(200, br#"{"JobId": "dlc-"#, 60),
    })
    .await;
    let pai = backend_at(config_at(server.uri(), SECRET));
    let status = pai
        .status(&rag_core::JobId("dlc-cut".into()))
        .await
        .unwrap();
    assert_eq!(status, rag_core::JobStatus::Running);
    assert_eq!(server.requests().len(), 2, "the cut GetJob was asked again");

    let err = pai.submit(&spec("emb")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("may have taken effect"), "{err}");
    let creates = server
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(creates, 1, "CreateJob was not repeated");
}

/// A service slower than the request time-out: reads are retried, then a typed `Timeout`.
#[tokio::test]
async fn a_slow_service_times_out_as_a_typed_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/v1/jobs/.*"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(Duration::from_secs(3))
                .set_body_json(json!({"JobId": "dlc1", "Status": "Running"})),
        )
        .mount(&server)
        .await;
    let pai = backend(&server, SECRET);
    let err = pai
        .status(&rag_core::JobId("dlc1".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

/// A service that stalls mid-answer (part of the body, then silence) does not hang a call: the
/// request time-out ends each attempt, reads are retried, then it is a typed error.
#[tokio::test]
async fn a_service_that_stalls_mid_answer_does_not_hang() {
    use rag_core::conformance::http_faults::{FaultServer, Reply};
    let server = FaultServer::start(|_req, _n| Reply::Stall {
        status: 200,
        headers: Vec::new(),
        declared: 500,
        sent: br#"{"JobId": "dlc1", "Sta"#.to_vec(),
    })
    .await;
    let pai = backend_at(config_at(server.uri(), SECRET));
    let started = std::time::Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(20),
        pai.status(&rag_core::JobId("dlc1".into())),
    )
    .await;
    let err = got.expect("the call hung").unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(server.requests().len(), 3, "each attempt timed out");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn mounts_every_job_carries_come_before_its_inputs() {
    let config = config_at("http://127.0.0.1:9".into(), SECRET);
    let backend = PaiBackend::new(
        PaiClient::new(config).unwrap(),
        DlcDefaults {
            image: "dsw-registry-vpc.cn-hangzhou.cr.aliyuncs.com/pai/pytorch:2.8.0".into(),
            resource_id: None,
            ecs_spec: "ecs.g7.xlarge".into(),
            oss_region: "cn-hangzhou".into(),
            mounts: vec![(
                "oss://bucket/rag/bin/".parse().unwrap(),
                "/mnt/data/ragloop-bin/".into(),
            )],
        },
    );
    let req = backend.create_request(&spec("emb-train")).unwrap();
    let body = serde_json::to_value(&req).unwrap();
    assert_eq!(
        body["DataSources"],
        json!([
            {"Uri": "oss://bucket.oss-cn-hangzhou-internal.aliyuncs.com/rag/bin/", "MountPath": "/mnt/data/ragloop-bin/"},
            {"Uri": "oss://bucket.oss-cn-hangzhou-internal.aliyuncs.com/raw-docs/", "MountPath": "/mnt/data/data/"}
        ])
    );
    // Only OSS can be mounted.
    let local = PaiBackend::new(
        backend.client().clone(),
        DlcDefaults {
            image: "x".into(),
            resource_id: None,
            ecs_spec: "ecs.g7.xlarge".into(),
            oss_region: "cn-hangzhou".into(),
            mounts: vec![("file:///tmp/bin/".parse().unwrap(), "/mnt/x/".into())],
        },
    );
    assert!(local.create_request(&spec("emb-train")).is_err());
}

/// The errors a cloud user meets, answered by the service with the bodies Alibaba Cloud's
/// OpenAPI common error reference and PAI-DLC document: each reaches the caller as one line
/// that says what to do and carries the request id, typed so that none is retried.
#[tokio::test]
async fn errors_a_user_can_fix_come_back_with_what_to_do_and_the_request_id() {
    let cases = [
        (
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
        ),
        (
            400,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
            "STS token has expired",
        ),
        (
            403,
            "Forbidden.RAM",
            "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
            "AliyunPAIDLCFullAccess",
        ),
        (
            400,
            "QuotaExceeded",
            "The quota of resource group is not enough.",
            "jobs.resource_id",
        ),
        (
            404,
            "WorkspaceNotFound",
            "The workspace ws-test does not exist.",
            "jobs.workspace_id",
        ),
        (
            400,
            "InvalidRegionId",
            "The specified region does not exist.",
            "jobs.region",
        ),
    ];
    for (status, code, message, remedy) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v1/jobs"))
            .respond_with(ResponseTemplate::new(status).set_body_json(error_body(code, message)))
            .mount(&server)
            .await;
        let err = backend(&server, SECRET)
            .submit(&spec("ok"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(remedy), "{code}: {text}");
        assert!(text.contains(code), "{code}: {text}");
        assert!(
            text.contains("9B5C1E2A-0C3B-5C2D-9B1A-7E5F0D1C2B3A"),
            "{code}: the request id is missing: {text}"
        );
        assert!(!err.is_retryable(), "{code}: {err:?}");
        assert_eq!(text.lines().count(), 1, "{code}: {text}");
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1,
            "{code}: a user's error is not retried"
        );
    }
}
