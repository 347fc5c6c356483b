//! The user's own pairs, checked against the corpus.

use super::dataset::hex_string;
use super::*;

/// One line of a user's pairs file: a question, its answer, and where it is grounded — a
/// `chunk_id` of the corpus, or the `context` text itself (with an optional `doc_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPair {
    /// The question.
    pub question: String,
    /// The answer (cite the chunk as `[id]` to pass `require_citation`).
    pub answer: String,
    /// A chunk of the corpus.
    pub chunk_id: Option<String>,
    /// Or the context itself.
    pub context: Option<String>,
    /// The document, for the train/validation split (default: the chunk's, or the line).
    pub doc_id: Option<String>,
}

/// Reads a user's pairs (JSONL of [`UserPair`]) against the corpus's `chunks`: lines that do
/// not parse, name an unknown chunk or carry no context are dropped with the line number
/// ([`Drop::BadLine`]); the rest become [`QaPair`]s for [`validate`].
pub fn user_pairs(text: &str, chunks: &[Chunk]) -> (Vec<QaPair>, Vec<Dropped>) {
    let by_id: std::collections::HashMap<&str, &Chunk> =
        chunks.iter().map(|c| (c.id.as_str(), c)).collect();
    let (mut pairs, mut dropped) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| Dropped {
            chunk_id: String::new(),
            question: None,
            why: Drop::BadLine(format!("line {}: {why}", n + 1)),
        };
        let p: UserPair = match serde_json::from_str(line) {
            Ok(p) => p,
            Err(e) => {
                dropped.push(bad(e.to_string()));
                continue;
            }
        };
        let pair = match (&p.chunk_id, &p.context) {
            (Some(id), _) => match by_id.get(id.as_str()) {
                Some(c) => QaPair {
                    question: p.question,
                    answer: p.answer,
                    chunk_id: c.id.clone(),
                    context: c.text.clone(),
                    doc_id: p.doc_id.unwrap_or_else(|| c.doc_id.clone()),
                    source: c.source.clone(),
                },
                None => {
                    dropped.push(bad(format!("chunk {id} is not in the corpus")));
                    continue;
                }
            },
            (None, Some(context)) if !context.trim().is_empty() => {
                let id = hex_string(&Sha256::digest(context.as_bytes())[..16]);
                QaPair {
                    question: p.question,
                    answer: p.answer,
                    chunk_id: id,
                    context: context.clone(),
                    doc_id: p.doc_id.unwrap_or_else(|| format!("line-{}", n + 1)),
                    source: "user".into(),
                }
            }
            _ => {
                dropped.push(bad("neither chunk_id nor context".into()));
                continue;
            }
        };
        pairs.push(pair);
    }
    (pairs, dropped)
}
