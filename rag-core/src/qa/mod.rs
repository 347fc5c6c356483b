//! Stage 3's dataset: grounded question/answer pairs from the corpus's chunks, in the chat
//! `messages` JSONL that Bailian fine-tunes accept and common SFT scripts (transformers TRL,
//! DeepSpeed-Chat, LLaMA-Factory's `sharegpt`/`openai` formats) read.
//!
//! Each example is the production prompt: the user turn is exactly what stage 7 sends
//! ([`rag_request`]: `Context:` with the chunk tagged by its id, then `Question:`), and the
//! assistant turn is a grounded answer citing that id. A model tuned on it learns to answer
//! from the retrieved context and to cite, in the format the pipeline parses.
//!
//! Questions come from a [`ChatModel`](crate::ChatModel) ([`question_request`](crate::prompt::question_request)) or from the chunk's title and
//! section ([`QuestionSource::Headings`], what the local extractive model can use); answers
//! come from the chat model given the RAG prompt over the one chunk, or from the user
//! ([`QaPair`]s in JSONL). [`validate`] drops empty, refused, uncited, duplicate and too-long
//! examples and splits train/validation by a hash of the document id (no document's examples
//! on both sides); [`write_dataset`] stores `train.jsonl`, `validation.jsonl` and
//! `manifest.json` under a prefix (`qa-pairs/`).

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chat::{Message, Usage};
use crate::chunk::Chunk;
use crate::error::{Error, Result};
use crate::prompt::{ContextChunk, SYSTEM_PROMPT, cited_ids, rag_request};
use crate::store::ObjectStore;
use crate::uri::StoreUri;

mod dataset;
mod generate;
#[cfg(test)]
mod tests;
mod user;

pub use dataset::{Manifest, corpus_hash, messages, messages_line, validate, write_dataset};
pub use generate::generate;
pub use user::{UserPair, user_pairs};

/// One question/answer pair grounded in one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QaPair {
    /// The question.
    pub question: String,
    /// The answer, citing `[chunk_id]`.
    pub answer: String,
    /// The chunk it is grounded in.
    pub chunk_id: String,
    /// The chunk's text (the context of the example).
    pub context: String,
    /// The chunk's document.
    pub doc_id: String,
    /// Where the document came from.
    pub source: String,
}

/// Where questions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionSource {
    /// The chat model writes them ([`question_request`](crate::prompt::question_request)).
    Model,
    /// Templated from the chunk's title and first line ("What is ls?", "ls: DESCRIPTION"),
    /// for chat models that cannot write questions (the local extractive one).
    Headings,
}

/// What [`generate`] and [`validate`] do.
#[derive(Debug, Clone)]
pub struct QaOptions {
    /// Where questions come from.
    pub questions: QuestionSource,
    /// Questions per chunk.
    pub questions_per_chunk: usize,
    /// Use at most this many chunks (an even sample over the corpus in order).
    pub max_chunks: usize,
    /// Chat calls in flight.
    pub concurrency: usize,
    /// The base model's limit on one example (system + user + assistant), in tokens.
    pub max_tokens: usize,
    /// Counts tokens; [`estimate_tokens`] unless the base model's tokenizer is plugged in.
    pub count_tokens: fn(&str) -> usize,
    /// Share of documents held out for validation.
    pub validation_fraction: f64,
    /// Keep only answers that cite their chunk.
    pub require_citation: bool,
}

impl Default for QaOptions {
    fn default() -> Self {
        Self {
            questions: QuestionSource::Model,
            questions_per_chunk: 1,
            max_chunks: 1000,
            concurrency: 4,
            max_tokens: 2048,
            count_tokens: estimate_tokens,
            validation_fraction: 0.1,
            require_citation: true,
        }
    }
}

/// A conservative token count for the Qwen/Llama family of BPE tokenizers: one token per
/// CJK character, one per three bytes of anything else (English runs ~4 bytes a token), plus
/// four per message for the chat template. Over-counting only drops an example early.
pub fn estimate_tokens(text: &str) -> usize {
    let (mut cjk, mut other) = (0usize, 0usize);
    for c in text.chars() {
        if matches!(c as u32, 0x3040..=0x30ff | 0x3400..=0x4dbf | 0x4e00..=0x9fff | 0xac00..=0xd7af | 0xf900..=0xfaff)
        {
            cjk += 1;
        } else {
            other += c.len_utf8();
        }
    }
    cjk + other.div_ceil(3) + 4
}

/// Why an example was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "detail")]
pub enum Drop {
    /// The chat call failed (the error).
    ChatFailed(String),
    /// The model wrote no usable question for the chunk.
    NoQuestion,
    /// The answer was empty.
    EmptyAnswer,
    /// The model said the context does not answer it, or refused.
    Refused,
    /// The answer cites no chunk (with `require_citation`).
    Uncited,
    /// The same question (case-insensitive) as an earlier example.
    Duplicate,
    /// Longer than the base model's limit (tokens).
    TooLong(usize),
    /// A line of a user's pairs file that could not be used (line number and why).
    BadLine(String),
}

impl Drop {
    fn kind(&self) -> &'static str {
        match self {
            Drop::ChatFailed(_) => "chat_failed",
            Drop::NoQuestion => "no_question",
            Drop::EmptyAnswer => "empty_answer",
            Drop::Refused => "refused",
            Drop::Uncited => "uncited",
            Drop::Duplicate => "duplicate",
            Drop::TooLong(_) => "too_long",
            Drop::BadLine(_) => "bad_line",
        }
    }
}

/// One dropped example: which chunk, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    /// The chunk.
    pub chunk_id: String,
    /// The question, when there was one.
    pub question: Option<String>,
    /// Why.
    pub why: Drop,
}

/// The dataset and what was dropped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QaDataset {
    /// Training examples.
    pub train: Vec<QaPair>,
    /// Validation examples (documents not in `train`).
    pub validation: Vec<QaPair>,
    /// What was dropped, in order.
    pub dropped: Vec<Dropped>,
    /// Chat tokens spent generating.
    pub usage: Usage,
}

impl QaDataset {
    /// Dropped examples per reason.
    pub fn dropped_by_reason(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for d in &self.dropped {
            *out.entry(d.why.kind()).or_default() += 1;
        }
        out
    }
}
