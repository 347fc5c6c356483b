//! The RAG prompt of seed step 7, `"Context: {chunks}\nQuestion: {query}"`, with each chunk
//! tagged by its id so that answers can cite it; and the question-writing prompt behind
//! synthetic training queries and stage 3's question/answer dataset.

use std::collections::HashSet;

use crate::chat::{ChatParams, ChatRequest, Message};

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

/// The system instruction of [`question_request`].
pub const QUESTION_SYSTEM: &str = "You write search queries for a retrieval system. Given a passage, write \
questions that a user who has not seen the passage might ask and that the passage answers. Use \
only the passage. Write each question on its own line, with no numbering, no answers and no \
other text.";

/// Asks for `n` questions that `passage` answers (synthetic training queries, stage 3's
/// dataset), one per line; parse the answer with [`parse_questions`].
pub fn question_request(passage: &str, n: usize, temperature: Option<f32>) -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::system(QUESTION_SYSTEM),
            Message::user(format!(
                "Write {n} different questions this passage answers.\n\nPassage:\n{passage}"
            )),
        ],
        params: ChatParams {
            temperature,
            max_tokens: Some((64 * n.max(1)) as u32),
            ..Default::default()
        },
    }
}

/// The usable questions in a model's answer (at most `n`) and how many lines were rejected.
pub fn parse_questions(answer: &str, n: usize, max_chars: usize) -> (Vec<String>, usize) {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let mut rejected = 0;
    for line in answer.lines() {
        let raw = line.trim();
        if raw.is_empty() {
            continue;
        }
        let q = strip_marker(raw);
        let lower = q.to_lowercase();
        let refusal = ["i'm sorry", "i am sorry", "i cannot", "i can't", "as an ai"]
            .iter()
            .any(|r| lower.starts_with(r));
        // A heading the model added ("Questions:"), an answer, or a fragment.
        let not_a_question = q.ends_with(':')
            || lower.starts_with("answer")
            || lower.starts_with("a:")
            || q.split_whitespace().count() < 2;
        if refusal
            || not_a_question
            || q.chars().count() > max_chars
            || !seen.insert(lower.clone())
            || out.len() == n
        {
            rejected += 1;
            continue;
        }
        out.push(q.to_string());
    }
    (out, rejected)
}

/// Strips list markers (`1.`, `2)`, `-`, `*`, `•`, `Q:`, `Question 1:`) and surrounding quotes.
fn strip_marker(line: &str) -> &str {
    let mut s = line.trim();
    let lower = s.to_ascii_lowercase();
    for prefix in ["question", "q"] {
        if lower.starts_with(prefix) {
            let rest = &s[prefix.len()..];
            let digits = rest.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ');
            if let Some(r) = digits.strip_prefix(':') {
                s = r.trim_start();
                break;
            }
        }
    }
    let digits = s.trim_start_matches(|c: char| c.is_ascii_digit());
    if digits.len() < s.len()
        && let Some(r) = digits
            .strip_prefix('.')
            .or_else(|| digits.strip_prefix(')'))
    {
        s = r.trim_start();
    }
    for bullet in ['-', '*', '•'] {
        if let Some(r) = s.strip_prefix(bullet) {
            s = r.trim_start();
        }
    }
    s.trim_matches(|c| c == '"' || c == '\u{201c}' || c == '\u{201d}' || c == '`')
        .trim()
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
