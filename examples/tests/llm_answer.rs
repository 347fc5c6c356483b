//! The `llm_answer` example's library half: configuration from the environment, and the answer
//! step against an OpenAI-compatible server (wiremock speaking the chat-completions format).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use examples::llm_answer::{LlmEnv, NOT_CONFIGURED, answer};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn configuration_comes_from_the_environment() {
    assert!(LlmEnv::from_vars(vars(&[])).unwrap().is_none());
    assert!(
        NOT_CONFIGURED.contains("RAGLOOP_LLM_BASE_URL")
            && NOT_CONFIGURED.contains("DASHSCOPE_API_KEY")
    );
    let dashscope = LlmEnv::from_vars(vars(&[
        ("DASHSCOPE_API_KEY", "sk-secret-1"),
        ("DASHSCOPE_REGION", "singapore"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(dashscope.model, "qwen-plus");
    assert_eq!(
        dashscope.config.api_base(),
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
    );
    assert!(!format!("{dashscope:?}").contains("sk-secret-1"));
    let local = LlmEnv::from_vars(vars(&[
        ("RAGLOOP_LLM_BASE_URL", "http://127.0.0.1:8000/v1"),
        ("RAGLOOP_LLM_MODEL", "qwen2.5"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (local.config.api_base().as_str(), local.model.as_str()),
        ("http://127.0.0.1:8000/v1", "qwen2.5")
    );
    assert!(local.config.api_key().is_none());
    let err = LlmEnv::from_vars(vars(&[("RAGLOOP_LLM_BASE_URL", "http://x/v1")])).unwrap_err();
    assert!(err.to_string().contains("RAGLOOP_LLM_MODEL"), "{err}");
    assert!(
        LlmEnv::from_vars(vars(&[
            ("DASHSCOPE_API_KEY", "k"),
            ("DASHSCOPE_REGION", "mars")
        ]))
        .is_err()
    );
}

/// Answers from the context it is given, citing the first chunk tag of the prompt.
struct CitingLlm;

impl Respond for CitingLlm {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let prompt = body["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            prompt.contains("Context:") && prompt.contains("Question: How do I send a signal?"),
            "{prompt}"
        );
        let start = prompt.find('[').unwrap();
        let end = start + prompt[start..].find(']').unwrap();
        let id = &prompt[start + 1..end];
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": format!("Use kill() to send a signal. [{id}]")},
                         "finish_reason": "stop", "index": 0, "logprobs": null}],
            "object": "chat.completion",
            "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
            "created": 1735120033, "model": "qwen2.5", "id": "chatcmpl-1"
        }))
    }
}

#[tokio::test]
async fn answers_with_the_llm_and_cites_the_retrieved_chunk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-local"))
        .respond_with(CitingLlm)
        .expect(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pages.jsonl"),
        concat!(
            r#"{"id":"kill.2","title":"kill","text":"DESCRIPTION\n   The kill() system call sends a signal to a process or process group."}"#,
            "\n",
            r#"{"id":"dup.2","title":"dup","text":"DESCRIPTION\n   The dup() system call allocates a new file descriptor."}"#,
            "\n"
        ),
    )
    .unwrap();
    let env = LlmEnv::from_vars(vars(&[
        ("RAGLOOP_LLM_BASE_URL", &format!("{}/v1", server.uri())),
        ("RAGLOOP_LLM_MODEL", "qwen2.5"),
        ("DASHSCOPE_API_KEY", "sk-local"),
    ]))
    .unwrap()
    .unwrap();
    let a = answer(env, dir.path().to_path_buf(), "How do I send a signal?")
        .await
        .unwrap();
    assert!(a.text.starts_with("Use kill()"), "{}", a.text);
    assert_eq!(a.citations.len(), 1);
    assert_eq!(a.citations[0].doc_id, "kill.2");
    assert_eq!(a.usage.total_tokens, 129);
}
