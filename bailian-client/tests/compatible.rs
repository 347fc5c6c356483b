//! ChatClient and EmbeddingClient against wiremock speaking DashScope's OpenAI-compatible wire
//! format (bodies as in the Model Studio API reference): the exact JSON sent, streaming with
//! the usage-only final chunk, retries, typed errors, and the shared conformance suites.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bailian_client::{BailianConfig, ChatClient, EmbeddingClient, EmbeddingOptions, Region};
use futures::StreamExt;
use rag_core::chat::{ChatEvent, ChatModel, ChatRequest, Message, Usage};
use rag_core::{EmbeddingModel, Error, Secret};
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "sk-test-0123456789abcdef";

fn config(server: &MockServer) -> BailianConfig {
    let mut c = BailianConfig::new(Region::Beijing)
        .with_api_base(format!("{}/compatible-mode/v1", server.uri()))
        .with_api_key(Secret::new(KEY));
    c.retry.initial_backoff = Duration::from_millis(10);
    c.retry.max_backoff = Duration::from_millis(200);
    c
}

/// The non-streaming answer of the API reference.
fn completion(content: &str) -> Value {
    json!({
        "choices": [{"message": {"role": "assistant", "content": content},
                     "finish_reason": "stop", "index": 0, "logprobs": null}],
        "object": "chat.completion",
        "usage": {"prompt_tokens": 3019, "completion_tokens": 104, "total_tokens": 3123,
                  "prompt_tokens_details": {"cached_tokens": 2048}},
        "created": 1735120033, "system_fingerprint": null, "model": "qwen-plus",
        "id": "chatcmpl-6ada9ed2-7f33-9de2-8bb0-78bd4035025a"
    })
}

fn chunk(delta: Value, finish: Value) -> String {
    let c = json!({
        "choices": [{"delta": delta, "index": 0, "logprobs": null, "finish_reason": finish}],
        "object": "chat.completion.chunk", "usage": null, "created": 1715931028,
        "system_fingerprint": null, "model": "qwen-plus",
        "id": "chatcmpl-3bb05cf5cd819fbca5f0b8d67a025022"
    });
    format!("data: {c}\n\n")
}

/// A streamed answer as DashScope sends it with `stream_options.include_usage`.
fn stream_body(parts: &[&str], usage: Usage, done: bool) -> String {
    let mut body = chunk(json!({"content": "", "role": "assistant"}), Value::Null);
    for p in parts {
        body += &chunk(json!({"content": p}), Value::Null);
    }
    body += &chunk(json!({"content": ""}), json!("stop"));
    let last = json!({
        "choices": [], "object": "chat.completion.chunk",
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.total_tokens},
        "created": 1715931028, "system_fingerprint": null, "model": "qwen-plus",
        "id": "chatcmpl-3bb05cf5cd819fbca5f0b8d67a025022"
    });
    body += &format!("data: {last}\n\n");
    if done {
        body += "data: [DONE]\n\n";
    }
    body
}

fn sse(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "text/event-stream")
        .set_body_string(body)
}

#[tokio::test]
async fn chat_sends_the_openai_body_and_reads_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/compatible-mode/v1/chat/completions"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(completion("dup() duplicates it [c1]")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let llm = ChatClient::new(config(&server), "custom-llm-v1").unwrap();
    let mut req = ChatRequest {
        messages: vec![
            Message::system("Answer from the context."),
            Message::user("Context: …\nQuestion: dup?"),
        ],
        params: Default::default(),
    };
    req.params.temperature = Some(0.2);
    req.params.top_p = Some(0.9);
    req.params.max_tokens = Some(256);
    req.params.stop = vec!["\n\n".into()];
    req.params.seed = Some(7);
    let resp = llm.chat(&req).await.unwrap();
    assert_eq!(resp.content, "dup() duplicates it [c1]");
    assert_eq!(resp.usage, Usage::new(3019, 104));
    assert_eq!(resp.finish_reason.as_deref(), Some("stop"));
    let sent: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(
        sent,
        json!({
            "model": "custom-llm-v1",
            "messages": [{"role": "system", "content": "Answer from the context."},
                         {"role": "user", "content": "Context: …\nQuestion: dup?"}],
            "temperature": 0.2f32, "top_p": 0.9f32, "max_tokens": 256, "stop": ["\n\n"], "seed": 7
        })
    );
}

#[tokio::test]
async fn stream_yields_deltas_then_done_with_the_usage_only_chunk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/compatible-mode/v1/chat/completions"))
        .and(body_partial_json(
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ))
        .respond_with(sse(stream_body(
            &["我是", "通义", "千问"],
            Usage::new(22, 17),
            true,
        )))
        .mount(&server)
        .await;
    let llm = ChatClient::new(config(&server), "qwen-plus").unwrap();
    let events: Vec<_> = llm
        .chat_stream(&ChatRequest::user("你是谁？"))
        .await
        .unwrap()
        .collect()
        .await;
    let events: Vec<ChatEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        events,
        [
            ChatEvent::Delta("我是".into()),
            ChatEvent::Delta("通义".into()),
            ChatEvent::Delta("千问".into()),
            ChatEvent::Done {
                usage: Usage::new(22, 17),
                finish_reason: Some("stop".into())
            }
        ]
    );
}

#[tokio::test]
async fn a_truncated_stream_ends_with_an_error_not_a_silent_half_answer() {
    let server = MockServer::start().await;
    let mut body = stream_body(&["half"], Usage::new(1, 1), false);
    body += "data: {\"choices\":[{\"delta\":{\"content\":\"cut";
    Mock::given(method("POST"))
        .respond_with(sse(body))
        .mount(&server)
        .await;
    let llm = ChatClient::new(config(&server), "qwen-plus").unwrap();
    let events: Vec<_> = llm
        .chat_stream(&ChatRequest::user("q"))
        .await
        .unwrap()
        .collect()
        .await;
    assert!(matches!(events[0], Ok(ChatEvent::Delta(ref d)) if d == "half"));
    let last = events.last().unwrap();
    assert!(matches!(last, Err(Error::Unavailable { .. })), "{last:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Ok(ChatEvent::Done { .. })))
    );
}

#[tokio::test]
async fn malformed_stream_chunks_and_in_stream_errors_are_typed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/compatible-mode/v1/chat/completions"))
        .respond_with(sse("data: {not json\n\n".into()))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(sse(format!(
            "{}data: {}\n\n",
            chunk(json!({"content": "a"}), Value::Null),
            json!({"error": {"code": "data_inspection_failed", "message": "Output data may contain inappropriate content.", "type": "data_inspection_failed"}, "request_id": "r-1"})
        )))
        .mount(&server)
        .await;
    let llm = ChatClient::new(config(&server), "qwen-plus").unwrap();
    let events: Vec<_> = llm
        .chat_stream(&ChatRequest::user("q"))
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        matches!(events.as_slice(), [Err(Error::Backend { .. })]),
        "{events:?}"
    );
    let events: Vec<_> = llm
        .chat_stream(&ChatRequest::user("q"))
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        matches!(events.last(), Some(Err(Error::ContentFiltered { .. }))),
        "{events:?}"
    );
}

#[tokio::test]
async fn throttling_is_retried_honouring_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0.05")
                .set_body_json(json!({"code": "Throttling.RateQuota", "message": "Requests rate limit exceeded, please try again later.", "request_id": "r-429"})),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("ok")))
        .mount(&server)
        .await;
    let llm = ChatClient::new(config(&server), "qwen-plus").unwrap();
    assert_eq!(
        llm.chat(&ChatRequest::user("q")).await.unwrap().content,
        "ok"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn server_errors_give_up_after_max_retries_with_the_request_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {"code": "internal_error", "message": "An internal error has occured, please try again later.", "type": "internal_error"}, "request_id": "r-500"})))
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.retry.max_retries = 2;
    let llm = ChatClient::new(c, "qwen-plus").unwrap();
    let err = llm.chat(&ChatRequest::user("q")).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    assert!(
        err.to_string().contains("r-500") && err.to_string().contains("internal_error"),
        "{err}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn content_filter_and_bad_key_are_distinct_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer sk-wrong"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "Incorrect API key provided. ", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}, "request_id": "r-401"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {"code": "data_inspection_failed", "param": null, "message": "Input data may contain inappropriate content.", "type": "data_inspection_failed"}, "id": "chatcmpl-deab386b", "request_id": "deab386b-2562"})))
        .mount(&server)
        .await;
    let llm = ChatClient::new(config(&server), "qwen-plus").unwrap();
    let err = llm.chat(&ChatRequest::user("q")).await.unwrap_err();
    assert!(matches!(err, Error::ContentFiltered { .. }), "{err}");
    let wrong = ChatClient::new(
        config(&server).with_api_key(Secret::new("sk-wrong")),
        "qwen-plus",
    )
    .unwrap();
    let err = wrong.chat(&ChatRequest::user("q")).await.unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("sk-wrong"));
    // One line with what to do and the request id.
    let text = err.to_string();
    assert!(
        text.contains("DASHSCOPE_API_KEY") && text.contains("r-401"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1, "{text}");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "neither is retried"
    );
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(completion("late"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    let mut c = config(&server);
    c.timeout = Duration::from_millis(200);
    c.retry.max_retries = 1;
    let llm = ChatClient::new(c, "qwen-plus").unwrap();
    let t = std::time::Instant::now();
    let err = llm.chat(&ChatRequest::user("q")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

/// An OpenAI-compatible server that answers any chat: streamed or not, the same text, usage
/// counted from the request.
struct FakeLlm;

impl Respond for FakeLlm {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let prompt: u32 = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().split_whitespace().count() as u32)
            .sum();
        let answer = ["dup() ", "duplicates ", "a file descriptor ", "[c1]"];
        let usage = Usage::new(prompt, answer.len() as u32);
        if body["stream"] == json!(true) {
            sse(stream_body(&answer, usage, true))
        } else {
            let mut c = completion(&answer.concat());
            c["usage"] = json!({"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens});
            ResponseTemplate::new(200).set_body_json(c)
        }
    }
}

#[tokio::test]
async fn chat_model_conformance() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/compatible-mode/v1/chat/completions"))
        .respond_with(FakeLlm)
        .mount(&server)
        .await;
    let llm = ChatClient::new(config(&server), "qwen-plus").unwrap();
    rag_core::conformance::chat::run_all(&llm).await;
}

/// An embeddings server: bag-of-words vectors (so related texts are closer), answered in the
/// documented shape with the items in reverse order (clients must use `index`).
struct FakeEmbeddings {
    dims: usize,
}

impl Respond for FakeEmbeddings {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let inputs = body["input"].as_array().unwrap();
        if inputs.len() > 10 || inputs.iter().any(|t| t.as_str().unwrap().is_empty()) {
            return ResponseTemplate::new(400).set_body_json(json!({"error": {"code": "InvalidParameter", "message": "batch size is invalid, it should not be larger than 10.", "type": "InvalidParameter"}, "request_id": "r-400"}));
        }
        let mut data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut v = vec![0.0f32; self.dims];
                for w in t
                    .as_str()
                    .unwrap()
                    .to_lowercase()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                {
                    let h = w
                        .bytes()
                        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
                    v[(h % self.dims as u64) as usize] += 1.0;
                }
                v[0] += 0.01;
                json!({"embedding": v, "index": i, "object": "embedding"})
            })
            .collect();
        data.reverse();
        ResponseTemplate::new(200).set_body_json(json!({
            "data": data, "model": "text-embedding-v4", "object": "list",
            "usage": {"prompt_tokens": 184, "total_tokens": 184},
            "id": "73591b79-d194-9bca-8bb5-000000000000"
        }))
    }
}

fn embedder(server: &MockServer, dims: usize) -> EmbeddingClient {
    EmbeddingClient::new(
        config(server),
        "text-embedding-v4",
        dims,
        EmbeddingOptions::default(),
    )
    .unwrap()
}

async fn embeddings_server(dims: usize) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/compatible-mode/v1/embeddings"))
        .respond_with(FakeEmbeddings { dims })
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn embeddings_batch_by_ten_keep_order_and_send_dimensions() {
    let server = embeddings_server(64).await;
    let model = embedder(&server, 64);
    let texts: Vec<String> = (0..23)
        .map(|i| format!("text number {i} word{i}"))
        .collect();
    let vectors = model.embed_documents(&texts).await.unwrap();
    assert_eq!(vectors.len(), 23);
    let requests = server.received_requests().await.unwrap();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["input"]
                .as_array()
                .unwrap()
                .len()
        })
        .collect();
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [3, 10, 10]);
    let first: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(first["dimensions"], 64);
    assert_eq!(first["encoding_format"], "float");
    assert_eq!(first["model"], "text-embedding-v4");
    // Each vector belongs to its own text although the server answered in reverse order.
    for (i, t) in texts.iter().enumerate() {
        let alone = model.embed_query(t).await.unwrap();
        assert!(
            rag_core::embedding::cosine(&alone, &vectors[i]) > 0.9999,
            "text {i}"
        );
    }
}

#[tokio::test]
async fn embeddings_of_the_wrong_dimension_are_refused() {
    let server = embeddings_server(32).await;
    let model = embedder(&server, 64);
    let err = model.embed_query("hello").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimensionMismatch {
                expected: 64,
                actual: 32
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn embedding_model_conformance() {
    let server = embeddings_server(128).await;
    let model = embedder(&server, 128);
    rag_core::conformance::embedding::run_all(&model).await;
}

/// A connection reset in the middle of a JSON body is retried like a failed send, and both
/// kinds of failure share one budget: `max_retries + 1` attempts in all (503s and cut bodies
/// alternating once made it `(max_retries + 1)²`).
#[tokio::test]
async fn a_body_cut_mid_read_is_retried_within_one_budget() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = sock.read(&mut buf).await;
                // Odd attempts: 503. Even ones: promise 500 bytes, send a few, hang up.
                let answer: &[u8] = if n.is_multiple_of(2) {
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"id\": \"chatcmpl-"
                };
                let _ = sock.write_all(answer).await;
            });
        }
    });
    let mut c = BailianConfig::new(Region::Beijing)
        .with_api_base(format!("http://{addr}/compatible-mode/v1"))
        .with_api_key(Secret::new(KEY));
    c.retry.initial_backoff = Duration::from_millis(1);
    c.retry.max_backoff = Duration::from_millis(5);
    c.retry.max_retries = 2;
    let llm = ChatClient::new(c, "qwen-plus").unwrap();
    let req = ChatRequest {
        messages: vec![Message::user("dup?")],
        params: Default::default(),
    };
    let err = llm.chat(&req).await.unwrap_err();
    assert!(
        err.is_retryable(),
        "a cut body is a transient failure: {err:?}"
    );
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        3,
        "max_retries + 1 attempts, not (max_retries + 1)²"
    );
}

/// A 200 whose body is not the documented JSON (a gateway's HTML page, JSON of another shape)
/// is a typed error, never a panic or an empty answer / missing vectors.
#[tokio::test]
async fn answers_that_are_not_the_documented_json_are_typed_errors() {
    for (content_type, body) in [
        ("text/html", "<html><body>302 Found</body></html>"),
        ("application/json", r#"{"choices": "none", "data": 7}"#),
        (
            "application/json",
            r#"{"choices": [{"message": {"role": "assist"#,
        ),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(body, content_type))
            .mount(&server)
            .await;
        let llm = ChatClient::new(config(&server), "qwen-plus").unwrap();
        let err = llm.chat(&ChatRequest::user("hello")).await.unwrap_err();
        assert!(
            matches!(err, Error::Backend { .. } | Error::Unavailable { .. }),
            "chat with {body:?}: {err:?}"
        );
        let err = embedder(&server, 4)
            .embed_documents(&["a".to_string()])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Backend { .. } | Error::Unavailable { .. }),
            "embeddings with {body:?}: {err:?}"
        );
    }
}
