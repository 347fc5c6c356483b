//! Stage 7: hybrid retrieval, the seed's prompt, the chat model's answer and its citations;
//! and retrieval quality over a query set.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::Pipeline;
use futures::stream::BoxStream;

use crate::chat::{ChatEvent, Usage};
use crate::embedding::EmbeddingModel;
use crate::error::{Error, Result};
use crate::eval::{EvalQuery, MetricsAccumulator, RetrievalMetrics};
use crate::index::{Filter, Query, SearchHit, SearchRequest};
use crate::prompt::{ContextChunk, cited_ids, rag_request};
use crate::rerank::{Reranker, blend};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub section: String,
    /// The page the chunk begins on, for paged formats.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub page: Option<u32>,
    /// The page it ends on, when later than `page`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
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
        self.retrieve_filtered(model, question, k, mode, None, rerank)
            .await
    }

    /// [`Pipeline::retrieve_with`] among the records whose metadata passes `filter` (the
    /// search applies it before taking candidates, so the k hits all pass it).
    pub async fn retrieve_filtered(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        k: usize,
        mode: RetrievalMode,
        filter: Option<Filter>,
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
        let mut request = SearchRequest::new(query, depth).with_fusion(self.options.fusion);
        request.filter = filter;
        let mut hits = self
            .index_backend()?
            .search(&self.options.index_name, &request)
            .await?;
        if let Some(reranker) = reranker {
            let (candidates, weight) = (self.options.rerank_candidates, self.options.rerank_weight);
            hits = rerank_hits(reranker.as_ref(), question, hits, candidates, weight).await?;
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// Stage 7: retrieves context with hybrid search, asks the chat model with the seed's
    /// `Context: …\nQuestion: …` prompt and resolves the chunk ids it cites.
    pub async fn answer(&self, model: &dyn EmbeddingModel, question: &str) -> Result<Answer> {
        self.answer_with(model, question, self.options.top_k, None)
            .await
    }

    /// [`Pipeline::answer`] with `k` chunks of context, among the records passing `filter`.
    pub async fn answer_with(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        k: usize,
        filter: Option<Filter>,
    ) -> Result<Answer> {
        let (context, retrieval_time) = self.context(model, question, k, filter).await?;
        let t1 = Instant::now();
        let resp = self
            .chat()?
            .chat(&rag_request(&context_chunks(&context), question))
            .await?;
        let generation_time = t1.elapsed();
        Ok(Answer {
            question: question.to_string(),
            citations: cite(&resp.content, &context),
            text: resp.content,
            context,
            usage: resp.usage,
            retrieval_time,
            generation_time,
        })
    }

    /// [`Pipeline::answer_with`], the answer streamed: the context is retrieved first, then
    /// the chat model's deltas arrive as it writes them ([`crate::ChatModel::chat_stream`],
    /// ending with one [`ChatEvent::Done`]); [`AnswerStream::citations`] resolves the ones the
    /// whole text cites.
    pub async fn answer_stream(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        k: usize,
        filter: Option<Filter>,
    ) -> Result<AnswerStream> {
        let (context, retrieval_time) = self.context(model, question, k, filter).await?;
        let events = self
            .chat()?
            .chat_stream(&rag_request(&context_chunks(&context), question))
            .await?;
        Ok(AnswerStream {
            context,
            retrieval_time,
            events,
        })
    }

    /// The answer's context: the top `k` hybrid hits (reranked when the pipeline reranks).
    async fn context(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        k: usize,
        filter: Option<Filter>,
    ) -> Result<(Vec<SearchHit>, Duration)> {
        if question.trim().is_empty() {
            return Err(Error::invalid("the question is empty"));
        }
        let t0 = Instant::now();
        let rerank = self.reranker.is_some();
        let context = self
            .retrieve_filtered(model, question, k, RetrievalMode::Hybrid, filter, rerank)
            .await?;
        Ok((context, t0.elapsed()))
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

/// The first `candidates` of `hits` reordered by `reranker`, then the rest in their order.
/// With `weight` 1 the reranker's order is taken and its scores become the hits'; below 1 the
/// order is [`blend`]'s.
pub(crate) async fn rerank_hits(
    reranker: &dyn Reranker,
    question: &str,
    mut hits: Vec<SearchHit>,
    candidates: usize,
    weight: f32,
) -> Result<Vec<SearchHit>> {
    let rest = hits.split_off(candidates.min(hits.len()));
    let texts: Vec<String> = hits.iter().map(rerank_text).collect();
    let mut order = reranker.rerank(question, &texts, texts.len()).await?;
    if weight < 1.0 {
        order = blend(&order, weight);
    }
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

/// An answer being written: its context (retrieved before the first token) and the chat
/// model's events.
pub struct AnswerStream {
    /// Chunks given as context.
    pub context: Vec<SearchHit>,
    /// Time to retrieve.
    pub retrieval_time: Duration,
    /// The chat model's deltas, then one [`ChatEvent::Done`].
    pub events: BoxStream<'static, Result<ChatEvent>>,
}

impl AnswerStream {
    /// The context chunks `text` (the whole answer) cites, as citations.
    pub fn citations(&self, text: &str) -> Vec<Citation> {
        cite(text, &self.context)
    }
}

impl std::fmt::Debug for AnswerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerStream")
            .field("context", &self.context.len())
            .field("retrieval_time", &self.retrieval_time)
            .finish_non_exhaustive()
    }
}

fn context_chunks(context: &[SearchHit]) -> Vec<ContextChunk> {
    context
        .iter()
        .map(|h| ContextChunk {
            id: h.id.clone(),
            text: h.text.clone(),
        })
        .collect()
}

/// The hits of `context` that `text` (an answer) cites, as citations in citing order.
pub fn cite(text: &str, context: &[SearchHit]) -> Vec<Citation> {
    cited_ids(text, context.iter().map(|h| h.id.as_str()))
        .into_iter()
        .filter_map(|id| context.iter().find(|h| h.id == id).map(citation_of))
        .collect()
}

/// The citation of one hit (its chunk id and the metadata the index keeps).
pub fn citation_of(hit: &SearchHit) -> Citation {
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
