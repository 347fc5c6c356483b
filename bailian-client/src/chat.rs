//! [`ChatClient`]: OpenAI-compatible chat completions (`POST {base}/chat/completions`) as a
//! [`ChatModel`] — DashScope's compatible mode, or vLLM, llama.cpp server, Ollama.

use std::collections::VecDeque;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use rag_core::chat::{ChatEvent, ChatModel, ChatRequest, ChatResponse, Usage};
use rag_core::{Error, Result};
use reqwest::{Method, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::BailianConfig;
use crate::error::ApiError;
use crate::http::{Http, transport_error};
use crate::sse::{SseEvent, SseParser};

/// A chat model behind an OpenAI-compatible endpoint.
#[derive(Debug, Clone)]
pub struct ChatClient {
    http: Http,
    model: String,
}

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    message: Option<WireMessage>,
    delta: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<String>,
}

#[derive(Deserialize, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    total_tokens: Option<u32>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Self {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u
                .total_tokens
                .unwrap_or(u.prompt_tokens + u.completion_tokens),
        }
    }
}

const CONTENT_FILTER: &str = "content_filter";

impl ChatClient {
    /// A client for `model` (`qwen-plus`, `custom-llm-v1`, `llama3` …).
    pub fn new(config: BailianConfig, model: impl Into<String>) -> Result<Self> {
        Ok(Self {
            http: Http::new(config)?,
            model: model.into(),
        })
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.http.config.api_base())
    }

    /// The JSON body sent for `request` (exposed so callers can log or inspect it).
    pub fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let p = &request.params;
        let mut obj = serde_json::Map::new();
        obj.insert("model".into(), json!(self.model));
        obj.insert("messages".into(), json!(request.messages));
        if let Some(t) = p.temperature {
            obj.insert("temperature".into(), json!(t));
        }
        if let Some(t) = p.top_p {
            obj.insert("top_p".into(), json!(t));
        }
        if let Some(m) = p.max_tokens {
            obj.insert("max_tokens".into(), json!(m));
        }
        if !p.stop.is_empty() {
            obj.insert("stop".into(), json!(p.stop));
        }
        if let Some(s) = p.seed {
            obj.insert("seed".into(), json!(s));
        }
        if stream {
            obj.insert("stream".into(), json!(true));
            obj.insert("stream_options".into(), json!({"include_usage": true}));
        }
        Value::Object(obj)
    }
}

#[async_trait]
impl ChatModel for ChatClient {
    fn model_id(&self) -> &str {
        &self.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        request.validate()?;
        let body = self.body(request, false);
        let v: Value = self
            .http
            .json(Method::POST, &self.url(), Some(&body), "chat")
            .await?;
        if v.get("error").is_some_and(|e| !e.is_null()) {
            let raw = serde_json::to_vec(&v).unwrap_or_default();
            return Err(ApiError::parse(200, &raw).into_error("chat", None));
        }
        let completion: Completion = serde_json::from_value(v)
            .map_err(|e| Error::backend("dashscope", "chat: unexpected answer", e))?;
        let choice = completion
            .choices
            .into_iter()
            .find(|c| c.index == 0)
            .ok_or_else(|| Error::backend_msg("dashscope", "chat: the answer has no choices"))?;
        if choice.finish_reason.as_deref() == Some(CONTENT_FILTER) {
            return Err(Error::ContentFiltered {
                message: "chat: the model's output was withheld (finish_reason content_filter)"
                    .into(),
            });
        }
        Ok(ChatResponse {
            content: choice.message.and_then(|m| m.content).unwrap_or_default(),
            usage: completion.usage.map(Usage::from).unwrap_or_default(),
            finish_reason: choice.finish_reason,
        })
    }

    async fn chat_stream(
        &self,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatEvent>>> {
        request.validate()?;
        let body = self.body(request, true);
        let resp = self
            .http
            .send(Method::POST, &self.url(), Some(&body), "chat stream", false)
            .await?;
        let state = StreamState {
            resp,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            usage: None,
            finish_reason: None,
            done: false,
            timeout: self.http.config.timeout,
        };
        Ok(stream::unfold(state, StreamState::next).boxed())
    }
}

/// Turns the SSE chunks of one streamed completion into [`ChatEvent`]s.
struct StreamState {
    resp: Response,
    parser: SseParser,
    pending: VecDeque<Result<ChatEvent>>,
    usage: Option<Usage>,
    finish_reason: Option<String>,
    /// Nothing more will be read (ended, failed or `[DONE]`).
    done: bool,
    timeout: std::time::Duration,
}

impl StreamState {
    async fn next(mut self) -> Option<(Result<ChatEvent>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((event, self));
            }
            if self.done {
                return None;
            }
            match self.resp.chunk().await {
                Ok(Some(bytes)) => {
                    for event in self.parser.push(&bytes) {
                        if self.done {
                            break;
                        }
                        self.handle(event);
                    }
                }
                Ok(None) => {
                    self.done = true;
                    self.pending.push_back(Err(Error::Unavailable {
                        message: "chat stream: the connection ended before [DONE]; the answer \
                                  is incomplete"
                            .into(),
                        source: None,
                    }));
                }
                Err(e) => {
                    self.done = true;
                    self.pending
                        .push_back(Err(transport_error(e, "chat stream", self.timeout)));
                }
            }
        }
    }

    fn handle(&mut self, event: SseEvent) {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            let finish_reason = self.finish_reason.take();
            self.pending
                .push_back(if finish_reason.as_deref() == Some(CONTENT_FILTER) {
                    Err(Error::ContentFiltered {
                        message: "chat stream: the model's output was withheld (finish_reason \
                              content_filter)"
                            .into(),
                    })
                } else {
                    Ok(ChatEvent::Done {
                        usage: self.usage.unwrap_or_default(),
                        finish_reason,
                    })
                });
            return;
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                self.fail(Error::backend(
                    "dashscope",
                    format!("chat stream: malformed chunk {:?}", truncate(data, 120)),
                    e,
                ));
                return;
            }
        };
        if value.get("error").is_some_and(|e| !e.is_null())
            || value.get("code").is_some_and(|c| c.is_string())
        {
            let raw = serde_json::to_vec(&value).unwrap_or_default();
            self.fail(ApiError::parse(200, &raw).into_error("chat stream", None));
            return;
        }
        let chunk: Completion = match serde_json::from_value(value) {
            Ok(c) => c,
            Err(e) => {
                self.fail(Error::backend(
                    "dashscope",
                    "chat stream: unexpected chunk",
                    e,
                ));
                return;
            }
        };
        if let Some(u) = chunk.usage {
            self.usage = Some(u.into());
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice
                .delta
                .and_then(|d| d.content)
                .filter(|t| !t.is_empty())
            {
                self.pending.push_back(Ok(ChatEvent::Delta(text)));
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
    }

    fn fail(&mut self, e: Error) {
        self.done = true;
        self.pending.push_back(Err(e));
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
