//! Questions and grounded answers from a chat model (or templated from headings).

use futures::StreamExt;

use super::*;
use crate::chat::ChatModel;
use crate::prompt::{parse_questions, question_request};

/// Every `len / max`-th chunk, so a capped sample spans the corpus.
pub(super) fn sample(chunks: &[Chunk], max: usize) -> Vec<&Chunk> {
    if chunks.len() <= max {
        return chunks.iter().collect();
    }
    (0..max).map(|i| &chunks[i * chunks.len() / max]).collect()
}

pub(super) fn heading_questions(chunk: &Chunk, n: usize) -> Vec<String> {
    let title = chunk.title.trim();
    let first = chunk
        .text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out = Vec::new();
    if !title.is_empty() {
        out.push(format!("What is {title}?"));
        if !first.is_empty() && first.len() <= 60 && first != title {
            out.push(format!("{title}: {}", first.to_lowercase()));
        }
    }
    out.truncate(n);
    out
}

pub(super) fn is_refusal(answer: &str) -> bool {
    let lower = answer.to_lowercase();
    lower.contains("does not contain an answer")
        || lower.contains("does not contain the answer")
        || lower.contains("cannot answer")
        || lower.contains("can't answer")
        || lower.starts_with("i'm sorry")
        || lower.starts_with("i am sorry")
        || lower.starts_with("i don't know")
        || lower.contains("not mentioned in the context")
}

/// Asks for questions about each chunk (or templates them) and for each question a grounded
/// answer over that chunk alone. Failed calls are recorded as [`Drop::ChatFailed`] and the
/// rest goes on; bad credentials, or every call failing, stop with the first error.
pub async fn generate(
    chat: &dyn ChatModel,
    chunks: &[Chunk],
    options: &QaOptions,
) -> Result<(Vec<QaPair>, Vec<Dropped>, Usage)> {
    let picked = sample(chunks, options.max_chunks);
    let per_chunk = futures::stream::iter(picked.iter().map(|chunk| async move {
        let mut pairs = Vec::new();
        let mut dropped = Vec::new();
        let mut usage = Usage::default();
        let mut calls = 0usize;
        let mut first_error = None;
        let questions = match options.questions {
            QuestionSource::Headings => heading_questions(chunk, options.questions_per_chunk),
            QuestionSource::Model => {
                calls += 1;
                match chat
                    .chat(&question_request(
                        &chunk.text,
                        options.questions_per_chunk,
                        Some(0.7),
                    ))
                    .await
                {
                    Ok(r) => {
                        usage = add(usage, r.usage);
                        parse_questions(&r.content, options.questions_per_chunk, 300).0
                    }
                    Err(e) => {
                        dropped.push(Dropped {
                            chunk_id: chunk.id.clone(),
                            question: None,
                            why: Drop::ChatFailed(e.to_string()),
                        });
                        first_error = Some(e);
                        Vec::new()
                    }
                }
            }
        };
        if questions.is_empty() && first_error.is_none() {
            dropped.push(Dropped {
                chunk_id: chunk.id.clone(),
                question: None,
                why: Drop::NoQuestion,
            });
        }
        let context = [ContextChunk {
            id: chunk.id.clone(),
            text: chunk.text.clone(),
        }];
        for q in questions {
            calls += 1;
            match chat.chat(&rag_request(&context, &q)).await {
                Ok(r) => {
                    usage = add(usage, r.usage);
                    pairs.push(QaPair {
                        question: q,
                        answer: r.content.trim().to_string(),
                        chunk_id: chunk.id.clone(),
                        context: chunk.text.clone(),
                        doc_id: chunk.doc_id.clone(),
                        source: chunk.source.clone(),
                    });
                }
                Err(e) => {
                    dropped.push(Dropped {
                        chunk_id: chunk.id.clone(),
                        question: Some(q),
                        why: Drop::ChatFailed(e.to_string()),
                    });
                    first_error.get_or_insert(e);
                }
            }
        }
        (pairs, dropped, usage, calls, first_error)
    }))
    .buffered(options.concurrency.max(1))
    .collect::<Vec<_>>()
    .await;

    let (mut pairs, mut dropped, mut usage) = (Vec::new(), Vec::new(), Usage::default());
    let (mut calls, mut failures, mut first) = (0usize, 0usize, None);
    for (p, d, u, c, e) in per_chunk {
        failures += d
            .iter()
            .filter(|x| matches!(x.why, Drop::ChatFailed(_)))
            .count();
        pairs.extend(p);
        dropped.extend(d);
        usage = add(usage, u);
        calls += c;
        if let Some(e) = e {
            if matches!(e, Error::Auth { .. }) {
                return Err(e);
            }
            first.get_or_insert(e);
        }
    }
    if calls > 0 && failures == calls {
        return Err(first.unwrap_or_else(|| Error::invalid("every chat call failed")));
    }
    Ok((pairs, dropped, usage))
}

pub(super) fn add(a: Usage, b: Usage) -> Usage {
    Usage::new(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
    )
}
