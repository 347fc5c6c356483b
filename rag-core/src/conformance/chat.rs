//! [`ChatModel`] conformance.

use futures::TryStreamExt;

use crate::chat::{ChatEvent, ChatModel, ChatRequest, Message};
use crate::error::Error;
use crate::prompt::{ContextChunk, rag_request};

/// Runs every check. `model` must be deterministic for the same request (temperature 0 or a
/// scripted server), so that streamed and complete answers can be compared.
pub async fn run_all(model: &dyn ChatModel) {
    answers_with_usage(model).await;
    stream_matches_complete_answer(model).await;
    rejects_empty_conversations(model).await;
}

fn request() -> ChatRequest {
    let ctx = vec![ContextChunk {
        id: "c1".into(),
        text: "The dup() system call duplicates a file descriptor.".into(),
    }];
    let mut req = rag_request(&ctx, "What does dup do?");
    req.params.temperature = Some(0.0);
    req
}

/// A complete answer has text and consistent token usage.
pub async fn answers_with_usage(model: &dyn ChatModel) {
    assert!(!model.model_id().is_empty(), "model_id is set");
    let resp = model.chat(&request()).await.expect("chat");
    assert!(!resp.content.trim().is_empty(), "answer has text");
    let u = resp.usage;
    assert_eq!(
        u.total_tokens,
        u.prompt_tokens + u.completion_tokens,
        "usage adds up"
    );
    assert!(u.prompt_tokens > 0, "prompt tokens are counted");
}

/// The stream's deltas concatenate to the complete answer and end with exactly one `Done`.
pub async fn stream_matches_complete_answer(model: &dyn ChatModel) {
    let full = model.chat(&request()).await.expect("chat");
    let events: Vec<ChatEvent> = model
        .chat_stream(&request())
        .await
        .expect("chat_stream")
        .try_collect()
        .await
        .expect("stream events");
    let (last, deltas) = events.split_last().expect("at least one event");
    let text: String = deltas
        .iter()
        .map(|e| match e {
            ChatEvent::Delta(d) => d.as_str(),
            ChatEvent::Done { .. } => panic!("Done before the end of the stream"),
        })
        .collect();
    assert_eq!(text, full.content, "deltas concatenate to the answer");
    match last {
        ChatEvent::Done { usage, .. } => assert_eq!(*usage, full.usage, "final usage"),
        ChatEvent::Delta(_) => panic!("stream must end with Done"),
    }
}

/// No messages, or an assistant message last, is `InvalidInput`.
pub async fn rejects_empty_conversations(model: &dyn ChatModel) {
    let empty = ChatRequest {
        messages: vec![],
        params: Default::default(),
    };
    assert!(matches!(
        model.chat(&empty).await,
        Err(Error::InvalidInput { .. })
    ));
    let mut last_assistant = ChatRequest::user("hi");
    last_assistant.messages.push(Message {
        role: crate::chat::Role::Assistant,
        content: "hello".into(),
    });
    assert!(matches!(
        model.chat(&last_assistant).await,
        Err(Error::InvalidInput { .. })
    ));
}
