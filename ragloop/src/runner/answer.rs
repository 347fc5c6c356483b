//! Stage 7 and the evaluation report's rows.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rag_core::pipeline::{Answer, Pipeline, RetrievalMode};
use rag_core::{EmbeddingModel, Progress, QueryMemo, Stage};

use super::{NamedModel, Runner, StageLine};
use crate::config::{Retriever, Which};
use crate::evaluation::{self, MetricsRow};
use crate::queries::read_split;

impl Runner {
    /// Stage 7: answers `question` with citations, retrieving with `model`.
    pub async fn answer(
        &self,
        model: &dyn EmbeddingModel,
        question: &str,
        deployed: Option<&str>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Answer)> {
        let t = Instant::now();
        let answer = self
            .query_pipeline(deployed, progress)
            .await?
            .answer(model, question)
            .await?;
        let tokens = u64::from(answer.usage.total_tokens);
        Ok((
            StageLine::new(
                Stage::Answer,
                format!(
                    "{} citations; retrieval {:.0} ms, generation {:.0} ms, {} prompt + {} completion tokens",
                    answer.citations.len(),
                    answer.retrieval_time.as_secs_f64() * 1e3,
                    answer.generation_time.as_secs_f64() * 1e3,
                    answer.usage.prompt_tokens,
                    answer.usage.completion_tokens
                ),
                t,
                tokens,
            ),
            answer,
        ))
    }

    /// The pipeline stage 7 answers with (and `ragloop serve` serves): the served index, the
    /// chat model (`deployed`: the model stage 4 deployed, else `[llm]`'s), and the `[rerank]`
    /// reranker with its weight.
    pub async fn query_pipeline(
        &self,
        deployed: Option<&str>,
        progress: Arc<dyn Progress>,
    ) -> Result<Pipeline> {
        let mut pipeline = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_index(self.backends.index.clone())
            .with_chat(self.backends.chat(deployed)?);
        if let Some(r) = self.reranker().await? {
            pipeline = pipeline.with_reranker(r.model).with_rerank_weight(r.weight);
        }
        Ok(pipeline)
    }

    /// Whether the report evaluates the base model beside a trained one (which then needs its
    /// own shards and index).
    pub fn evaluates_base(&self) -> bool {
        self.config().queries().is_some()
            && self.backends.plan.training().is_some()
            && self.config().retrievers().iter().any(|r| {
                matches!(
                    r,
                    Retriever::Dense(Which::Base) | Retriever::Hybrid(Which::Base)
                )
            })
    }

    /// The report's rows on `eval.queries` (none without a query set).
    pub async fn evaluate(
        &self,
        served: &NamedModel,
        base: Option<&NamedModel>,
    ) -> Result<Vec<MetricsRow>> {
        let Some(path) = self.config().queries() else {
            return Ok(Vec::new());
        };
        let queries = read_split(path, &self.config().eval.split)?;
        if queries.is_empty() {
            return Err(crate::exit::UsageError(format!(
                "{} has no queries in split {:?}",
                path.display(),
                self.config().eval.split
            ))
            .into());
        }
        let progress: Arc<dyn Progress> = Arc::new(rag_core::LogProgress);
        // Each model embeds each query once, whatever number of rows read it.
        let served_queries = QueryMemo::new(served.model.clone());
        let base_queries = base.map(|b| QueryMemo::new(b.model.clone()));
        let mut rows = Vec::new();
        let mut done: Vec<(RetrievalMode, Which)> = Vec::new();
        for r in self.config().retrievers() {
            let (mode, which) = match r {
                Retriever::Bm25 => (RetrievalMode::Text, Which::Served),
                Retriever::Dense(w) => (RetrievalMode::Vector, w),
                Retriever::Hybrid(w) => (RetrievalMode::Hybrid, w),
            };
            // Without training the base model is the served one, in the served index.
            let (m, model, which) = match (which, base, &base_queries) {
                (Which::Base, Some(b), Some(q)) => (b, q, Which::Base),
                _ => (served, &served_queries, Which::Served),
            };
            // Without a trained model a base row is the served one: reported once.
            if done.contains(&(mode, which)) {
                continue;
            }
            done.push((mode, which));
            let mut pipeline = self
                .pipeline(&self.index_name(which), progress.clone())
                .with_index(self.backends.index.clone());
            rows.push(evaluation::row(&pipeline, model, &m.name, mode, &queries).await?);
            // The served hybrid retriever, the one that answers, is also reported reranked
            // (each reranked row costs a cross-encoder pass over every query's candidates).
            if r == Retriever::Hybrid(Which::Served)
                && let Some(r) = self.reranker().await?
            {
                pipeline = pipeline.with_reranker(r.model).with_rerank_weight(r.weight);
                let t = Instant::now();
                if let Some(row) =
                    evaluation::reranked_row(&pipeline, model, &m.name, mode, &queries).await?
                {
                    tracing::info!(
                        queries = queries.len(),
                        seconds = t.elapsed().as_secs_f64(),
                        "reranked evaluation"
                    );
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }
}
