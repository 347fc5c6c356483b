//! [`RerankClient`]: DashScope's text-rerank API (the GTE-Rerank models, e.g. `gte-rerank-v2`)
//! as a [`Reranker`].
//!
//! Wire format, from the official Python SDK (`dashscope/rerank/text_rerank.py`,
//! `TextReRank.call`: task group `rerank`, task and function `text-rerank`) and the DashScope
//! API reference:
//!
//! ```text
//! POST {native base}/services/rerank/text-rerank/text-rerank
//! {"model": "gte-rerank-v2",
//!  "input": {"query": "…", "documents": ["…", "…"]},
//!  "parameters": {"return_documents": false, "top_n": 2}}
//! → {"output": {"results": [{"index": 1, "relevance_score": 0.93}, …]},
//!    "usage": {"total_tokens": 79}, "request_id": "…"}
//! ```
//!
//! Results come sorted by score; the client puts them back in input order and checks that
//! every document got exactly one finite score.

use async_trait::async_trait;
use rag_core::rerank::{Reranker, check_query};
use rag_core::{Error, Result};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::config::BailianConfig;
use crate::http::Http;

/// How a [`RerankClient`] batches and truncates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerankOptions {
    /// Documents per request (the service takes up to 500; scores do not depend on the
    /// batch, so any cut gives the same scores).
    pub max_batch: usize,
    /// Each document and the query are cut to this many characters before sending — a
    /// conservative stand-in for the per-text token limit (4,000 tokens), which the client
    /// cannot count.
    pub max_input_chars: usize,
}

impl Default for RerankOptions {
    fn default() -> Self {
        Self {
            max_batch: 100,
            max_input_chars: 4000,
        }
    }
}

/// A reranking model on DashScope (or a server speaking its text-rerank API).
#[derive(Debug, Clone)]
pub struct RerankClient {
    http: Http,
    model: String,
    options: RerankOptions,
}

#[derive(Deserialize)]
struct Answer {
    output: Output,
}

#[derive(Deserialize)]
struct Output {
    results: Vec<ResultItem>,
}

#[derive(Deserialize)]
struct ResultItem {
    index: usize,
    relevance_score: f64,
}

impl RerankClient {
    /// A client for `model` (`gte-rerank-v2`).
    pub fn new(
        config: BailianConfig,
        model: impl Into<String>,
        options: RerankOptions,
    ) -> Result<Self> {
        if options.max_batch == 0 || options.max_input_chars == 0 {
            return Err(Error::invalid(
                "max_batch and max_input_chars must be positive",
            ));
        }
        Ok(Self {
            http: Http::new(config)?,
            model: model.into(),
            options,
        })
    }

    /// The request body for one batch (every result asked for, no document text back).
    pub fn body(&self, query: &str, documents: &[String]) -> serde_json::Value {
        let documents: Vec<String> = documents.iter().map(|d| self.prepare(d)).collect();
        json!({
            "model": self.model,
            "input": {"query": self.prepare(query), "documents": documents},
            "parameters": {"return_documents": false, "top_n": documents.len()},
        })
    }

    /// Truncates to `max_input_chars`; an empty text becomes one space (the service refuses
    /// empty documents, the trait promises a score for every one).
    fn prepare(&self, text: &str) -> String {
        let cut: String = text.chars().take(self.options.max_input_chars).collect();
        if cut.trim().is_empty() {
            " ".into()
        } else {
            cut
        }
    }

    async fn score_batch(&self, query: &str, documents: &[String]) -> Result<Vec<f32>> {
        let url = format!(
            "{}/services/rerank/text-rerank/text-rerank",
            self.http.config.native_base()
        );
        let body = self.body(query, documents);
        let answer: Answer = self
            .http
            .json(Method::POST, &url, Some(&body), "text-rerank")
            .await?;
        let bad = |why: String| Error::backend_msg("dashscope", format!("text-rerank: {why}"));
        let mut scores = vec![None; documents.len()];
        for r in answer.output.results {
            let slot = scores.get_mut(r.index).ok_or_else(|| {
                bad(format!(
                    "result index {} of {} documents",
                    r.index,
                    documents.len()
                ))
            })?;
            if slot.is_some() {
                return Err(bad(format!("document {} scored twice", r.index)));
            }
            let score = r.relevance_score as f32;
            if !score.is_finite() {
                return Err(bad(format!("document {} has no finite score", r.index)));
            }
            *slot = Some(score);
        }
        scores
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.ok_or_else(|| bad(format!("document {i} was not scored"))))
            .collect()
    }
}

#[async_trait]
impl Reranker for RerankClient {
    async fn score(&self, query: &str, documents: &[String]) -> Result<Vec<f32>> {
        check_query(query)?;
        let mut out = Vec::with_capacity(documents.len());
        for batch in documents.chunks(self.options.max_batch) {
            out.extend(self.score_batch(query, batch).await?);
        }
        Ok(out)
    }

    fn model_id(&self) -> String {
        format!("dashscope-{}", self.model)
    }
}
