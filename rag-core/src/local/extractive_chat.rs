use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;

use crate::chat::{ChatModel, ChatRequest, ChatResponse, Role, Usage};
use crate::error::Result;
use crate::prompt::parse_rag_prompt;
use crate::text::{sentence_spans, words};

/// What [`ExtractiveChat`] answers when no context sentence shares a word with the question.
pub const NO_ANSWER: &str = "The provided context does not contain an answer to this question.";

/// Words too common to signal relevance.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "of", "on", "or", "that", "the", "this", "to", "what", "when", "which",
    "with", "you",
];

/// A deterministic, offline [`ChatModel`] that answers extractively.
///
/// Given a RAG prompt (see [`crate::prompt`]), it scores every context sentence by the
/// IDF-weighted question words it contains and answers with the best few, in context order,
/// each followed by the id of the chunk it came from: `sentence [chunk-id]`. The best sentence
/// of the highest-ranked chunk that matches at all is always among them (the retriever's
/// ranking outweighs shared words). Without a RAG
/// prompt, the last user message is its own context. Token counts are words.
#[derive(Debug, Clone)]
pub struct ExtractiveChat {
    name: String,
    max_sentences: usize,
}

impl ExtractiveChat {
    /// An answerer that uses at most `max_sentences` sentences.
    pub fn new(max_sentences: usize) -> Self {
        Self {
            name: "local-extractive".into(),
            max_sentences: max_sentences.max(1),
        }
    }

    /// Serves under another model name (what a local deployment registers).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn answer(&self, prompt: &str) -> String {
        let (chunks, question) = parse_rag_prompt(prompt).unwrap_or_else(|| {
            (
                vec![crate::prompt::ContextChunk {
                    id: String::new(),
                    text: prompt.into(),
                }],
                prompt.into(),
            )
        });
        let q_words: BTreeSet<String> = words(&question)
            .filter(|w| !STOPWORDS.contains(&w.as_str()))
            .collect();
        // (chunk index, sentence text)
        let sentences: Vec<(usize, String)> = chunks
            .iter()
            .enumerate()
            .flat_map(|(ci, c)| {
                sentence_spans(&c.text).into_iter().map(move |(s, e)| {
                    (
                        ci,
                        c.text[s..e]
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" "),
                    )
                })
            })
            .collect();
        let mut df: HashMap<&str, usize> = HashMap::new();
        // Ordered sets: a sentence's score is summed in one order, so equal word sets score
        // equal bit for bit and ties break by position, the same on every call.
        let sentence_words: Vec<BTreeSet<String>> =
            sentences.iter().map(|(_, s)| words(s).collect()).collect();
        for ws in &sentence_words {
            for w in ws.iter().filter(|w| q_words.contains(*w)) {
                *df.entry(w.as_str()).or_default() += 1;
            }
        }
        let n = sentences.len() as f32;
        let mut scored: Vec<(usize, f32)> = sentence_words
            .iter()
            .enumerate()
            .map(|(i, ws)| {
                let score = ws
                    .iter()
                    .filter_map(|w| df.get(w.as_str()))
                    .map(|&d| (1.0 + n / d as f32).ln())
                    .sum::<f32>();
                (i, score)
            })
            .filter(|&(_, s)| s > 0.0)
            .collect();
        if scored.is_empty() {
            return NO_ANSWER.to_string();
        }
        // The retriever ranked the chunks (context order is rank order) and is the better
        // judge of relevance than shared words: the best sentence of the highest-ranked chunk
        // that matches at all leads the answer; the other slots go to the best sentences
        // anywhere.
        let top_chunk = scored.iter().map(|&(i, _)| sentences[i].0).min();
        let lead = scored
            .iter()
            .filter(|&&(i, _)| Some(sentences[i].0) == top_chunk)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
            .copied();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(lead) = lead {
            scored.retain(|&(i, _)| i != lead.0);
            scored.insert(0, lead);
        }
        scored.truncate(self.max_sentences);
        scored.sort_by_key(|&(i, _)| i);
        scored
            .iter()
            .map(|&(i, _)| {
                let (ci, text) = &sentences[i];
                match chunks[*ci].id.as_str() {
                    "" => text.clone(),
                    id => format!("{text} [{id}]"),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Default for ExtractiveChat {
    fn default() -> Self {
        Self::new(3)
    }
}

#[async_trait]
impl ChatModel for ExtractiveChat {
    fn model_id(&self) -> &str {
        &self.name
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        request.validate()?;
        let prompt = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let mut content = self.answer(prompt);
        let mut finish = "stop";
        if let Some(max) = request.params.max_tokens {
            let kept: Vec<&str> = content.split_whitespace().take(max as usize).collect();
            if kept.len() < content.split_whitespace().count() {
                content = kept.join(" ");
                finish = "length";
            }
        }
        let prompt_tokens: usize = request
            .messages
            .iter()
            .map(|m| m.content.split_whitespace().count())
            .sum();
        let usage = Usage::new(
            prompt_tokens as u32,
            content.split_whitespace().count() as u32,
        );
        Ok(ChatResponse {
            content,
            usage,
            finish_reason: Some(finish.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::{ContextChunk, rag_request};

    #[tokio::test]
    async fn answers_with_the_matching_sentence_and_cites_its_chunk() {
        let ctx = vec![
            ContextChunk {
                id: "c1".into(),
                text: "The dup() call copies a descriptor. It is old.".into(),
            },
            ContextChunk {
                id: "c2".into(),
                text: "Sockets carry network traffic.".into(),
            },
        ];
        let resp = ExtractiveChat::new(1)
            .chat(&rag_request(&ctx, "How do I copy a file descriptor?"))
            .await
            .unwrap();
        assert_eq!(resp.content, "The dup() call copies a descriptor. [c1]");
        assert_eq!(
            resp.usage.total_tokens,
            resp.usage.prompt_tokens + resp.usage.completion_tokens
        );
    }

    /// Two sentences holding the same question words score the same, whatever order a set
    /// yields them in: the same question on the same context gets the same answer, bit for
    /// bit, every time (the scores were once summed in `HashSet` order, whose seed differs per
    /// set, so ties broke differently from call to call).
    #[tokio::test]
    async fn the_same_question_on_the_same_context_gets_the_same_answer() {
        let words = [
            "signal", "process", "group", "handler", "mask", "pending", "queue", "thread",
            "kernel", "default",
        ];
        let forward = words.join(" ");
        let backward: Vec<&str> = words.iter().rev().copied().collect();
        // Filler sentences with overlapping subsets give the words different weights, so the
        // sums are not round numbers.
        let mut text = format!("{forward} first. {} second.", backward.join(" "));
        for i in 0..words.len() {
            text.push_str(&format!(" {} filler{i}.", words[..=i].join(" ")));
        }
        let ctx = vec![ContextChunk {
            id: "c1".into(),
            text,
        }];
        let request = rag_request(&ctx, &format!("{forward}?"));
        let mut answers = std::collections::BTreeSet::new();
        for _ in 0..20 {
            answers.insert(ExtractiveChat::new(1).chat(&request).await.unwrap().content);
        }
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert!(answers.iter().all(|a| a.contains("first")), "{answers:?}");
    }

    #[tokio::test]
    async fn the_top_ranked_chunk_leads_even_when_a_lower_one_shares_more_words() {
        let ctx = vec![
            ContextChunk {
                id: "c1".into(),
                text: "The dup() call allocates a new file descriptor.".into(),
            },
            ContextChunk {
                id: "c2".into(),
                text: "Each new file descriptor is a duplicate of another file descriptor.".into(),
            },
        ];
        let resp = ExtractiveChat::new(1)
            .chat(&rag_request(&ctx, "How do I duplicate a file descriptor?"))
            .await
            .unwrap();
        assert!(resp.content.ends_with("[c1]"), "{}", resp.content);
        // With room for two, the better-matching sentence follows.
        let resp = ExtractiveChat::new(2)
            .chat(&rag_request(&ctx, "How do I duplicate a file descriptor?"))
            .await
            .unwrap();
        assert!(
            resp.content.contains("[c1]") && resp.content.ends_with("[c2]"),
            "{}",
            resp.content
        );
    }

    #[tokio::test]
    async fn says_so_when_nothing_matches() {
        let ctx = vec![ContextChunk {
            id: "c1".into(),
            text: "Unrelated words here.".into(),
        }];
        let resp = ExtractiveChat::default()
            .chat(&rag_request(&ctx, "quantum chromodynamics"))
            .await
            .unwrap();
        assert_eq!(resp.content, NO_ANSWER);
    }
}
