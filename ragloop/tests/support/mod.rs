//! What the CLI and example tests share: a two-page corpus with one query, the reference
//! model's directory, and an OpenAI-compatible LLM that cites what it is given.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wiremock::{Request, Respond, ResponseTemplate};

/// Writes `docs/pages.jsonl` (dup.2 and kill.2) and `queries.jsonl` (one test query whose
/// answer is kill.2) under `dir`; returns both paths.
pub fn write_corpus(dir: &Path) -> (PathBuf, PathBuf) {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(
        docs.join("pages.jsonl"),
        concat!(
            r#"{"id":"dup.2","title":"dup","text":"DESCRIPTION\n   The dup() system call allocates a new file descriptor referring to the same open file."}"#,
            "\n",
            r#"{"id":"kill.2","title":"kill","text":"DESCRIPTION\n   The kill() system call sends a signal to a process or process group."}"#,
            "\n"
        ),
    )
    .unwrap();
    let queries = dir.join("queries.jsonl");
    std::fs::write(
        &queries,
        r#"{"id":"q1","text":"send a signal to a process","relevant":["kill.2"],"split":"test"}"#,
    )
    .unwrap();
    (docs, queries)
}

/// all-MiniLM-L6-v2 (`scripts/fetch-model.sh`), or `RAGLOOP_TEST_MODEL`.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("RAGLOOP_TEST_MODEL").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2"),
        PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").exists(),
        "{} has no model: run scripts/fetch-model.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// An OpenAI-compatible chat-completions server answering "kill() sends a signal." and citing
/// the first chunk tag of the prompt's context; usage 150 + 8 = 158 tokens.
pub struct CitingLlm {
    /// The question the prompt must carry, if checked.
    pub question: Option<&'static str>,
}

impl Respond for CitingLlm {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let prompt = body["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(prompt.contains("Context:"), "{prompt}");
        if let Some(q) = self.question {
            assert!(prompt.contains(&format!("Question: {q}")), "{prompt}");
        }
        let start = prompt.find('[').unwrap();
        let end = start + prompt[start..].find(']').unwrap();
        let id = &prompt[start + 1..end];
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": format!("kill() sends a signal. [{id}]")},
                         "finish_reason": "stop", "index": 0, "logprobs": null}],
            "object": "chat.completion",
            "usage": {"prompt_tokens": 150, "completion_tokens": 8, "total_tokens": 158},
            "created": 1735120033, "model": "qwen2.5", "id": "chatcmpl-1"
        }))
    }
}

/// What [`FakeDashScope`] saw and holds.
#[derive(Default)]
pub struct DashScopeState {
    /// (method, path) of every request.
    pub requests: Vec<(String, String)>,
    /// Uploaded file ids → the multipart body.
    pub files: std::collections::BTreeMap<String, String>,
    /// Fine-tune id → (create body, polls).
    pub jobs: std::collections::BTreeMap<String, (Value, u32)>,
    /// Deployment id → (model, deleted).
    pub deployments: std::collections::BTreeMap<String, (String, bool)>,
    /// The `model` of every chat completion.
    pub chat_models: Vec<String>,
}

/// DashScope as its API reference shows it: the native API (`/api/v1`: file upload,
/// fine-tunes, deployments) and the OpenAI-compatible chat (`/compatible-mode/v1`), with
/// scripted outcomes. Chat answers question-writing prompts with two questions and RAG prompts
/// by citing the first chunk.
#[derive(Clone, Default)]
pub struct FakeDashScope {
    /// Shared state.
    pub state: std::sync::Arc<std::sync::Mutex<DashScopeState>>,
    /// Fine-tunes end FAILED (InvalidDataFormat) instead of SUCCEEDED.
    pub fail_fine_tune: bool,
    /// Deployments never leave DEPLOYING.
    pub never_ready: bool,
}

impl Respond for FakeDashScope {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.state.lock().unwrap();
        let path = req.url.path().to_string();
        st.requests.push((req.method.to_string(), path.clone()));
        let ok = |output: Value| {
            ResponseTemplate::new(200)
                .set_body_json(json!({"request_id": "req-1", "output": output}))
        };
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("POST", ["compatible-mode", "v1", "chat", "completions"]) => {
                st.chat_models
                    .push(body["model"].as_str().unwrap().to_string());
                let prompt = body["messages"].as_array().unwrap().last().unwrap()["content"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let content = match (prompt.find('['), prompt.starts_with("Context:")) {
                    (Some(start), true) => {
                        let end = start + prompt[start..].find(']').unwrap();
                        format!("It is described here. [{}]", &prompt[start + 1..end])
                    }
                    _ => "1. What does this system call do?\n2. When is it used?".to_string(),
                };
                ResponseTemplate::new(200).set_body_json(json!({
                    "choices": [{"message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop", "index": 0}],
                    "object": "chat.completion",
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110},
                    "created": 1735120033, "model": body["model"], "id": "chatcmpl-1"
                }))
            }
            ("POST", ["api", "v1", "files"]) => {
                let form = String::from_utf8_lossy(&req.body);
                assert!(form.contains("name=\"purpose\"\r\n\r\nfine-tune"), "{form}");
                let id = format!("file-{}", st.files.len() + 1);
                st.files
                    .insert(id.clone(), String::from_utf8_lossy(&req.body).to_string());
                ResponseTemplate::new(200).set_body_json(json!({"request_id": "r", "data": {
                    "uploaded_files": [{"file_id": id, "name": "train.jsonl"}], "failed_uploads": []}}))
            }
            ("POST", ["api", "v1", "fine-tunes"]) => {
                let id = format!("ft-202611261000-{:04}", st.jobs.len() + 1);
                st.jobs.insert(id.clone(), (body.clone(), 0));
                ok(json!({"job_id": id, "status": "PENDING", "model": body["model"]}))
            }
            ("GET", ["api", "v1", "fine-tunes", id]) => {
                let Some((create, polls)) = st.jobs.get_mut(*id) else {
                    return ResponseTemplate::new(404).set_body_json(
                        json!({"request_id": "r", "code": "NotFound", "message": "Job"}),
                    );
                };
                *polls += 1;
                let model = create["model"].as_str().unwrap().to_string();
                let status = match (*polls, self.fail_fine_tune) {
                    (1, _) => "RUNNING",
                    (_, false) => "SUCCEEDED",
                    (_, true) => "FAILED",
                };
                let mut v =
                    json!({"job_id": id, "status": status, "model": model, "base_model": model});
                if status == "SUCCEEDED" {
                    v["finetuned_output"] = json!(format!("{model}-ft-{id}"));
                }
                if status == "FAILED" {
                    v["code"] = json!("InvalidDataFormat");
                    v["message"] = json!("line 3 of the training file is not a messages object");
                }
                ok(v)
            }
            ("GET", ["api", "v1", "fine-tunes", _, "logs"]) => {
                ok(json!({"total": 1, "logs": ["step 10 loss 0.42"]}))
            }
            ("GET", ["api", "v1", "deployments"]) => {
                ok(json!({"deployments": [], "page_no": 1, "page_size": 100, "total": 0}))
            }
            ("GET", ["api", "v1", "deployments", "models"]) => {
                let models: Vec<Value> = st
                    .jobs
                    .iter()
                    .map(|(id, (create, _))| json!({"model_name": format!("{}-ft-{id}", create["model"].as_str().unwrap()), "base_capacity": 1}))
                    .collect();
                ok(json!({"models": models, "page_no": 1, "page_size": 100, "total": models.len()}))
            }
            ("POST", ["api", "v1", "deployments"]) => {
                let model = body["model_name"].as_str().unwrap().to_string();
                let id = format!("{model}-{}", body["suffix"].as_str().unwrap_or("x"));
                st.deployments.insert(id.clone(), (model.clone(), false));
                ok(
                    json!({"deployed_model": id, "status": "PENDING", "model_name": model, "capacity": body["capacity"]}),
                )
            }
            ("GET", ["api", "v1", "deployments", id]) => match st.deployments.get(*id) {
                Some((model, false)) => ok(json!({"deployed_model": id, "model_name": model,
                    "status": if self.never_ready { "DEPLOYING" } else { "RUNNING" }})),
                _ => ResponseTemplate::new(404).set_body_json(
                    json!({"request_id": "r", "code": "NotFound", "message": "Model"}),
                ),
            },
            ("DELETE", ["api", "v1", "deployments", id]) => match st.deployments.get_mut(*id) {
                Some(d) => {
                    d.1 = true;
                    ok(json!({"deployed_model": id, "status": "DELETING"}))
                }
                None => ResponseTemplate::new(404).set_body_json(
                    json!({"request_id": "r", "code": "NotFound", "message": "Model"}),
                ),
            },
            other => panic!("unexpected DashScope call {other:?}"),
        }
    }
}
