//! Synthetic training queries: any [`ChatModel`] writes questions that a passage answers
//! (generated queries in the manner of doc2query, InPars and GPL), so raw documents yield pairs
//! whose queries read like a user's rather than like a title or a sentence of the text.
//!
//! Each document is asked for once; what comes back is parsed line by line (numbering,
//! bullets and quotes stripped; refusals, answers-in-place-of-questions, over-long and duplicate
//! lines dropped). A failed call costs only that document's pairs; bad credentials stop the run,
//! and so does a run in which every call failed (with the first error).

use std::time::Instant;

use futures::StreamExt;
use rag_core::chat::{ChatRequest, Usage};
pub use rag_core::prompt::parse_questions;
use rag_core::{ChatModel, Document, Error, Result};
use serde::Serialize;

use super::pairs::{Pair, PairOrigin, document_passage};

/// What [`synthetic_pairs`] asks for.
#[derive(Debug, Clone)]
pub struct SyntheticOptions {
    /// Questions asked per document.
    pub questions_per_doc: usize,
    /// Characters of the document shown to the model (and used as the pair's passage).
    pub max_passage_chars: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Longest question kept, in characters.
    pub max_question_chars: usize,
    /// Token budget of the run (prompt + completion, as the server reports them): no new call
    /// starts once the calls answered have used this many. `None`: no limit.
    pub max_tokens: Option<u64>,
}

impl Default for SyntheticOptions {
    fn default() -> Self {
        Self {
            questions_per_doc: 2,
            max_passage_chars: 2_000,
            concurrency: 4,
            temperature: Some(0.7),
            max_question_chars: 300,
            max_tokens: None,
        }
    }
}

/// What a [`synthetic_pairs`] run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyntheticReport {
    /// Documents asked about.
    pub documents: usize,
    /// Pairs made.
    pub pairs: usize,
    /// Lines of the answers that were not usable questions.
    pub rejected_lines: usize,
    /// Documents whose call failed: (document id, error).
    pub failed: Vec<(String, String)>,
    /// Tokens used by all calls.
    pub usage: Usage,
    /// Documents not asked about because the token budget was spent.
    pub skipped_for_budget: usize,
    /// Wall time.
    pub seconds: f64,
}

/// The request for one passage ([`rag_core::prompt::question_request`]).
pub fn question_request(passage: &str, options: &SyntheticOptions) -> ChatRequest {
    rag_core::prompt::question_request(passage, options.questions_per_doc, options.temperature)
}

/// Asks `chat` for questions about each document; returns the pairs (origin
/// [`PairOrigin::Synthetic`], passage = [`document_passage`]) and a report. Documents with no
/// text are skipped.
pub async fn synthetic_pairs(
    chat: &dyn ChatModel,
    docs: &[Document],
    options: &SyntheticOptions,
) -> Result<(Vec<Pair>, SyntheticReport)> {
    let started = Instant::now();
    let mut report = SyntheticReport::default();
    let jobs: Vec<(&Document, String)> = docs
        .iter()
        .filter(|d| !d.text.trim().is_empty())
        .map(|d| (d, document_passage(d, options.max_passage_chars)))
        .collect();
    report.documents = jobs.len();
    let mut answers = futures::stream::iter(jobs.iter().map(|(doc, passage)| async move {
        (
            *doc,
            passage,
            chat.chat(&question_request(passage, options)).await,
        )
    }))
    .buffered(options.concurrency.max(1));
    let mut pairs = Vec::new();
    let mut first_error = None;
    let mut answered = 0;
    let mut done = 0;
    while let Some((doc, passage, answer)) = answers.next().await {
        done += 1;
        if let Ok(r) = &answer
            && options.max_tokens.is_some_and(|max| {
                u64::from(report.usage.total_tokens) + u64::from(r.usage.total_tokens) > max
            })
            && answered > 0
        {
            // Over budget: this answer is not used and no further call starts (those in
            // flight are dropped).
            report.skipped_for_budget = jobs.len() - done + 1;
            break;
        }
        match answer {
            Ok(r) => {
                answered += 1;
                report.usage.prompt_tokens += r.usage.prompt_tokens;
                report.usage.completion_tokens += r.usage.completion_tokens;
                report.usage.total_tokens += r.usage.total_tokens;
                let (questions, rejected) = parse_questions(
                    &r.content,
                    options.questions_per_doc,
                    options.max_question_chars,
                );
                report.rejected_lines += rejected;
                pairs.extend(questions.into_iter().map(|query| Pair {
                    query,
                    passage: passage.clone(),
                    doc_id: doc.id.clone(),
                    origin: PairOrigin::Synthetic,
                }));
            }
            // Every other call would fail the same way.
            Err(e @ Error::Auth { .. }) => return Err(e),
            Err(e) => {
                report.failed.push((doc.id.clone(), e.to_string()));
                first_error.get_or_insert(e);
            }
        }
    }
    if answered == 0
        && let Some(e) = first_error
    {
        return Err(e);
    }
    report.pairs = pairs.len();
    report.seconds = started.elapsed().as_secs_f64();
    Ok((pairs, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use rag_core::chat::ChatResponse;

    #[test]
    fn parses_lists_and_drops_what_is_not_a_question() {
        let answer = "Here are the questions:\n\
            1. How do I copy a file descriptor?\n\
            2) \"Which call duplicates an fd onto a given number?\"\n\
            - What does dup return on error?\n\
            Q: what does dup return on error?\n\
            Question 3: Can dup2 close the target first?\n\
            Answer: it returns -1\n\
            \n\
            fd\n";
        let (q, rejected) = parse_questions(answer, 10, 300);
        assert_eq!(
            q,
            [
                "How do I copy a file descriptor?",
                "Which call duplicates an fd onto a given number?",
                "What does dup return on error?",
                "Can dup2 close the target first?",
            ]
        );
        // The heading, the duplicate (case-insensitive), the answer and the fragment.
        assert_eq!(rejected, 4);
        let (q, rejected) = parse_questions("I'm sorry, I can't help with that.", 2, 300);
        assert!(q.is_empty() && rejected == 1);
        let (q, _) = parse_questions("a b\nc d\ne f", 2, 300);
        assert_eq!(q.len(), 2, "at most n");
        let (q, _) = parse_questions(&"word ".repeat(100), 2, 300);
        assert!(q.is_empty(), "over-long lines are dropped");
    }

    /// Answers from a script keyed by a word of the passage; fails for `broken`.
    struct Scripted;

    #[async_trait]
    impl ChatModel for Scripted {
        fn model_id(&self) -> &str {
            "scripted"
        }

        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
            let prompt = &request.messages[1].content;
            if prompt.contains("broken") {
                return Err(Error::Unavailable {
                    message: "503 from the server".into(),
                    source: None,
                });
            }
            let topic = prompt.rsplit('\n').next().unwrap_or_default();
            Ok(ChatResponse {
                content: format!("1. What is {topic}?\n2. How is {topic} used?\n3. Extra one?"),
                usage: Usage::new(10, 5),
                finish_reason: Some("stop".into()),
            })
        }
    }

    fn doc(id: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            title: String::new(),
            text: text.into(),
            source: String::new(),
            ..Default::default()
        }
    }

    /// A budget of 35 tokens covers two 15-token answers: the third document's answer would
    /// pass it, so it and the rest are skipped and counted.
    #[tokio::test]
    async fn the_token_budget_stops_the_calls() {
        let docs: Vec<Document> = (0..6)
            .map(|i| doc(&format!("d{i}"), &format!("topic{i}")))
            .collect();
        let options = SyntheticOptions {
            max_tokens: Some(35),
            concurrency: 1,
            ..SyntheticOptions::default()
        };
        let (pairs, report) = synthetic_pairs(&Scripted, &docs, &options).await.unwrap();
        assert_eq!(report.usage.total_tokens, 30);
        assert_eq!(report.skipped_for_budget, 4);
        assert_eq!(pairs.len(), 4, "two questions from each of two documents");
        assert!(pairs.iter().all(|p| p.doc_id == "d0" || p.doc_id == "d1"));
    }

    #[tokio::test]
    async fn makes_pairs_per_document_and_keeps_going_past_failures() {
        let docs = [
            doc("a", "tar archives"),
            doc("b", "broken"),
            doc("c", "   "),
            doc("d", "crontab tables"),
        ];
        let options = SyntheticOptions::default();
        let (pairs, report) = synthetic_pairs(&Scripted, &docs, &options).await.unwrap();
        assert_eq!(report.documents, 3, "the empty document is not asked about");
        assert_eq!(pairs.len(), 4);
        assert_eq!(pairs[0].query, "What is tar archives?");
        assert_eq!(pairs[0].passage, "tar archives");
        assert!(
            pairs
                .iter()
                .all(|p| p.origin == PairOrigin::Synthetic && p.doc_id != "b")
        );
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].1.contains("503"), "{:?}", report.failed);
        assert_eq!(
            report.rejected_lines, 2,
            "the third question of each answer"
        );
        assert_eq!(report.usage.total_tokens, 30);
    }

    struct BadKey;

    #[async_trait]
    impl ChatModel for BadKey {
        fn model_id(&self) -> &str {
            "bad-key"
        }

        async fn chat(&self, _: &ChatRequest) -> Result<ChatResponse> {
            Err(Error::Auth {
                message: "invalid api key".into(),
            })
        }
    }

    #[tokio::test]
    async fn bad_credentials_or_nothing_answered_stop_the_run() {
        let err = synthetic_pairs(&BadKey, &[doc("a", "x y")], &SyntheticOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Auth { .. }), "{err}");
        let err = synthetic_pairs(
            &Scripted,
            &[doc("b", "broken")],
            &SyntheticOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
    }
}
