//! The RAG prompt of seed step 7, `"Context: {chunks}\nQuestion: {query}"`, with each chunk
//! tagged by its id so that answers can cite it.

use crate::chat::{ChatRequest, Message};

/// The system instruction sent with every RAG prompt.
pub const SYSTEM_PROMPT: &str = "Answer the question using only the context. After each \
sentence, cite the chunk it came from by its id in square brackets, like [3f2a…]. If the \
context does not contain the answer, say so.";

/// One retrieved chunk as it appears in the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextChunk {
    /// Chunk id, cited as `[id]`.
    pub id: String,
    /// Chunk text.
    pub text: String,
}

/// Builds the chat request: a system instruction and
/// `Context:\n[id1] text1\n\n[id2] text2\nQuestion: query`.
pub fn rag_request(context: &[ContextChunk], question: &str) -> ChatRequest {
    let chunks = context
        .iter()
        .map(|c| format!("[{}] {}", c.id, c.text.trim()))
        .collect::<Vec<_>>()
        .join("\n\n");
    ChatRequest {
        messages: vec![
            Message::system(SYSTEM_PROMPT),
            Message::user(format!("Context:\n{chunks}\nQuestion: {}", question.trim())),
        ],
        params: Default::default(),
    }
}

/// Splits a prompt made by [`rag_request`] back into its chunks and question; `None` when
/// `text` is not in that shape.
pub fn parse_rag_prompt(text: &str) -> Option<(Vec<ContextChunk>, String)> {
    let body = text.strip_prefix("Context:")?;
    let q = body.rfind("\nQuestion:")?;
    let (context, question) = (&body[..q], &body[q + "\nQuestion:".len()..]);
    let mut chunks: Vec<ContextChunk> = Vec::new();
    for line in context.split_inclusive('\n') {
        let tagged = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .filter(|(id, _)| {
                !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            });
        match (tagged, chunks.last_mut()) {
            (Some((id, rest)), _) => chunks.push(ContextChunk {
                id: id.to_string(),
                text: rest.to_string(),
            }),
            (None, Some(last)) => last.text.push_str(line),
            (None, None) => {}
        }
    }
    for c in &mut chunks {
        c.text = c.text.trim().to_string();
    }
    Some((chunks, question.trim().to_string()))
}

/// The chunk ids cited as `[id]` in an answer, in order of first citation, limited to `known`.
pub fn cited_ids<'a>(answer: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let known: Vec<&str> = known.into_iter().collect();
    let mut out: Vec<String> = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        for id in rest[..close].split([',', ' ']).filter(|s| !s.is_empty()) {
            if known.contains(&id) && !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        }
        rest = &rest[close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_round_trips_and_follows_the_seed_shape() {
        let ctx = vec![
            ContextChunk {
                id: "a1".into(),
                text: "First chunk.\n[not a tag]".into(),
            },
            ContextChunk {
                id: "b2".into(),
                text: "Second.".into(),
            },
        ];
        let req = rag_request(&ctx, "what?");
        let user = &req.messages[1].content;
        assert!(user.starts_with("Context:\n[a1] First chunk."));
        assert!(user.ends_with("\nQuestion: what?"));
        let (chunks, q) = parse_rag_prompt(user).unwrap();
        assert_eq!(chunks, ctx);
        assert_eq!(q, "what?");
    }

    #[test]
    fn citations_are_known_ids_in_order() {
        let ids = cited_ids("X [b2]. Y [a1, b2] [zz] [a1]", ["a1", "b2"]);
        assert_eq!(ids, ["b2", "a1"]);
    }
}
