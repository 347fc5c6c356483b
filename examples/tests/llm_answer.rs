//! The `llm_answer` example's library half: configuration from the environment, and the answer
//! step against an OpenAI-compatible server (wiremock speaking the chat-completions format).

#![allow(clippy::unwrap_used)]

#[path = "../examples/llm_answer.rs"]
mod llm_answer;
#[path = "../../ragloop/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;

use llm_answer::answer;
use ragloop::llm_env::{LlmEnv, NOT_CONFIGURED};

use support::CitingLlm;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer};

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

#[tokio::test]
async fn answers_with_the_llm_and_cites_the_retrieved_chunk() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-local"))
        .respond_with(CitingLlm {
            question: Some("How do I send a signal?"),
        })
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
    assert!(a.text.starts_with("kill() sends a signal."), "{}", a.text);
    assert_eq!(a.citations.len(), 1);
    assert_eq!(a.citations[0].doc_id, "kill.2");
    assert_eq!(a.usage.total_tokens, 158);
}
