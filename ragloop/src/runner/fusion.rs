//! How hybrid retrieval fuses its vector and BM25 lists. `[index] fusion = "auto"` (the
//! default) chooses a convex combination's weight on labelled queries — the query set's
//! `train` split, ranked by a model that never trained on it (the base model; the served
//! one when stage 2 does not train) — and keeps RRF when it cannot choose cleanly or RRF
//! does as well. The choice is saved beside the indexes (`<root>/fusion.json`) so `ragloop
//! ask` retrieves as `run` evaluated.

use anyhow::{Context, Result};
use bytes::Bytes;
use rag_core::eval::{EvalQuery, MetricsAccumulator};
use rag_core::{Fusion, Query, SearchHit, SearchRequest};
use serde::{Deserialize, Serialize};

use super::{NamedModel, Runner};
use crate::config::{FusionSetting, Which};
use crate::evaluation::DEPTH;
use crate::queries::read_queries;

/// The split whose queries choose the weight (never the evaluated one).
const TUNING_SPLIT: &str = "train";
/// At most this many tuning queries (the first ones, in file order).
const MAX_TUNING_QUERIES: usize = 2_000;
/// Candidates taken from each list, as every hybrid search takes.
const CANDIDATES: usize = 100;

/// What `run` chose, and on what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FusionChoice {
    /// The fusion hybrid retrieval uses.
    pub fusion: Fusion,
    /// Why (for the stage line and the report).
    pub reason: String,
}

impl Runner {
    /// The fusion hybrid retrieval uses now: the configured one, or `run`'s choice.
    pub(crate) fn fusion(&self) -> Fusion {
        match self.config().index.fusion() {
            Ok(FusionSetting::Fixed(f)) => f,
            _ => self
                .fusion
                .lock()
                .ok()
                .and_then(|c| c.as_ref().map(|c| c.fusion))
                .unwrap_or_default(),
        }
    }

    fn fusion_uri(&self) -> Result<rag_core::StoreUri> {
        Ok(self.layout.root().join("fusion.json")?)
    }

    fn set_fusion(&self, choice: FusionChoice) {
        if let Ok(mut c) = self.fusion.lock() {
            *c = Some(choice);
        }
    }

    /// Reads the choice a previous `run` saved (with `fusion = "auto"`); none is RRF.
    pub async fn load_fusion(&self) -> Result<()> {
        if self.config().index.fusion() != Ok(FusionSetting::Auto) {
            return Ok(());
        }
        match self.backends.store.get_bytes(&self.fusion_uri()?).await {
            Ok(bytes) => {
                let choice: FusionChoice =
                    serde_json::from_slice(&bytes).context("reading fusion.json")?;
                self.set_fusion(choice);
                Ok(())
            }
            Err(rag_core::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Chooses the fusion (see the module docs), saves it and returns the choice.
    pub async fn choose_fusion(
        &self,
        served: &NamedModel,
        base: Option<&NamedModel>,
    ) -> Result<FusionChoice> {
        let choice = match self.config().index.fusion() {
            Ok(FusionSetting::Fixed(fusion)) => FusionChoice {
                fusion,
                reason: "set in [index] fusion".into(),
            },
            _ => self.tune(served, base).await?,
        };
        self.backends
            .store
            .put(
                &self.fusion_uri()?,
                Bytes::from(serde_json::to_vec_pretty(&choice)?),
            )
            .await?;
        self.set_fusion(choice.clone());
        Ok(choice)
    }

    async fn tune(&self, served: &NamedModel, base: Option<&NamedModel>) -> Result<FusionChoice> {
        let rrf = |why: &str| FusionChoice {
            fusion: Fusion::Rrf,
            reason: why.to_string(),
        };
        let Some(path) = self.config().queries() else {
            return Ok(rrf("RRF: no labelled queries to choose a weight on"));
        };
        if self.config().eval.split == TUNING_SPLIT {
            return Ok(rrf("RRF: the train split is the one evaluated"));
        }
        // A model that trained on the tuning queries would favour itself.
        let trains = self.backends.plan.training().is_some();
        let (model, which) = match (base, trains) {
            (Some(b), _) => (b, Which::Base),
            (None, false) => (served, Which::Served),
            (None, true) => {
                return Ok(rrf(
                    "RRF: no untrained model's index to choose a weight with (add the hybrid:base row)",
                ));
            }
        };
        let mut queries = read_queries(path, Some(TUNING_SPLIT))?;
        if queries.is_empty() {
            return Ok(rrf("RRF: the query set has no train split"));
        }
        queries.truncate(MAX_TUNING_QUERIES);
        let index = self.index_name(which);
        let lists = self.candidate_lists(model, &index, &queries).await?;
        let mut candidates = vec![Fusion::Rrf];
        candidates.extend((0..=10).map(|i| Fusion::Convex {
            vector_weight: i as f32 / 10.0,
        }));
        let scored: Vec<(Fusion, f64)> = candidates
            .into_iter()
            .map(|f| (f, ndcg(&lists, &queries, f)))
            .collect();
        let rrf_score = scored[0].1;
        // The best; RRF (first) keeps ties.
        let (best, score) = scored
            .iter()
            .copied()
            .fold((Fusion::Rrf, f64::MIN), |acc, (f, s)| {
                if s > acc.1 { (f, s) } else { acc }
            });
        Ok(FusionChoice {
            fusion: best,
            reason: format!(
                "{best}, chosen on {} {TUNING_SPLIT}-split queries with {}: nDCG@10 {score:.3} (RRF {rrf_score:.3})",
                queries.len(),
                model.name
            ),
        })
    }

    /// Each query's vector and BM25 candidates on `index` (ids, documents and scores only).
    async fn candidate_lists(
        &self,
        model: &NamedModel,
        index: &str,
        queries: &[EvalQuery],
    ) -> Result<Vec<(Vec<SearchHit>, Vec<SearchHit>)>> {
        let backend = &self.backends.index;
        let slim = |hits: Vec<SearchHit>| -> Vec<SearchHit> {
            hits.into_iter()
                .map(|h| {
                    let mut metadata = rag_core::Metadata::new();
                    if let Some(d) = h.metadata.get("doc_id") {
                        metadata.insert("doc_id".into(), d.clone());
                    }
                    SearchHit {
                        id: h.id,
                        score: h.score,
                        text: String::new(),
                        metadata,
                    }
                })
                .collect()
        };
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let vector = model.model.embed_query(&q.text).await?;
            let v = backend
                .search(
                    index,
                    &SearchRequest::new(Query::Vector(vector), CANDIDATES),
                )
                .await?;
            let t = backend
                .search(
                    index,
                    &SearchRequest::new(Query::Text(q.text.clone()), CANDIDATES),
                )
                .await?;
            out.push((slim(v), slim(t)));
        }
        Ok(out)
    }
}

/// Document-level nDCG@10 of `fusion` over the candidate lists (as the report ranks).
fn ndcg(lists: &[(Vec<SearchHit>, Vec<SearchHit>)], queries: &[EvalQuery], fusion: Fusion) -> f64 {
    let mut acc = MetricsAccumulator::default();
    for ((v, t), q) in lists.iter().zip(queries) {
        let request = SearchRequest::new(Query::Text(String::new()), DEPTH).with_fusion(fusion);
        let docs: Vec<String> = rag_core::fuse(&request, v.clone(), t.clone())
            .into_iter()
            .map(|h| {
                h.metadata
                    .get("doc_id")
                    .and_then(|d| d.as_str())
                    .unwrap_or(&h.id)
                    .to_string()
            })
            .collect();
        acc.add(&docs, &q.relevant);
    }
    acc.finish().ndcg_at_10
}
