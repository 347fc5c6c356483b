//! Stage 7: hybrid retrieval, the seed's prompt, the chat model's answer and its citations;
//! and retrieval quality over a query set.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Pipeline;
use crate::chat::Usage;
use crate::embedding::EmbeddingModel;
use crate::error::{Error, Result};
use crate::eval::{EvalQuery, MetricsAccumulator, RetrievalMetrics};
use crate::index::{Query, SearchHit, SearchRequest};
use crate::prompt::{ContextChunk, cited_ids, rag_request};
use crate::rerank::Reranker;

/// How chunks are retrieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RetrievalMode {
    /// Vector kNN only.
    Vector,
    /// BM25 only.
    Text,
    /// Both, fused as [`super::PipelineOptions::fusion`] says (RRF by default).
    Hybrid,
}

/// A cited source of an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Citation {
    /// The chunk's id as cited.
    pub chunk_id: String,
    /// The document it belongs to.
    pub doc_id: String,
    /// Where the document came from.
    pub source: String,
    /// Byte offsets of the chunk in the document.
    pub start: u64,
    /// End offset.
    pub end: u64,
    /// The heading path of the chunk's section (`3 Installation > 3.2 Linux`), if known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub section: String,
    /// The page the chunk begins on, for paged formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The page it ends on, when later than `page`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
}

impl Citation {
    /// Where in the document, for people: the pages and the section when known
    /// (`p. 12 · 3.2 Installation`, `pp. 12–13`); empty for unstructured text.
    pub fn place(&self) -> String {
        let page = self.page.map(|p| match self.page_end {
            Some(e) if e > p => format!("pp. {p}–{e}"),
            _ => format!("p. {p}"),
        });
        let section = (!self.section.is_empty()).then_some(self.section.clone());
        page.into_iter()
            .chain(section)
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

/// A grounded answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    /// The question.
    pub question: String,
    /// The model's answer.
    pub text: String,
    /// Sources the answer cites (chunks retrieved and cited).
    pub citations: Vec<Citation>,
    /// Chunks given as context.
    pub context: Vec<SearchHit>,
    /// Token usage of the chat call.
    pub usage: Usage,
    /// Time to retrieve.
    pub retrieval_time: Duration,
    /// Time to generate.
    pub generation_time: Duration,
}

impl Pipeline {
    /// Retrieves the top `k` chunks for `question`, reranked when the pipeline has a
    /// reranker ([`Pipeline::with_reranker`]).
    pub async fn retrieve(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        k: usize,
        mode: RetrievalMode,
    ) -> Result<Vec<SearchHit>> {
        self.retrieve_with(model, question, k, mode, self.reranker.is_some())
            .await
    }

    /// Retrieves the top `k` chunks for `question`; with `rerank`, the search goes at least
    /// [`PipelineOptions::rerank_candidates`](super::PipelineOptions::rerank_candidates) deep,
    /// those top candidates are reordered by the reranker's scores (which become the hits'
    /// scores), deeper hits (when `k` is larger) follow in the search's order, and the first `k`
    /// are kept. The candidate count bounds the reranker's work. `rerank` without a reranker is
    /// an error.
    pub async fn retrieve_with(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        k: usize,
        mode: RetrievalMode,
        rerank: bool,
    ) -> Result<Vec<SearchHit>> {
        let reranker = match (rerank, &self.reranker) {
            (false, _) => None,
            (true, Some(r)) => Some(r),
            (true, None) => return Err(super::missing("a Reranker", "with_reranker")),
        };
        let depth = match reranker {
            Some(_) => k.max(self.options.rerank_candidates),
            None => k,
        };
        let query = match mode {
            RetrievalMode::Text => Query::Text(question.to_string()),
            RetrievalMode::Vector => Query::Vector(model.embed_query(question).await?),
            RetrievalMode::Hybrid => Query::Hybrid {
                vector: model.embed_query(question).await?,
                text: question.to_string(),
            },
        };
        let mut hits = self
            .index_backend()?
            .search(
                &self.options.index_name,
                &SearchRequest::new(query, depth).with_fusion(self.options.fusion),
            )
            .await?;
        if let Some(reranker) = reranker {
            let candidates = self.options.rerank_candidates;
            hits = rerank_hits(reranker.as_ref(), question, hits, candidates).await?;
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// Stage 7: retrieves context with hybrid search, asks the chat model with the seed's
    /// `Context: …\nQuestion: …` prompt and resolves the chunk ids it cites.
    pub async fn answer(&self, model: &dyn EmbeddingModel, question: &str) -> Result<Answer> {
        if question.trim().is_empty() {
            return Err(Error::invalid("the question is empty"));
        }
        let t0 = Instant::now();
        let context = self
            .retrieve(model, question, self.options.top_k, RetrievalMode::Hybrid)
            .await?;
        let retrieval_time = t0.elapsed();
        let chunks: Vec<ContextChunk> = context
            .iter()
            .map(|h| ContextChunk {
                id: h.id.clone(),
                text: h.text.clone(),
            })
            .collect();
        let t1 = Instant::now();
        let resp = self.chat()?.chat(&rag_request(&chunks, question)).await?;
        let generation_time = t1.elapsed();
        let citations = cited_ids(&resp.content, context.iter().map(|h| h.id.as_str()))
            .into_iter()
            .filter_map(|id| context.iter().find(|h| h.id == id).map(citation_of))
            .collect();
        Ok(Answer {
            question: question.to_string(),
            text: resp.content,
            citations,
            context,
            usage: resp.usage,
            retrieval_time,
            generation_time,
        })
    }

    /// Retrieval quality over `queries`: for each, the top `depth` chunks are mapped to their
    /// documents (first occurrence counts) and scored against the relevant documents.
    pub async fn evaluate(
        &self,
        model: &dyn EmbeddingModel,
        queries: &[EvalQuery],
        mode: RetrievalMode,
        depth: usize,
    ) -> Result<RetrievalMetrics> {
        self.evaluate_with(model, queries, mode, depth, self.reranker.is_some())
            .await
    }

    /// [`Pipeline::evaluate`] with reranking on or off (see [`Pipeline::retrieve_with`]), so
    /// one pipeline reports both.
    pub async fn evaluate_with(
        &self,
        model: &dyn EmbeddingModel,
        queries: &[EvalQuery],
        mode: RetrievalMode,
        depth: usize,
        rerank: bool,
    ) -> Result<RetrievalMetrics> {
        let mut acc = MetricsAccumulator::default();
        for q in queries {
            let hits = self
                .retrieve_with(model, &q.text, depth, mode, rerank)
                .await?;
            let docs: Vec<String> = hits.iter().map(|h| h.doc_id().to_string()).collect();
            acc.add(&docs, &q.relevant);
        }
        Ok(acc.finish())
    }
}

/// What a reranker reads of a hit: its document's title (metadata `title`) and its text, as
/// embedding models read chunks ([`crate::Chunk::embedding_text`]) and rerankers are trained.
pub fn rerank_text(hit: &SearchHit) -> String {
    match hit.metadata.get("title").and_then(|v| v.as_str()) {
        Some(title) if !title.is_empty() => format!("{title}\n{}", hit.text),
        _ => hit.text.clone(),
    }
}

/// The first `candidates` of `hits` reordered by `reranker` (its scores become theirs), then
/// the rest in their order.
pub(crate) async fn rerank_hits(
    reranker: &dyn Reranker,
    question: &str,
    mut hits: Vec<SearchHit>,
    candidates: usize,
) -> Result<Vec<SearchHit>> {
    let rest = hits.split_off(candidates.min(hits.len()));
    let texts: Vec<String> = hits.iter().map(rerank_text).collect();
    let order = reranker.rerank(question, &texts, texts.len()).await?;
    let mut slots: Vec<Option<SearchHit>> = hits.into_iter().map(Some).collect();
    let mut out = Vec::with_capacity(slots.len() + rest.len());
    for s in order {
        if let Some(mut hit) = slots.get_mut(s.index).and_then(Option::take) {
            hit.score = s.score;
            out.push(hit);
        }
    }
    if out.len() != slots.len() {
        return Err(Error::backend_msg(
            "rerank",
            format!(
                "{} ranked {} of {} candidates",
                reranker.model_id(),
                out.len(),
                slots.len()
            ),
        ));
    }
    out.extend(rest);
    Ok(out)
}

fn citation_of(hit: &SearchHit) -> Citation {
    let s = |k: &str| {
        hit.metadata
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let n = |k: &str| {
        hit.metadata
            .get(k)
            .and_then(|v| v.as_u64())
            .unwrap_or_default()
    };
    let page = |k: &str| {
        hit.metadata
            .get(k)
            .and_then(|v| v.as_u64())
            .and_then(|p| u32::try_from(p).ok())
    };
    Citation {
        chunk_id: hit.id.clone(),
        doc_id: s("doc_id"),
        source: s("source"),
        start: n("start"),
        end: n("end"),
        section: s("section"),
        page: page("page"),
        page_end: page("page_end"),
    }
}
