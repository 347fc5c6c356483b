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
