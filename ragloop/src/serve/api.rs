//! `POST /v1/retrieve` and `POST /v1/answer` (plain or streamed as server-sent events).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use rag_core::pipeline::{Citation, RetrievalMode, citation_of};
use rag_core::{ChatEvent, Filter, SearchHit, Usage};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, parse_json};

/// How `/v1/retrieve` searches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Vector search with the served embedding model.
    Dense,
    /// BM25 over the chunks' text.
    Bm25,
    /// Both, fused as the index was set up (the answer's retrieval).
    #[default]
    Hybrid,
}

impl From<Mode> for RetrievalMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Dense => Self::Vector,
            Mode::Bm25 => Self::Text,
            Mode::Hybrid => Self::Hybrid,
        }
    }
}

/// `POST /v1/retrieve`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetrieveRequest {
    /// What to search for.
    pub query: String,
    /// Hits wanted (1 to `[serve] max_k`; default `[index] top_k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only chunks whose metadata passes it (`{"eq": ["doc_id", "dup.2"]}`, `in`, `range`,
    /// `and`, `or`, `not`).
    #[serde(default)]
    pub filter: Option<Filter>,
    /// `dense`, `bm25` or `hybrid` (default).
    #[serde(default)]
    pub mode: Mode,
    /// Rerank the candidates with `[rerank]`'s model (default: when one is configured).
    #[serde(default)]
    pub rerank: Option<bool>,
}

/// One retrieved chunk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    /// The chunk's id (what answers cite).
    pub id: String,
    /// Its text.
    pub text: String,
    /// Its score (the search's, the fusion's or the reranker's).
    pub score: f32,
    /// Its document.
    pub doc_id: String,
    /// Where the document came from.
    pub source: String,
    /// The heading path of its section, when known.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub section: String,
    /// The page it begins on, for paged formats.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub page: Option<u32>,
    /// The page it ends on, when later.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub page_end: Option<u32>,
}

impl From<&SearchHit> for Hit {
    fn from(h: &SearchHit) -> Self {
        let c = citation_of(h);
        Self {
            id: h.id.clone(),
            text: h.text.clone(),
            score: h.score,
            doc_id: c.doc_id,
            source: c.source,
            section: c.section,
            page: c.page,
            page_end: c.page_end,
        }
    }
}

/// `/v1/retrieve`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetrieveResponse {
    /// Best first.
    pub hits: Vec<Hit>,
    /// Whether the reranker reordered them.
    pub reranked: bool,
    /// Time the search took.
    pub took_ms: f64,
}

/// `POST /v1/answer`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    /// The question.
    pub question: String,
    /// Chunks of context (1 to `[serve] max_k`; default `[index] top_k`).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only chunks whose metadata passes it.
    #[serde(default)]
    pub filter: Option<Filter>,
    /// Stream the answer as server-sent events: `delta` events (`{"text"}`), then one `done`
    /// (`{"citations", "usage", "finish_reason"}`), or one `error`.
    #[serde(default)]
    pub stream: bool,
}

/// A citation with the chunk's text, so a client can show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CitedChunk {
    /// Where it is.
    #[serde(flatten)]
    pub citation: Citation,
    /// The chunk's text.
    pub text: String,
}

/// `/v1/answer`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerResponse {
    /// The answer.
    pub answer: String,
    /// The chunks it cites.
    pub citations: Vec<CitedChunk>,
    /// LLM tokens.
    pub usage: Usage,
    /// The LLM model.
    pub model: String,
    /// Time to retrieve.
    pub retrieval_ms: f64,
    /// Time to generate.
    pub generation_ms: f64,
}

/// The `k` of a request, checked against the limit.
pub(super) fn checked_k(state: &AppState, k: Option<usize>) -> Result<usize, ApiError> {
    let max = state.limits.max_k;
    match k.unwrap_or(state.default_k) {
        k if (1..=max).contains(&k) => Ok(k),
        k => Err(ApiError::invalid(
            Some("k".to_string()),
            format!("k = {k} is out of range: 1 to {max}"),
        )),
    }
}

fn non_empty(field: &str, text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(
            Some(field.to_string()),
            format!("{field} is empty"),
        ));
    }
    Ok(())
}

/// `POST /v1/retrieve`.
pub(super) async fn retrieve(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<RetrieveResponse>, ApiError> {
    let req: RetrieveRequest = parse_json(&body)?;
    non_empty("query", &req.query)?;
    let k = checked_k(&state, req.k)?;
    let can_rerank = state.served.pipeline.reranker().is_some();
    let rerank = match req.rerank {
        Some(true) if !can_rerank => {
            return Err(ApiError::invalid(
                Some("rerank".to_string()),
                "this server has no reranker ([rerank] backend = \"none\")",
            ));
        }
        Some(r) => r,
        None => can_rerank,
    };
    let t = Instant::now();
    let hits = state
        .served
        .pipeline
        .retrieve_filtered(
            state.served.model.as_ref(),
            &req.query,
            k,
            req.mode.into(),
            req.filter,
            rerank,
        )
        .await?;
    Ok(Json(RetrieveResponse {
        hits: hits.iter().map(Hit::from).collect(),
        reranked: rerank,
        took_ms: t.elapsed().as_secs_f64() * 1e3,
    }))
}

/// `POST /v1/answer`.
pub(super) async fn answer(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AnswerRequest = parse_json(&body)?;
    non_empty("question", &req.question)?;
    let k = checked_k(&state, req.k)?;
    let model = state.served.model.as_ref();
    if !req.stream {
        let a = state
            .served
            .pipeline
            .answer_with(model, &req.question, k, req.filter)
            .await?;
        state.metrics.tokens(&a.usage);
        let citations = cited_chunks(&a.citations, &a.context);
        return Ok(Json(AnswerResponse {
            answer: a.text,
            citations,
            usage: a.usage,
            model: state.chat_model.clone(),
            retrieval_ms: a.retrieval_time.as_secs_f64() * 1e3,
            generation_ms: a.generation_time.as_secs_f64() * 1e3,
        })
        .into_response());
    }
    let stream = state
        .served
        .pipeline
        .answer_stream(model, &req.question, k, req.filter)
        .await?;
    let context = stream.context.clone();
    let mut text = String::new();
    let events = stream
        .events
        .map(move |event| -> Result<Event, Infallible> {
            Ok(match event {
                Ok(ChatEvent::Delta(delta)) => {
                    text.push_str(&delta);
                    json_event("delta", &serde_json::json!({ "text": delta }))
                }
                Ok(ChatEvent::Done {
                    usage,
                    finish_reason,
                }) => {
                    state.metrics.tokens(&usage);
                    let cited = rag_core::pipeline::cite(&text, &context);
                    json_event(
                        "done",
                        &serde_json::json!({
                            "citations": cited_chunks(&cited, &context),
                            "usage": usage,
                            "finish_reason": finish_reason,
                        }),
                    )
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    state.metrics.error(e.kind);
                    Event::default().event("error").data(e.json())
                }
            })
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn json_event(name: &str, value: &serde_json::Value) -> Event {
    Event::default().event(name).data(value.to_string())
}

/// Each citation with its chunk's text (from the context it was cited from).
pub(super) fn cited_chunks(citations: &[Citation], context: &[SearchHit]) -> Vec<CitedChunk> {
    citations
        .iter()
        .map(|c| CitedChunk {
            citation: c.clone(),
            text: context
                .iter()
                .find(|h| h.id == c.chunk_id)
                .map(|h| h.text.clone())
                .unwrap_or_default(),
        })
        .collect()
}
