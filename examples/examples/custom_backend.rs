//! Bring your own backend: a `VectorIndex` and a `ChatModel` written here, plugged into the
//! same `Pipeline` the local loop and the cloud use. Nothing else changes — ingest, chunking,
//! embedding, Parquet shards, indexing, retrieval, citations and evaluation all run on them.
//!
//! `cargo run -p examples --example custom_backend [-- "question"]`
//!
//! - `FlatIndex`: an exact in-memory index (every record scored on each search; term overlap
//!   for text; hybrid fused as the request says with `rag_core::index::fuse`: RRF, or a
//!   convex combination of normalised scores).
//! - `QuoteChat`: answers with the first sentence of the best context chunk and cites it — the
//!   shape of any `ChatModel` that wraps your own LLM server.
//!
//! `tests/custom_backend.rs` runs this file and the trait conformance suites on `FlatIndex`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rag_core::chat::{ChatRequest, ChatResponse, Usage};
use rag_core::index::{
    IndexRecord, IndexSchema, ItemError, Query, SearchHit, SearchRequest, UpsertReport, fuse,
};
use rag_core::local::{HashedEmbedding, HashedEmbeddingConfig, InMemoryStore};
use rag_core::pipeline::{Answer, Layout, Pipeline};
use rag_core::{ChatModel, Error, Result, VectorIndex};

/// One index: its schema and its records by id.
type Stored = (IndexSchema, BTreeMap<String, IndexRecord>);

/// An exact in-memory index: index name → (schema, records by id).
#[derive(Default)]
pub struct FlatIndex {
    indexes: Mutex<HashMap<String, Stored>>,
}

/// The terms of `text` as the index's schema says to cut them (documents and queries alike).
fn words(schema: &IndexSchema, text: &str) -> HashSet<String> {
    schema.analyzer.terms(text).collect()
}

impl FlatIndex {
    fn with<T>(&self, index: &str, f: impl FnOnce(&mut Stored) -> Result<T>) -> Result<T> {
        let mut all = self
            .indexes
            .lock()
            .map_err(|_| Error::backend_msg("flat-index", "poisoned"))?;
        let entry = all
            .get_mut(index)
            .ok_or_else(|| Error::not_found(format!("index {index}")))?;
        f(entry)
    }

    fn rank(
        schema: &IndexSchema,
        records: &BTreeMap<String, IndexRecord>,
        request: &SearchRequest,
        query: &Query,
        k: usize,
    ) -> Vec<SearchHit> {
        let passes = |r: &IndexRecord| {
            request
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&r.metadata))
        };
        let mut hits: Vec<SearchHit> = match query {
            Query::Vector(v) => records
                .values()
                .filter(|r| passes(r))
                .map(|r| hit(r, schema.metric.score(v, &r.vector)))
                .collect(),
            Query::Text(t) => {
                let q = words(schema, t);
                records
                    .values()
                    .filter(|r| passes(r))
                    .map(|r| hit(r, words(schema, &r.text).intersection(&q).count() as f32))
                    .filter(|h| h.score > 0.0)
                    .collect()
            }
            Query::Hybrid { vector, text } => {
                let n = request.num_candidates.max(k);
                let dense = Self::rank(schema, records, request, &Query::Vector(vector.clone()), n);
                let sparse = Self::rank(schema, records, request, &Query::Text(text.clone()), n);
                return fuse(
                    &SearchRequest {
                        k,
                        ..request.clone()
                    },
                    dense,
                    sparse,
                );
            }
        };
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(k);
        hits
    }
}

fn hit(r: &IndexRecord, score: f32) -> SearchHit {
    SearchHit {
        id: r.id.clone(),
        score,
        text: r.text.clone(),
        metadata: r.metadata.clone(),
    }
}

#[async_trait]
impl VectorIndex for FlatIndex {
    async fn create_index(&self, schema: &IndexSchema) -> Result<()> {
        schema.validate()?;
        let mut all = self
            .indexes
            .lock()
            .map_err(|_| Error::backend_msg("flat-index", "poisoned"))?;
        match all.get(&schema.name) {
            Some((existing, _)) => existing.is_compatible(schema),
            None => {
                all.insert(schema.name.clone(), (schema.clone(), BTreeMap::new()));
                Ok(())
            }
        }
    }

    async fn schema(&self, index: &str) -> Result<IndexSchema> {
        self.with(index, |(schema, _)| Ok(schema.clone()))
    }

    async fn upsert(&self, index: &str, records: Vec<IndexRecord>) -> Result<UpsertReport> {
        self.with(index, |(schema, stored)| {
            let mut report = UpsertReport::default();
            for r in records {
                let problem = if r.id.is_empty() {
                    Some("empty id".to_string())
                } else if r.vector.len() != schema.dims {
                    Some(format!(
                        "dimension {} differs from the index's {}",
                        r.vector.len(),
                        schema.dims
                    ))
                } else if r.vector.iter().any(|x| !x.is_finite()) {
                    Some("vector holds NaN or infinity".to_string())
                } else {
                    None
                };
                match problem {
                    Some(reason) => report.failed.push(ItemError {
                        id: r.id,
                        reason,
                        retryable: false,
                    }),
                    None => {
                        report.written.push(r.id.clone());
                        stored.insert(r.id.clone(), r);
                    }
                }
            }
            Ok(report)
        })
    }

    async fn delete(&self, index: &str, ids: &[String]) -> Result<usize> {
        self.with(index, |(_, stored)| {
            Ok(ids.iter().filter(|id| stored.remove(*id).is_some()).count())
        })
    }

    async fn search(&self, index: &str, request: &SearchRequest) -> Result<Vec<SearchHit>> {
        self.with(index, |(schema, stored)| {
            request.validate(schema.dims)?;
            Ok(Self::rank(
                schema,
                stored,
                request,
                &request.query,
                request.k,
            ))
        })
    }

    async fn count(&self, index: &str) -> Result<usize> {
        self.with(index, |(_, stored)| Ok(stored.len()))
    }

    async fn drop_index(&self, index: &str) -> Result<()> {
        let mut all = self
            .indexes
            .lock()
            .map_err(|_| Error::backend_msg("flat-index", "poisoned"))?;
        all.remove(index)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(format!("index {index}")))
    }
}

/// Answers with the first sentence of the first context chunk, cited as `[chunk-id]`.
pub struct QuoteChat;

#[async_trait]
impl ChatModel for QuoteChat {
    fn model_id(&self) -> &str {
        "quote-chat"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse> {
        request.validate()?;
        let prompt = &request.messages[request.messages.len() - 1].content;
        let content = match rag_core::prompt::parse_rag_prompt(prompt) {
            Some((chunks, _)) if !chunks.is_empty() => {
                let best = &chunks[0];
                let text = best.text.trim();
                let end = text.find(". ").map_or(text.len(), |i| i + 1);
                format!("{} [{}]", &text[..end], best.id)
            }
            _ => "I found nothing to quote.".to_string(),
        };
        let words = |s: &str| s.split_whitespace().count() as u32;
        Ok(ChatResponse {
            usage: Usage::new(words(prompt), words(&content)),
            content,
            finish_reason: Some("stop".into()),
        })
    }
}

/// Ingests `docs`, embeds with the hashed model, indexes into a [`FlatIndex`] and answers
/// `question` with [`QuoteChat`].
pub async fn run(docs: &Path, question: &str) -> anyhow::Result<Answer> {
    let pipeline = Pipeline::new(
        Arc::new(InMemoryStore::new()),
        Layout::new("mem://custom/".parse()?),
    )
    .with_index(Arc::new(FlatIndex::default()))
    .with_chat(Arc::new(QuoteChat));
    pipeline.ingest(docs).await?;
    let model = HashedEmbedding::new(HashedEmbeddingConfig::default())?;
    pipeline.embed(&model).await?;
    pipeline.index(&model).await?;
    Ok(pipeline.answer(&model, question).await?)
}

#[allow(dead_code)] // `main` is unused when the test includes this file.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "How do I send a signal to a process?".into());
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/manpages/docs");
    let answer = run(&docs, &question).await?;
    println!("Q: {}\nA: {}", answer.question, answer.text);
    for c in &answer.citations {
        println!(
            "  [{}] {} (bytes {}..{})",
            c.chunk_id, c.source, c.start, c.end
        );
    }
    Ok(())
}
