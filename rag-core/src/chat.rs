//! [`ChatModel`]: the generator that answers from retrieved context (seed step 7).

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message (an earlier answer, or a training example's target).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Sampling parameters. `None` leaves the server's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatParams {
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Most tokens to generate.
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Seed for reproducible sampling.
    pub seed: Option<u64>,
}

/// A chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far; at least one message.
    pub messages: Vec<Message>,
    /// Sampling parameters.
    pub params: ChatParams,
}

impl ChatRequest {
    /// A request of one user message with default parameters.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            messages: vec![Message::user(content)],
            params: ChatParams::default(),
        }
    }

    /// Checks what every model needs: at least one message, the last one not from the assistant.
    pub fn validate(&self) -> Result<()> {
        match self.messages.last() {
            None => Err(Error::invalid("chat request has no messages")),
            Some(m) if m.role == Role::Assistant => Err(Error::invalid(
                "the last message must be from the user or system",
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Tokens used by one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Their sum.
    pub total_tokens: u32,
}

impl Usage {
    /// Usage with `total_tokens` computed.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A complete answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The generated text.
    pub content: String,
    /// Token usage.
    pub usage: Usage,
    /// Why generation stopped (`stop`, `length`, `content_filter`), when known.
    pub finish_reason: Option<String>,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// More text.
    Delta(String),
    /// The end: always the last event of a successful stream.
    Done {
        /// Token usage of the whole call.
        usage: Usage,
        /// Why generation stopped, when known.
        finish_reason: Option<String>,
    },
}

/// A chat model: the local extractive answerer here, any OpenAI-compatible server (DashScope,
/// vLLM, Ollama) in `bailian-client`.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The model's name as the server knows it (`custom-llm-v1`).
    fn model_id(&self) -> &str;

    /// Generates a complete answer.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse>;

    /// Generates an answer as a stream of deltas that ends with one [`ChatEvent::Done`].
    ///
    /// The default calls [`ChatModel::chat`] and replays its answer word by word; servers that
    /// stream natively override it.
    async fn chat_stream(
        &self,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatEvent>>> {
        let resp = self.chat(request).await?;
        let mut events: Vec<Result<ChatEvent>> = resp
            .content
            .split_inclusive(' ')
            .map(|w| Ok(ChatEvent::Delta(w.to_string())))
            .collect();
        events.push(Ok(ChatEvent::Done {
            usage: resp.usage,
            finish_reason: resp.finish_reason,
        }));
        Ok(stream::iter(events).boxed())
    }
}
