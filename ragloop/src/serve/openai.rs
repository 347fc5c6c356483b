//! `POST /v1/chat/completions`, OpenAI's Chat Completions wire format (request, response,
//! `chat.completion.chunk` stream ending `data: [DONE]`, error body), so any OpenAI client
//! library talks to a ragloop server. The last user message is the question; the answer is
//! grounded in the chunks retrieved for it, and the chunks it cites come in the extension
//! field `citations` (of the response, and of the stream's last chunk).
//!
//! Format: <https://platform.openai.com/docs/api-reference/chat/create> and the
//! `openai-python` SDK's `ChatCompletion` / `ChatCompletionChunk` types.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rag_core::{ChatEvent, Filter};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::api::{checked_k, cited_chunks};
use super::error::{ApiError, parse_json};

/// The request. Sampling fields are accepted so clients that send them work, and not applied:
/// the server's `[llm]` settings decide. `k` and `filter` are ragloop's extensions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatCompletionRequest {
    /// Echoed back; the server answers with its own LLM whatever is named.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation; the last `user` message is the question.
    pub messages: Vec<ChatMessage>,
    /// Stream `chat.completion.chunk`s.
    #[serde(default)]
    pub stream: bool,
    /// `{"include_usage": true}`: a last chunk with the usage and no choices.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Choices wanted: only 1.
    #[serde(default)]
    pub n: Option<u32>,
    /// Accepted, not applied.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Accepted, not applied.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Accepted, not applied.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Accepted, not applied.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Accepted, not applied.
    #[serde(default)]
    pub stop: Option<Value>,
    /// Accepted, not applied.
    #[serde(default)]
    pub seed: Option<i64>,
    /// Accepted, not applied.
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    /// Accepted, not applied.
    #[serde(default)]
    pub frequency_penalty: Option<f32>,
    /// Accepted, not applied.
    #[serde(default)]
    pub user: Option<String>,
    /// ragloop: chunks of context.
    #[serde(default)]
    pub k: Option<usize>,
    /// ragloop: only chunks whose metadata passes it.
    #[serde(default)]
    pub filter: Option<Filter>,
}

/// `stream_options`.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    /// Send the usage in a last chunk.
    #[serde(default)]
    pub include_usage: bool,
}

/// One message (other fields a client sends, such as `name`, are ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` …
    pub role: String,
    /// Text, or content parts of which the `text` ones are read.
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts (`{"type": "text", "text": …}`; others are skipped).
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Clone, Deserialize)]
pub struct Part {
    /// `text`, `image_url` …
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The question: the last user message's text.
fn question(req: &ChatCompletionRequest) -> Result<String, ApiError> {
    let last = req
        .messages
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or_else(|| ApiError::invalid(Some("messages".to_string()), "no user message"))?;
    let text = req.messages[last]
        .content
        .as_ref()
        .map(Content::text)
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            Some(format!("messages[{last}].content")),
            "the last user message is empty",
        ));
    }
    Ok(text)
}

fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "chatcmpl-{nanos:x}{:04x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `POST /v1/chat/completions`.
pub(super) async fn completions(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ChatCompletionRequest = parse_json(&body)?;
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            Some("n".to_string()),
            "only one choice (n = 1) is generated",
        ));
    }
    let q = question(&req)?;
    let k = checked_k(&state, req.k)?;
    let model_name = req
        .model
        .clone()
        .unwrap_or_else(|| state.chat_model.clone());
    let (id, created) = (completion_id(), now());
    let embedder = state.served.model.as_ref();
    if !req.stream {
        let a = state
            .served
            .pipeline
            .answer_with(embedder, &q, k, req.filter)
            .await?;
        state.metrics.tokens(&a.usage);
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": a.text},
                "finish_reason": "stop",
                "logprobs": null,
            }],
            "usage": a.usage,
            "citations": cited_chunks(&a.citations, &a.context),
        }))
        .into_response());
    }
    let stream = state
        .served
        .pipeline
        .answer_stream(embedder, &q, k, req.filter)
        .await?;
    let include_usage = req.stream_options.is_some_and(|o| o.include_usage);
    let context = stream.context.clone();
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        })
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let mut text = String::new();
    let body = stream.events.flat_map(move |event| {
        let out: Vec<Value> = match event {
            Ok(ChatEvent::Delta(delta)) => {
                text.push_str(&delta);
                vec![chunk(json!({ "content": delta }), None)]
            }
            Ok(ChatEvent::Done {
                usage,
                finish_reason,
            }) => {
                state.metrics.tokens(&usage);
                let cited = rag_core::pipeline::cite(&text, &context);
                let mut last = chunk(json!({}), Some(finish_reason.as_deref().unwrap_or("stop")));
                last["citations"] = json!(cited_chunks(&cited, &context));
                let mut out = vec![last];
                if include_usage {
                    let mut u = chunk(json!({}), None);
                    u["choices"] = json!([]);
                    u["usage"] = json!(usage);
                    out.push(u);
                }
                out
            }
            Err(e) => {
                let e = ApiError::from(e);
                state.metrics.error(e.kind);
                vec![serde_json::from_str(&e.json()).unwrap_or(Value::Null)]
            }
        };
        futures::stream::iter(out)
    });
    let events = futures::stream::once(async move { first })
        .chain(body)
        .map(|v| Event::default().data(v.to_string()))
        .chain(futures::stream::once(async {
            Event::default().data("[DONE]")
        }))
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events).into_response())
}
