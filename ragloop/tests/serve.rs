//! `ragloop serve`: the routes on a real socket with a real HTTP client — retrieval, answers
//! (plain and streamed), the OpenAI-compatible endpoint, health, metrics, the OpenAPI
//! description against the router, the guards (token, body size, concurrency, time limit),
//! typed 400s naming the field, graceful shutdown; and the binary itself.
#![allow(clippy::unwrap_used)]

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ragloop::config::ServeSection;
use ragloop::rag_core::local::{
    ExtractiveChat, HashedEmbedding, HashedEmbeddingConfig, InMemoryStore, LocalVectorIndex,
};
use ragloop::rag_core::pipeline::{Layout, Pipeline};
use ragloop::rag_core::{ChatModel, ChatRequest, ChatResponse, Secret};
use ragloop::serve::App;
use serde_json::{Value, json};

/// The extractive answerer, after a pause.
struct Slow(Duration);

#[async_trait]
impl ChatModel for Slow {
    fn model_id(&self) -> &str {
        "slow-extractive"
    }
    async fn chat(&self, request: &ChatRequest) -> ragloop::rag_core::Result<ChatResponse> {
        tokio::time::sleep(self.0).await;
        ExtractiveChat::new(3).chat(request).await
    }
}

/// The two-page corpus embedded and indexed with the hashed model, answered by `chat`.
async fn app(chat: Arc<dyn ChatModel>, limits: ServeSection, token: Option<&str>) -> App {
    let dir = tempfile::tempdir().unwrap();
    let (docs, _) = support::write_corpus(dir.path());
    let model = Arc::new(HashedEmbedding::new(HashedEmbeddingConfig::default()).unwrap());
    let index = Arc::new(LocalVectorIndex::in_memory());
    let pipeline = Pipeline::new(
        Arc::new(InMemoryStore::new()),
        Layout::new("mem://serve-test/".parse().unwrap()),
    )
    .with_index(index.clone())
    .with_chat(chat.clone());
    pipeline.ingest(&docs).await.unwrap();
    pipeline.embed(model.as_ref()).await.unwrap();
    pipeline.index(model.as_ref()).await.unwrap();
    App {
        pipeline,
        model,
        index,
        chat_model: chat.model_id().to_string(),
        limits,
        default_k: 5,
        token: token.map(Secret::new),
    }
}

/// Serves `app` on a free loopback port; returns its base URL and a trigger for graceful
/// shutdown, and the server's task.
async fn start(
    app: App,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        ragloop::serve::serve(listener, app, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (base, tx, task)
}

async fn default_server() -> String {
    let (base, tx, _) = start(
        app(
            Arc::new(ExtractiveChat::new(3)),
            ServeSection::default(),
            None,
        )
        .await,
    )
    .await;
    std::mem::forget(tx);
    base
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn post(base: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The server-sent events of a streamed response: (event name, data) pairs.
async fn events(base: &str, path: &str, body: &Value) -> Vec<(String, String)> {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .filter_map(|block| {
            let mut name = "message".to_string();
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                }
            }
            (!data.is_empty()).then(|| (name, data.join("\n")))
        })
        .collect()
}

#[tokio::test]
async fn retrieve_returns_hits_with_their_place_and_honours_mode_k_and_filter() {
    let base = default_server().await;
    let (status, body) = post(
        &base,
        "/v1/retrieve",
        &json!({"query": "send a signal to a process", "k": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0]["doc_id"], "kill.2");
    assert!(hits[0]["text"].as_str().unwrap().contains("signal"));
    assert!(hits[0]["score"].as_f64().unwrap() >= hits[1]["score"].as_f64().unwrap());
    assert_eq!(body["reranked"], false);
    let (_, bm25) = post(
        &base,
        "/v1/retrieve",
        &json!({"query": "file descriptor", "k": 1, "mode": "bm25"}),
    )
    .await;
    assert_eq!(bm25["hits"][0]["doc_id"], "dup.2", "{bm25}");
    let (_, filtered) = post(
        &base,
        "/v1/retrieve",
        &json!({"query": "send a signal to a process", "filter": {"eq": ["doc_id", "dup.2"]}}),
    )
    .await;
    let hits = filtered["hits"].as_array().unwrap();
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h["doc_id"] == "dup.2"),
        "{filtered}"
    );
}

#[tokio::test]
async fn answers_cite_their_chunks_plain_and_streamed_alike() {
    let base = default_server().await;
    let question = json!({"question": "How do I send a signal to a process?"});
    let (status, plain) = post(&base, "/v1/answer", &question).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["citations"][0]["doc_id"], "kill.2", "{plain}");
    assert!(
        plain["citations"][0]["text"]
            .as_str()
            .unwrap()
            .contains("kill()")
    );
    assert!(plain["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(plain["model"], "local-extractive");

    let mut streamed = question.clone();
    streamed["stream"] = json!(true);
    let evs = events(&base, "/v1/answer", &streamed).await;
    let (done, deltas) = evs.split_last().unwrap();
    assert_eq!(done.0, "done", "{evs:?}");
    assert!(
        deltas.len() > 1 && deltas.iter().all(|(n, _)| n == "delta"),
        "{evs:?}"
    );
    let text: String = deltas
        .iter()
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text, plain["answer"].as_str().unwrap());
    let done: Value = serde_json::from_str(&done.1).unwrap();
    assert_eq!(done["citations"], plain["citations"]);
    assert_eq!(done["usage"], plain["usage"]);
}

#[tokio::test]
async fn chat_completions_speak_openai_plain_and_streamed() {
    let base = default_server().await;
    let request = json!({
        "model": "ragloop",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "How do I send a signal to a process?"}]}
        ],
        "temperature": 0.2
    });
    let (status, c) = post(&base, "/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["object"], "chat.completion");
    assert!(c["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(c["model"], "ragloop");
    assert_eq!(c["choices"][0]["message"]["role"], "assistant");
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let content = c["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("signal"), "{content}");
    assert_eq!(c["citations"][0]["doc_id"], "kill.2");
    assert_eq!(
        c["usage"]["total_tokens"].as_u64().unwrap(),
        c["usage"]["prompt_tokens"].as_u64().unwrap()
            + c["usage"]["completion_tokens"].as_u64().unwrap()
    );

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let evs = events(&base, "/v1/chat/completions", &streamed).await;
    assert_eq!(evs.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == chunks[0]["id"])
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, content);
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    assert_eq!(finish["citations"], c["citations"]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], c["usage"]);
}

#[tokio::test]
async fn bad_requests_are_400s_that_name_the_field() {
    let base = default_server().await;
    let cases = [
        ("/v1/retrieve", json!({"query": "x", "top": 3}), Some("top")),
        ("/v1/retrieve", json!({"k": 3}), Some("query")),
        ("/v1/retrieve", json!({"query": "x", "k": "ten"}), Some("k")),
        ("/v1/retrieve", json!({"query": "x", "k": 0}), Some("k")),
        ("/v1/retrieve", json!({"query": "x", "k": 51}), Some("k")),
        (
            "/v1/retrieve",
            json!({"query": "x", "mode": "sparse"}),
            Some("mode"),
        ),
        (
            "/v1/retrieve",
            json!({"query": "x", "rerank": true}),
            Some("rerank"),
        ),
        ("/v1/answer", json!({"question": "   "}), Some("question")),
        (
            "/v1/chat/completions",
            json!({"messages": []}),
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            Some("n"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "tools": []}),
            Some("tools"),
        ),
    ];
    for (path, body, param) in cases {
        let (status, err) = post(&base, path, &body).await;
        assert_eq!(status, 400, "{path} {body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
        assert_eq!(
            err["error"]["param"].as_str(),
            param,
            "{path} {body}: {err}"
        );
        assert_eq!(err["error"]["code"], 400);
    }
    // Not JSON at all.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/answer"))
        .header("content-type", "application/json")
        .body("{\"question\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{err}"
    );
    // Unknown routes are JSON 404s.
    let (status, err) = post(&base, "/v1/embeddings", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["type"], "not_found");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let limits = ServeSection {
        max_body_bytes: 1024,
        ..Default::default()
    };
    let (base, _tx, _) = start(app(Arc::new(ExtractiveChat::new(3)), limits, None).await).await;
    let (status, err) = post(&base, "/v1/retrieve", &json!({"query": "x".repeat(2000)})).await;
    assert_eq!(status, 413, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn the_token_is_required_on_the_api_when_set() {
    let (base, _tx, _) = start(
        app(
            Arc::new(ExtractiveChat::new(3)),
            ServeSection::default(),
            Some("s3cret-token"),
        )
        .await,
    )
    .await;
    let client = reqwest::Client::new();
    let ask = |token: Option<&'static str>| {
        let mut r = client
            .post(format!("{base}/v1/retrieve"))
            .json(&json!({"query": "signal"}));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("s3cret-token-"),
    ] {
        let r = ask(token).await.unwrap();
        assert_eq!(r.status(), 401, "{token:?}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("s3cret"), "{body}");
    }
    assert_eq!(ask(Some("s3cret-token")).await.unwrap().status(), 200);
    // Health, readiness and metrics stay open (for probes and scrapers).
    for path in ["/healthz", "/readyz", "/metrics", "/"] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_full_server_answers_503_with_retry_after_and_a_slow_one_504() {
    let limits = ServeSection {
        max_concurrent: 1,
        timeout_secs: 1,
        ..Default::default()
    };
    let (base, _tx, _) =
        start(app(Arc::new(Slow(Duration::from_millis(700))), limits, None).await).await;
    let first = tokio::spawn({
        let base = base.clone();
        async move { post(&base, "/v1/answer", &json!({"question": "signal"})).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/retrieve"))
        .json(&json!({"query": "signal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["type"], "overloaded");
    assert_eq!(
        first.await.unwrap().0,
        200,
        "the first request still finishes"
    );

    let limits = ServeSection {
        timeout_secs: 1,
        ..Default::default()
    };
    let (base, _tx, _) =
        start(app(Arc::new(Slow(Duration::from_secs(3))), limits, None).await).await;
    let t = std::time::Instant::now();
    let (status, err) = post(&base, "/v1/answer", &json!({"question": "signal"})).await;
    assert_eq!(status, 504, "{err}");
    assert_eq!(err["error"]["type"], "timeout");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn shutdown_lets_the_requests_in_flight_finish() {
    let (base, tx, task) = start(
        app(
            Arc::new(Slow(Duration::from_millis(600))),
            ServeSection::default(),
            None,
        )
        .await,
    )
    .await;
    let in_flight = tokio::spawn({
        let base = base.clone();
        async move { post(&base, "/v1/answer", &json!({"question": "signal"})).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    tx.send(()).unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{body}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn readiness_and_metrics_report_the_server_state() {
    let base = default_server().await;
    let ready: Value = get_json(format!("{base}/readyz")).await;
    assert_eq!(ready["status"], "ready");
    assert!(ready["records"].as_u64().unwrap() >= 2, "{ready}");
    post(
        &base,
        "/v1/answer",
        &json!({"question": "How do I send a signal?"}),
    )
    .await;
    post(&base, "/v1/retrieve", &json!({"query": ""})).await;
    let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = r.text().await.unwrap();
    for line in [
        "ragloop_requests_total{route=\"/v1/answer\",status=\"200\"} 1",
        "ragloop_requests_total{route=\"/v1/retrieve\",status=\"400\"} 1",
        "ragloop_errors_total{kind=\"invalid_request_error\"} 1",
        "ragloop_request_duration_seconds_count{route=\"/v1/answer\"} 1",
        "ragloop_requests_in_flight 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let tokens: u64 = text
        .lines()
        .find(|l| l.starts_with("ragloop_llm_tokens_total{kind=\"completion\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(tokens > 0, "{text}");
}

/// Every route the OpenAPI description names is served, every route served is named, and each
/// documented example request is answered 200 with the documented required fields.
#[tokio::test]
async fn the_openapi_description_matches_the_routes() {
    let base = default_server().await;
    let spec: Value = get_json(format!("{base}/openapi.json")).await;
    assert_eq!(
        spec,
        serde_json::from_str::<Value>(ragloop::serve::OPENAPI).unwrap()
    );
    let paths = spec["paths"].as_object().unwrap();
    let client = reqwest::Client::new();
    let resolve = |v: &Value| -> Value {
        match v["$ref"].as_str() {
            Some(r) => spec.pointer(&r[1..]).unwrap().clone(),
            None => v.clone(),
        }
    };
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let r = match method.as_str() {
                "get" => client.get(format!("{base}{path}")).send().await.unwrap(),
                "post" => {
                    let content = &op["requestBody"]["content"]["application/json"];
                    client
                        .post(format!("{base}{path}"))
                        .json(&content["example"])
                        .send()
                        .await
                        .unwrap()
                }
                m => panic!("undocumented method {m}"),
            };
            assert_eq!(r.status(), 200, "{method} {path}");
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            let documented = op["responses"]["200"]["content"].as_object().unwrap();
            assert!(
                documented.keys().any(|k| ct.starts_with(k.as_str())),
                "{method} {path}: {ct} not in {documented:?}"
            );
            if let Some(schema) = documented
                .get("application/json")
                .and_then(|c| c.get("schema"))
            {
                let schema = resolve(schema);
                let body: Value = r.json().await.unwrap();
                for field in schema["required"].as_array().unwrap() {
                    assert!(
                        body.get(field.as_str().unwrap()).is_some(),
                        "{path}: {field} missing from {body}"
                    );
                }
            }
            // The request schema's fields are the ones the server accepts: a field outside it
            // is refused by name.
            if method == "post" {
                let (status, err) = post(&base, path, &json!({"not_documented": 1})).await;
                assert_eq!(status, 400);
                assert_eq!(err["error"]["param"], "not_documented", "{path}: {err}");
            }
        }
    }
    let documented: Vec<&str> = paths.keys().map(String::as_str).collect();
    for served in [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/retrieve",
        "/v1/answer",
        "/v1/chat/completions",
    ] {
        assert!(documented.contains(&served), "{served} is not documented");
    }
    assert_eq!(documented.len(), 8, "{documented:?}");
}

/// The binary: `ragloop serve` on what `ragloop run --quick` built, then SIGTERM.
#[test]
fn the_serve_command_serves_what_run_built_and_stops_on_sigterm() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (docs, queries) = support::write_corpus(dir.path());
    let work = dir.path().join("work");
    let bin = env!("CARGO_BIN_EXE_ragloop");
    let run = std::process::Command::new(bin)
        .args(["run", "--quick", "--json"])
        .arg("--data")
        .arg(&docs)
        .arg("--queries")
        .arg(&queries)
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--quick", "--addr", "127.0.0.1:0"])
        .arg("--work-dir")
        .arg(&work)
        .env_remove("RAGLOOP_CONFIG")
        .env("RAGLOOP_API_TOKEN", "t0ken")
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert!(line.contains("bearer token required"), "{line}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ready: Value = get_json(format!("{base}/readyz")).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        let a: Value = reqwest::Client::new()
            .post(format!("{base}/v1/answer"))
            .bearer_auth("t0ken")
            .json(&json!({"question": "How do I send a signal to a process?"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(a["citations"][0]["doc_id"], "kill.2", "{a}");
    });
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// The official OpenAI Python client (installed by scripts/test.sh) against the server: a
/// completion and a stream, the citations read from the extension field.
#[tokio::test]
async fn the_openai_python_client_talks_to_the_server() {
    let base = default_server().await;
    let script = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
messages = [{"role": "user", "content": "How do I send a signal to a process?"}]
r = client.chat.completions.create(model="ragloop", messages=messages)
assert r.object == "chat.completion", r
assert r.usage.total_tokens > 0, r.usage
cited = r.model_extra["citations"]
assert cited[0]["doc_id"] == "kill.2", cited
text = ""
last = None
for chunk in client.chat.completions.create(model="ragloop", messages=messages, stream=True):
    text += chunk.choices[0].delta.content or ""
    last = chunk
assert text == r.choices[0].message.content, (text, r.choices[0].message.content)
assert last.choices[0].finish_reason == "stop", last
assert last.model_extra["citations"] == cited
try:
    client.chat.completions.create(model="ragloop", messages=messages, n=3)
    raise SystemExit("n=3 was accepted")
except Exception as e:
    assert getattr(e, "status_code", None) == 400, e
print(r.choices[0].message.content)
"#;
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&base)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the OpenAI client (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("signal"));
}

/// Kills the child when dropped (a failed assertion must not leave chromedriver running).
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bundled page in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
/// which scripts/test.sh installs), driven over WebDriver: ask a question, watch the answer
/// stream in, open a citation and see its chunk with its source.
#[tokio::test]
async fn the_page_streams_an_answer_and_opens_a_citation_in_chromium() {
    use fantoccini::Locator;
    let base = default_server().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Reaped(
        std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test.sh installs it)"),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]}),
    );
    let mut client = None;
    for _ in 0..100 {
        match fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(caps.clone())
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let c = client.expect("chromedriver did not start");
    let run = async {
        c.goto(&format!("{base}/")).await?;
        assert_eq!(c.title().await?, "ragloop");
        c.find(Locator::Id("question"))
            .await?
            .send_keys("How do I send a signal to a process?")
            .await?;
        c.find(Locator::Id("send")).await?.click().await?;
        // The stream ends with the citations listed and the status line written.
        let status = c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::XPath(
                "//div[@id='status'][contains(., 'citations')]",
            ))
            .await?;
        assert!(status.text().await?.contains("tokens"));
        let answer = c.find(Locator::Id("answer")).await?.text().await?;
        assert!(answer.contains("signal"), "{answer}");
        let first = c.find(Locator::Css("a.citation")).await?;
        assert!(first.text().await?.contains("kill.2"));
        first.click().await?;
        let chunk = c.find(Locator::Id("chunk-text")).await?.text().await?;
        assert!(chunk.contains("kill()"), "{chunk}");
        let title = c.find(Locator::Id("chunk-title")).await?.text().await?;
        assert!(title.contains("kill.2"), "{title}");
        assert_eq!(c.find(Locator::Id("error")).await?.text().await?, "");
        Ok::<_, fantoccini::error::CmdError>(())
    };
    let result = run.await;
    c.close().await.unwrap();
    result.unwrap();
}

/// CORS is off unless `[serve] cors_origins` names origins; then only those get the headers
/// (preflight included).
#[tokio::test]
async fn cors_headers_go_only_to_the_configured_origins() {
    let client = reqwest::Client::new();
    let preflight = |base: String, origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, format!("{base}/v1/retrieve"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let base = default_server().await;
    let r = preflight(base.clone(), "http://elsewhere.test")
        .await
        .unwrap();
    assert_eq!(allowed(&r), None, "no CORS by default");
    let limits = ServeSection {
        cors_origins: vec!["http://app.test".into()],
        ..Default::default()
    };
    let (base, _tx, _) = start(app(Arc::new(ExtractiveChat::new(3)), limits, None).await).await;
    let r = preflight(base.clone(), "http://app.test").await.unwrap();
    assert_eq!(allowed(&r).as_deref(), Some("http://app.test"));
    let r = preflight(base.clone(), "http://elsewhere.test")
        .await
        .unwrap();
    assert_eq!(allowed(&r), None);
    let r = client
        .post(format!("{base}/v1/retrieve"))
        .header("origin", "http://app.test")
        .json(&json!({"query": "signal"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(allowed(&r).as_deref(), Some("http://app.test"));
}
