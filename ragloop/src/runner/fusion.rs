//! How hybrid retrieval fuses its vector and BM25 lists. `[index] fusion = "auto"` (the
//! default) chooses a convex combination's weight on labelled queries no ranking model
//! learnt, and keeps RRF when it cannot choose cleanly or RRF does as well:
//! - the untrained model's index (the base model, or the served one when stage 2 does not
//!   train) on the query set's `train` split;
//! - a trained adapter's index with the weight its training job chose out of fold
//!   (`<model>/fusion.json`, see `ragloop::train`), else the base model's weight.
//!
//! The served index's choice is saved at the store's root (`fusion.json`) so `ragloop ask`
//! retrieves as `run` evaluated.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bytes::Bytes;
use rag_core::eval::EvalQuery;
use rag_core::{Fusion, Query, SearchHit, SearchRequest};

use super::{NamedModel, Runner};
use crate::config::{FusionSetting, Which};
use crate::evaluation::{Candidates, FusionChoice, choose_fusion};
use crate::queries::read_queries;

/// The split whose queries choose the weight (never the evaluated one).
const TUNING_SPLIT: &str = "train";
/// At most this many tuning queries (the first ones, in file order).
const MAX_TUNING_QUERIES: usize = 2_000;
/// Candidates taken from each list, as every hybrid search takes.
const CANDIDATES: usize = 100;

/// The fusion of each index `run` chose, by index name.
pub(crate) type Choices = HashMap<String, FusionChoice>;

/// The untrained model's choice and what it was chosen on (`<root>/fusion-base.json`): a
/// rerun whose queries, model and shards are unchanged reuses it instead of searching again.
#[derive(serde::Serialize, serde::Deserialize)]
struct Tuned {
    key: String,
    choice: FusionChoice,
}

impl Runner {
    /// The fusion hybrid retrieval on `index` uses: the configured one, or `run`'s choice.
    pub(crate) fn fusion(&self, index: &str) -> Fusion {
        match self.config().index.fusion() {
            Ok(FusionSetting::Fixed(f)) => f,
            _ => self
                .fusion
                .lock()
                .ok()
                .and_then(|c| c.get(index).map(|c| c.fusion))
                .unwrap_or_default(),
        }
    }

    fn fusion_uri(&self) -> Result<rag_core::StoreUri> {
        Ok(self.layout.root().join("fusion.json")?)
    }

    fn set_fusion(&self, which: Which, choice: FusionChoice) {
        let name = self.index_name(which);
        if let Ok(mut c) = self.fusion.lock() {
            c.insert(name, choice);
        }
    }

    async fn read_choice(&self, uri: &rag_core::StoreUri) -> Result<Option<FusionChoice>> {
        match self.backends.store.get_bytes(uri).await {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).with_context(|| format!("reading {uri}"))?,
            )),
            Err(rag_core::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the served index's choice a previous `run` saved (with `fusion = "auto"`);
    /// none is RRF.
    pub async fn load_fusion(&self) -> Result<()> {
        if self.config().index.fusion() != Ok(FusionSetting::Auto) {
            return Ok(());
        }
        if let Some(choice) = self.read_choice(&self.fusion_uri()?).await? {
            self.set_fusion(Which::Served, choice);
        }
        Ok(())
    }

    /// Chooses each index's fusion (see the module docs), saves the served one's and returns
    /// the lines that say what was chosen.
    pub async fn choose_fusion(
        &self,
        served: &NamedModel,
        base: Option<&NamedModel>,
    ) -> Result<Vec<String>> {
        let (served_choice, base_choice) = match self.config().index.fusion() {
            Ok(FusionSetting::Fixed(fusion)) => {
                let c = FusionChoice::new(fusion, "set in [index] fusion");
                (c.clone(), base.map(|_| c))
            }
            _ => {
                let untrained = self.tune(served, base).await?;
                // A weight the job chose for another BM25 (the model trained before `[index]
                // analyzer` changed) is not this index's: the base model's serves instead.
                let analyzer = self.config().index.analyzer;
                let trained = match self.backends.plan.training() {
                    Some(_) => self
                        .read_choice(&self.trained_fusion_uri()?)
                        .await?
                        .filter(|t| t.analyzer.unwrap_or_default() == analyzer),
                    None => None,
                };
                match (trained, base) {
                    (Some(t), _) => (t, Some(untrained)),
                    (None, Some(_)) => (
                        FusionChoice::new(
                            untrained.fusion,
                            format!("the base model's: {}", untrained.reason),
                        ),
                        Some(untrained),
                    ),
                    (None, None) => (untrained, None),
                }
            }
        };
        self.backends
            .store
            .put(
                &self.fusion_uri()?,
                Bytes::from(serde_json::to_vec_pretty(&served_choice)?),
            )
            .await?;
        let mut lines = vec![format!("hybrid fusion: {}", served_choice.reason)];
        self.set_fusion(Which::Served, served_choice);
        if let Some(b) = base_choice {
            lines.push(format!("hybrid fusion, base model: {}", b.reason));
            self.set_fusion(Which::Base, b);
        }
        Ok(lines)
    }

    fn trained_fusion_uri(&self) -> Result<rag_core::StoreUri> {
        Ok(self.config().model_output().join("fusion.json")?)
    }

    /// The untrained model's choice on the train split.
    async fn tune(&self, served: &NamedModel, base: Option<&NamedModel>) -> Result<FusionChoice> {
        let rrf = |why: &str| FusionChoice::new(Fusion::Rrf, why);
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
        let key = self.tuning_key(model, &queries).await?;
        let saved_uri = self.layout.root().join("fusion-base.json")?;
        if let Ok(bytes) = self.backends.store.get_bytes(&saved_uri).await
            && let Ok(saved) = serde_json::from_slice::<Tuned>(&bytes)
            && saved.key == key
        {
            return Ok(saved.choice);
        }
        let lists = self
            .candidate_lists(model, &self.index_name(which), &queries)
            .await?;
        let (best, score, rrf_score) = choose_fusion(&lists);
        let choice = FusionChoice::new(
            best,
            format!(
                "{best}, chosen on {} {TUNING_SPLIT}-split queries with {}: nDCG@10 {score:.3} (RRF {rrf_score:.3})",
                queries.len(),
                model.name
            ),
        );
        let saved = Tuned {
            key,
            choice: choice.clone(),
        };
        self.backends
            .store
            .put(&saved_uri, Bytes::from(serde_json::to_vec_pretty(&saved)?))
            .await?;
        Ok(choice)
    }

    /// SHA-256 over the tuning queries, the model's id and its shards (names and sizes, ETags
    /// when the store has them): what the index the choice searched was built from.
    async fn tuning_key(&self, model: &NamedModel, queries: &[EvalQuery]) -> Result<String> {
        use futures::TryStreamExt;
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(serde_json::to_vec(queries)?);
        h.update(model.model.model_id().as_bytes());
        // The BM25 lists depend on the analyzer the index was built with.
        h.update(self.config().index.analyzer.name().as_bytes());
        let shards = self.layout.vector_shards(model.model.model_id());
        let mut objects: Vec<rag_core::ObjectMeta> =
            self.backends.store.list(&shards).try_collect().await?;
        objects.sort_by_key(|o| o.uri.to_string());
        for o in objects {
            h.update(o.uri.to_string().as_bytes());
            h.update(o.size.to_le_bytes());
            h.update(o.e_tag.unwrap_or_default().as_bytes());
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Each query's vector and BM25 candidates on `index` (ids, documents and scores only).
    async fn candidate_lists(
        &self,
        model: &NamedModel,
        index: &str,
        queries: &[EvalQuery],
    ) -> Result<Vec<Candidates>> {
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
            out.push((slim(v), slim(t), q.relevant.clone()));
        }
        Ok(out)
    }
}
