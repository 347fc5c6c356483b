//! Stage 3's dataset: grounded question/answer pairs from the corpus's chunks, in the chat
//! `messages` JSONL that Bailian fine-tunes accept and common SFT scripts (transformers TRL,
//! DeepSpeed-Chat, LLaMA-Factory's `sharegpt`/`openai` formats) read.
//!
//! Each example is the production prompt: the user turn is exactly what stage 7 sends
//! ([`rag_request`]: `Context:` with the chunk tagged by its id, then `Question:`), and the
//! assistant turn is a grounded answer citing that id. A model tuned on it learns to answer
//! from the retrieved context and to cite, in the format the pipeline parses.
//!
//! Questions come from a [`ChatModel`] ([`question_request`]) or from the chunk's title and
//! section ([`QuestionSource::Headings`], what the local extractive model can use); answers
//! come from the chat model given the RAG prompt over the one chunk, or from the user
//! ([`QaPair`]s in JSONL). [`validate`] drops empty, refused, uncited, duplicate and too-long
//! examples and splits train/validation by a hash of the document id (no document's examples
//! on both sides); [`write_dataset`] stores `train.jsonl`, `validation.jsonl` and
//! `manifest.json` under a prefix (`qa-pairs/`).

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chat::{ChatModel, Message, Usage};
use crate::chunk::Chunk;
use crate::error::{Error, Result};
use crate::prompt::{
    ContextChunk, SYSTEM_PROMPT, cited_ids, parse_questions, question_request, rag_request,
};
use crate::store::ObjectStore;
use crate::uri::StoreUri;

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
    /// The chat model writes them ([`question_request`]).
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

/// Every `len / max`-th chunk, so a capped sample spans the corpus.
fn sample(chunks: &[Chunk], max: usize) -> Vec<&Chunk> {
    if chunks.len() <= max {
        return chunks.iter().collect();
    }
    (0..max).map(|i| &chunks[i * chunks.len() / max]).collect()
}

fn heading_questions(chunk: &Chunk, n: usize) -> Vec<String> {
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

fn is_refusal(answer: &str) -> bool {
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

fn add(a: Usage, b: Usage) -> Usage {
    Usage::new(
        a.prompt_tokens + b.prompt_tokens,
        a.completion_tokens + b.completion_tokens,
    )
}

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

/// The example as the model sees it in training: system, the RAG prompt over its chunk, the
/// answer.
pub fn messages(pair: &QaPair) -> Vec<Message> {
    let context = [ContextChunk {
        id: pair.chunk_id.clone(),
        text: pair.context.clone(),
    }];
    let mut m = rag_request(&context, &pair.question).messages;
    if m.first().is_none_or(|m| m.content != SYSTEM_PROMPT) {
        m.insert(0, Message::system(SYSTEM_PROMPT));
    }
    m.push(Message::assistant(pair.answer.clone()));
    m
}

/// One JSONL line: `{"messages": [{"role": "system", …}, {"role": "user", …},
/// {"role": "assistant", …}]}`.
pub fn messages_line(pair: &QaPair) -> String {
    #[derive(Serialize)]
    struct Line {
        messages: Vec<Message>,
    }
    serde_json::to_string(&Line {
        messages: messages(pair),
    })
    .expect("strings serialise")
}

/// Keeps the usable pairs and splits them: empty, refused, uncited (with
/// `require_citation`), duplicate-question and too-long examples are dropped (with the reason);
/// a document's examples go to validation when the hash of its id falls in
/// `validation_fraction` (so no document is on both sides, and the split is stable).
pub fn validate(pairs: Vec<QaPair>, options: &QaOptions) -> QaDataset {
    let mut out = QaDataset::default();
    let mut seen = HashSet::new();
    for pair in pairs {
        let why = if pair.answer.trim().is_empty() {
            Some(Drop::EmptyAnswer)
        } else if is_refusal(&pair.answer) {
            Some(Drop::Refused)
        } else if options.require_citation
            && cited_ids(&pair.answer, [pair.chunk_id.as_str()]).is_empty()
        {
            Some(Drop::Uncited)
        } else if !seen.insert(pair.question.trim().to_lowercase()) {
            Some(Drop::Duplicate)
        } else {
            let tokens: usize = messages(&pair)
                .iter()
                .map(|m| (options.count_tokens)(&m.content))
                .sum();
            (tokens > options.max_tokens).then_some(Drop::TooLong(tokens))
        };
        match why {
            Some(why) => out.dropped.push(Dropped {
                chunk_id: pair.chunk_id.clone(),
                question: Some(pair.question.clone()),
                why,
            }),
            None if in_validation(&pair.doc_id, options.validation_fraction) => {
                out.validation.push(pair)
            }
            None => out.train.push(pair),
        }
    }
    out
}

fn in_validation(doc_id: &str, fraction: f64) -> bool {
    let h = Sha256::digest(doc_id.as_bytes());
    let x = u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
    x < fraction
}

/// What `manifest.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `ragloop-qa-pairs/1`.
    pub format: String,
    /// Training examples.
    pub train: usize,
    /// Validation examples.
    pub validation: usize,
    /// Dropped examples per reason.
    pub dropped: BTreeMap<String, usize>,
    /// SHA-256 over the chunk ids the dataset was built from, in order (changes when the
    /// corpus or the chunking does).
    pub corpus_hash: String,
    /// The model that wrote questions and answers (or `user` for given pairs).
    pub generator: String,
    /// Chat tokens spent.
    pub usage: Usage,
}

/// SHA-256 (hex) over the chunk ids in order.
pub fn corpus_hash(chunks: &[Chunk]) -> String {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c.id.as_bytes());
        h.update(b"\n");
    }
    hex_string(&h.finalize())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `train.jsonl`, `validation.jsonl` (when any) and `manifest.json` under `prefix`;
/// the manifest last, so its presence means the dataset is whole. Refuses an empty training
/// set.
pub async fn write_dataset(
    store: &dyn ObjectStore,
    prefix: &StoreUri,
    dataset: &QaDataset,
    corpus_hash: &str,
    generator: &str,
) -> Result<Manifest> {
    if dataset.train.is_empty() {
        return Err(Error::invalid(format!(
            "no training examples left ({} dropped: {:?})",
            dataset.dropped.len(),
            dataset.dropped_by_reason()
        )));
    }
    let prefix = prefix.as_prefix();
    let jsonl = |pairs: &[QaPair]| {
        let mut s = String::new();
        for p in pairs {
            s.push_str(&messages_line(p));
            s.push('\n');
        }
        bytes::Bytes::from(s)
    };
    store
        .put(&prefix.join("train.jsonl")?, jsonl(&dataset.train))
        .await?;
    if !dataset.validation.is_empty() {
        store
            .put(
                &prefix.join("validation.jsonl")?,
                jsonl(&dataset.validation),
            )
            .await?;
    }
    let manifest = Manifest {
        format: "ragloop-qa-pairs/1".into(),
        train: dataset.train.len(),
        validation: dataset.validation.len(),
        dropped: dataset
            .dropped_by_reason()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        corpus_hash: corpus_hash.to_string(),
        generator: generator.to_string(),
        usage: dataset.usage,
    };
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::invalid(format!("manifest: {e}")))?;
    store
        .put(&prefix.join("manifest.json")?, body.into())
        .await?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::chat::{ChatRequest, ChatResponse};
    use crate::local::{ExtractiveChat, InMemoryStore};
    use crate::{Chunker, Document};

    fn chunks() -> Vec<Chunk> {
        let docs = [
            ("kill.2", "kill", "DESCRIPTION\nThe kill() system call sends a signal to a process or process group."),
            ("dup.2", "dup", "DESCRIPTION\nThe dup() system call allocates a new file descriptor that refers to the same open file."),
            ("ls.1", "ls", "DESCRIPTION\nList information about the files in the current directory."),
        ]
        .map(|(id, title, text)| Document {
            id: id.into(),
            title: title.into(),
            text: text.into(),
            source: format!("oss://b/raw-docs/{id}"),
        });
        Chunker::default().chunk_all(&docs)
    }

    #[tokio::test]
    async fn the_local_extractive_model_answers_heading_questions_with_citations() {
        let options = QaOptions {
            questions: QuestionSource::Headings,
            validation_fraction: 0.0,
            ..Default::default()
        };
        let chunks = chunks();
        let (pairs, dropped, _) = generate(&ExtractiveChat::new(2), &chunks, &options)
            .await
            .unwrap();
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(pairs.len(), 3);
        let kill = pairs.iter().find(|p| p.doc_id == "kill.2").unwrap().clone();
        assert_eq!(kill.question, "What is kill?");
        assert!(kill.answer.contains("sends a signal"), "{}", kill.answer);
        assert!(kill.answer.contains(&format!("[{}]", kill.chunk_id)));
        let data = validate(pairs, &options);
        // "What is ls?": no word of it is in ls's text, so the extractive model says the
        // context does not answer it — dropped as a refusal.
        assert_eq!((data.train.len(), data.validation.len()), (2, 0));
        assert_eq!(data.dropped.len(), 1);
        assert_eq!(data.dropped[0].question.as_deref(), Some("What is ls?"));
        assert_eq!(data.dropped[0].why, Drop::Refused);
        let kill = &kill;

        // The JSONL line is the production prompt plus the answer.
        let line: serde_json::Value = serde_json::from_str(&messages_line(kill)).unwrap();
        let m = line["messages"].as_array().unwrap();
        assert_eq!(
            m.iter()
                .map(|x| x["role"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["system", "user", "assistant"]
        );
        assert_eq!(m[0]["content"], SYSTEM_PROMPT);
        let user = m[1]["content"].as_str().unwrap();
        assert!(
            user.starts_with(&format!("Context:\n[{}] ", kill.chunk_id)),
            "{user}"
        );
        assert!(user.ends_with("\nQuestion: What is kill?"), "{user}");
        assert_eq!(m[2]["content"], kill.answer.as_str());
    }

    /// Writes questions, then answers as scripted per question.
    struct Scripted {
        calls: Mutex<usize>,
    }

    #[async_trait]
    impl ChatModel for Scripted {
        fn model_id(&self) -> &str {
            "scripted"
        }

        async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
            *self.calls.lock().unwrap() += 1;
            let prompt = &request.messages.last().unwrap().content;
            let content = if let Some((chunks, q)) = crate::prompt::parse_rag_prompt(prompt) {
                let id = &chunks[0].id;
                match q.as_str() {
                    "Which call sends a signal?" => format!("kill() does. [{id}]"),
                    "What does ls list?" => "Files.".to_string(), // no citation
                    "Why?" => String::new(),
                    "Who wrote dup?" => {
                        "The provided context does not contain an answer to this question.".into()
                    }
                    other => format!("{} [{id}]", "long ".repeat(3000 + other.len())),
                }
            } else if prompt.contains("kill()") {
                "1. Which call sends a signal?\n2. which call sends a signal?".into()
            } else if prompt.contains("dup()") {
                "Q: Who wrote dup?\n- Why?".into()
            } else if prompt.contains("List information") {
                return Err(Error::Unavailable {
                    message: "chat: 503".into(),
                    source: None,
                });
            } else {
                "What does ls list?".into()
            };
            Ok(ChatResponse {
                content,
                usage: Usage::new(10, 5),
                finish_reason: Some("stop".into()),
            })
        }
    }

    #[tokio::test]
    async fn a_model_writes_the_questions_and_bad_examples_are_dropped_with_the_reason() {
        let chat = Scripted {
            calls: Mutex::new(0),
        };
        let chunks = chunks();
        let options = QaOptions::default();
        let (pairs, dropped, usage) = generate(&chat, &chunks, &options).await.unwrap();
        // ls's question call failed: recorded, the others went on.
        assert_eq!(dropped.len(), 1);
        assert!(matches!(dropped[0].why, Drop::ChatFailed(_)));
        assert!(usage.total_tokens > 0);
        // QaOptions asks for one question per chunk: kill's first, dup's first.
        assert_eq!(
            pairs
                .iter()
                .map(|p| p.question.as_str())
                .collect::<Vec<_>>(),
            ["Which call sends a signal?", "Who wrote dup?"]
        );
        let data = validate(
            pairs,
            &QaOptions {
                validation_fraction: 0.0,
                ..options
            },
        );
        assert_eq!(data.train.len(), 1);
        assert_eq!(data.dropped_by_reason().get("refused"), Some(&1));

        // The other checks, on pairs as a user might give them.
        let base = data.train[0].clone();
        let with = |q: &str, a: &str| QaPair {
            question: q.into(),
            answer: a.into(),
            ..base.clone()
        };
        let cite = format!("[{}]", base.chunk_id);
        let given = vec![
            base.clone(),
            with("WHICH call sends a signal? ", &format!("Again. {cite}")),
            with("Empty?", "  "),
            with("Uncited?", "An answer without a citation."),
            with("Long?", &format!("{} {cite}", "word ".repeat(5000))),
        ];
        let data = validate(
            given,
            &QaOptions {
                validation_fraction: 0.0,
                ..QaOptions::default()
            },
        );
        assert_eq!(data.train.len(), 1);
        let reasons: Vec<&str> = data.dropped.iter().map(|d| d.why.kind()).collect();
        assert_eq!(
            reasons,
            ["duplicate", "empty_answer", "uncited", "too_long"]
        );
    }

    #[tokio::test]
    async fn bad_credentials_or_every_call_failing_stop_the_run() {
        struct Failing(bool);
        #[async_trait]
        impl ChatModel for Failing {
            fn model_id(&self) -> &str {
                "failing"
            }

            async fn chat(&self, _: &ChatRequest) -> Result<ChatResponse> {
                Err(if self.0 {
                    Error::Auth {
                        message: "bad key".into(),
                    }
                } else {
                    Error::Unavailable {
                        message: "chat: 503".into(),
                        source: None,
                    }
                })
            }
        }
        let auth = Failing(true);
        assert!(matches!(
            generate(&auth, &chunks(), &QaOptions::default()).await,
            Err(Error::Auth { .. })
        ));
        let down = Failing(false);
        assert!(matches!(
            generate(&down, &chunks(), &QaOptions::default()).await,
            Err(Error::Unavailable { .. })
        ));
    }

    #[test]
    fn user_pairs_are_grounded_in_a_chunk_or_their_own_context() {
        let chunks = chunks();
        let kill = &chunks.iter().find(|c| c.doc_id == "kill.2").unwrap().id;
        let text = format!(
            "{{\"question\": \"Which call sends a signal?\", \"answer\": \"kill(). [{kill}]\", \"chunk_id\": \"{kill}\"}}\n\
             \n\
             {{\"question\": \"What is 2+2?\", \"answer\": \"4\", \"context\": \"2+2 is 4.\"}}\n\
             {{\"question\": \"q\", \"answer\": \"a\", \"chunk_id\": \"nope\"}}\n\
             {{\"question\": \"q\", \"answer\": \"a\"}}\n\
             not json\n"
        );
        let (pairs, dropped) = user_pairs(&text, &chunks);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].doc_id, "kill.2");
        assert!(pairs[0].context.contains("sends a signal"));
        assert_eq!(pairs[1].source, "user");
        let lines: Vec<String> = dropped
            .iter()
            .map(|d| match &d.why {
                Drop::BadLine(l) => l.split(':').next().unwrap().to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(lines, ["line 4", "line 5", "line 6"]);
        // The second cites nothing: validate drops it unless citations are not required.
        let data = validate(
            pairs.clone(),
            &QaOptions {
                validation_fraction: 0.0,
                ..Default::default()
            },
        );
        assert_eq!(
            (data.train.len(), data.dropped[0].why.kind()),
            (1, "uncited")
        );
        let data = validate(
            pairs,
            &QaOptions {
                validation_fraction: 0.0,
                require_citation: false,
                ..Default::default()
            },
        );
        assert_eq!(data.train.len(), 2);
    }

    proptest::proptest! {
        /// A user's file of any content: no panic, and every non-blank line is either a pair
        /// or a dropped line.
        #[test]
        fn user_pair_files_never_panic_and_account_for_every_line(
            lines in proptest::collection::vec(
                "(\\{\"question\": \"[a-z ?]{0,10}\", \"answer\": \"[a-z\\[\\] ]{0,10}\"(, \"context\": \"[a-z ]{0,8}\")?\\}|[^\n]{0,40})",
                0..20,
            )
        ) {
            let text = lines.join("\n");
            let (pairs, dropped) = user_pairs(&text, &chunks());
            let non_blank = text.lines().filter(|l| !l.trim().is_empty()).count();
            proptest::prop_assert_eq!(pairs.len() + dropped.len(), non_blank);
            let data = validate(pairs, &QaOptions::default());
            proptest::prop_assert!(data.train.iter().chain(&data.validation).all(|p| !p.answer.trim().is_empty()));
        }

        #[test]
        fn question_parsing_never_panics_and_keeps_at_most_n(answer in "[^\\x00]{0,300}", n in 0usize..5) {
            let (q, _) = parse_questions(&answer, n, 300);
            proptest::prop_assert!(q.len() <= n);
        }
    }

    #[test]
    fn the_split_keeps_each_document_on_one_side_and_is_stable() {
        let pair = |doc: &str, q: &str| QaPair {
            question: q.into(),
            answer: "a [c]".into(),
            chunk_id: "c".into(),
            context: "ctx".into(),
            doc_id: doc.into(),
            source: "s".into(),
        };
        let pairs: Vec<QaPair> = (0..200)
            .flat_map(|d| (0..2).map(move |q| pair(&format!("doc{d}"), &format!("q{d}-{q}"))))
            .collect();
        let options = QaOptions {
            validation_fraction: 0.2,
            ..Default::default()
        };
        let a = validate(pairs.clone(), &options);
        let b = validate(pairs, &options);
        assert_eq!(a.validation, b.validation);
        let frac = a.validation.len() as f64 / 400.0;
        assert!((0.12..0.28).contains(&frac), "{frac}");
        let train_docs: HashSet<&str> = a.train.iter().map(|p| p.doc_id.as_str()).collect();
        assert!(
            a.validation
                .iter()
                .all(|p| !train_docs.contains(p.doc_id.as_str()))
        );
    }

    #[tokio::test]
    async fn the_dataset_is_written_with_its_manifest_last() {
        let store = InMemoryStore::new();
        let prefix: StoreUri = "mem://bkt/qa-pairs/".parse().unwrap();
        let chunks = chunks();
        let options = QaOptions {
            questions: QuestionSource::Headings,
            validation_fraction: 0.0,
            ..Default::default()
        };
        let (pairs, _, usage) = generate(&ExtractiveChat::new(2), &chunks, &options)
            .await
            .unwrap();
        let mut data = validate(pairs, &options);
        data.usage = usage;
        let manifest = write_dataset(&store, &prefix, &data, &corpus_hash(&chunks), "extractive")
            .await
            .unwrap();
        assert_eq!((manifest.train, manifest.validation), (2, 0));
        assert!(
            !store
                .exists(&prefix.join("validation.jsonl").unwrap())
                .await
                .unwrap()
        );
        assert_eq!(manifest.dropped.get("refused"), Some(&1));
        let train = store
            .get_bytes(&prefix.join("train.jsonl").unwrap())
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(train.to_vec()).unwrap().lines().count(),
            manifest.train
        );
        let m: Manifest = serde_json::from_slice(
            &store
                .get_bytes(&prefix.join("manifest.json").unwrap())
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(m.corpus_hash, corpus_hash(&chunks));
        assert_eq!(m.format, "ragloop-qa-pairs/1");

        let empty = QaDataset::default();
        let err = write_dataset(
            &store,
            &"mem://bkt/none/".parse().unwrap(),
            &empty,
            "h",
            "g",
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    }
}
