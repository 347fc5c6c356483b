//! Weight merging against forgetting (`--merge`, full fine-tuning): the saved model is
//! `base + α·(trained − base)`, as LM-Cocktail merges a fine-tuned model back towards its base.
//! With `auto`, α is chosen on held-out data, never on the evaluation queries: the held-out
//! labelled queries over a pool of the corpus's chunks when the job has them (the unit the
//! loop retrieves: a model trained on chunks can rank whole pages worse and chunks better),
//! else the held-out queries — or the held-out mined or synthetic pairs as pseudo-queries —
//! over every document.

use std::path::Path;
use std::str::FromStr;

use anyhow::{Result, bail};
use embed_runtime::SentenceEmbedder;
use embed_runtime::train::pairs::{Pair, PairOrigin};
use embed_runtime::train::{EmbeddingTrainer, evaluate};
use rag_core::Document;
use rag_core::eval::EvalQuery;
use serde::Serialize;

use super::passages::ChunkPositives;

/// The weights `auto` tries (0 is the base model, 1 the trained one).
pub const CANDIDATES: [f64; 4] = [0.0, 0.5, 0.75, 1.0];

/// How the trained weights are merged with the base model's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    /// α from 0, 0.5, 0.75 and 1, the best nDCG@10 on held-out data (ties: the larger α).
    Auto,
    /// The trained weights as they are (α = 1).
    Off,
    /// This α.
    Weight(f64),
}

impl FromStr for Merge {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "off" | "none" => Ok(Self::Off),
            other => match other.parse::<f64>() {
                Ok(a) if (0.0..=1.0).contains(&a) => Ok(Self::Weight(a)),
                _ => Err(format!(
                    "{other:?}: `auto`, `off` or a weight of the trained model in 0..=1"
                )),
            },
        }
    }
}

/// What the merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// The weight of the trained model in the saved one.
    pub alpha: f64,
    /// What α was chosen on (empty when it was given).
    pub selected_on: String,
    /// (α, nDCG@10 on that set) for every weight tried.
    pub tried: Vec<(f64, f64)>,
}

/// Held-out pairs as queries over every document: those from real queries when there are
/// any (mined pairs are easier and would flatter), else all of them. One query per distinct
/// text, relevant to every document its pairs name.
pub(super) fn held_queries(held: &[Pair], docs: &[Document], real_only: bool) -> Vec<EvalQuery> {
    let chosen: Vec<Pair> = held
        .iter()
        .filter(|p| !real_only || p.origin == PairOrigin::Query)
        .cloned()
        .collect();
    let (texts, relevant) = super::passages::queries_of(&chosen, docs);
    texts
        .into_iter()
        .zip(relevant)
        .enumerate()
        .map(|(i, (text, rel))| EvalQuery {
            id: format!("held-query-{i}"),
            text,
            relevant: rel.iter().map(|&d| docs[d as usize].id.clone()).collect(),
            split: "held-out".into(),
        })
        .collect()
}

/// Saves the trained model into `out` merged as `merge` says; `options` are those of the
/// encoder the loop will serve (e.g. int8), so α is chosen on the vectors users get.
/// `chunks` (with the analyzer of the BM25 list that helps pick the pool) judges α over the
/// chunks when it holds held-out queries.
pub(super) async fn save(
    trainer: &EmbeddingTrainer,
    merge: Merge,
    docs: &[Document],
    held: &[Pair],
    chunks: Option<(&ChunkPositives, rag_core::Analyzer)>,
    options: &embed_runtime::EmbedderOptions,
    out: &Path,
) -> Result<Option<MergeReport>> {
    match merge {
        Merge::Off => {
            trainer.save(out)?;
            return Ok(None);
        }
        Merge::Weight(a) => {
            trainer.save_merged(out, a)?;
            return Ok(Some(MergeReport {
                alpha: a,
                selected_on: String::new(),
                tried: Vec::new(),
            }));
        }
        Merge::Auto => {}
    }
    if let Some((c, analyzer)) = chunks.filter(|(c, _)| c.held_queries() > 0) {
        let pool = c.pool(analyzer);
        let scratch = tempfile::tempdir()?;
        let mut tried = Vec::with_capacity(CANDIDATES.len());
        for &a in &CANDIDATES {
            let m = if a == 0.0 {
                c.judge(&pool, None)?
            } else {
                let dir = scratch.path().join(format!("alpha-{a}"));
                trainer.save_merged(&dir, a)?;
                let model = SentenceEmbedder::load_with(&dir, options.clone())?;
                c.judge(&pool, Some(&model))?
            };
            tracing::info!(alpha = a, ndcg_at_10 = m.ndcg_at_10, "merge candidate");
            tried.push((a, m.ndcg_at_10));
        }
        let best = best_of(&tried)?;
        trainer.save_merged(out, best)?;
        return Ok(Some(MergeReport {
            alpha: best,
            selected_on: format!(
                "{} held-out queries over {} chunks (each query's best by the base model and by BM25)",
                c.held_queries(),
                pool.len()
            ),
            tried,
        }));
    }
    let mut queries = held_queries(held, docs, true);
    let mut what = "held-out queries";
    if queries.is_empty() {
        queries = held_queries(held, docs, false);
        what = "held-out pairs as queries";
    }
    if queries.is_empty() {
        tracing::warn!("nothing held out to choose the merge on: the trained weights are kept");
        trainer.save(out)?;
        return Ok(None);
    }
    let scratch = tempfile::tempdir()?;
    let mut tried = Vec::with_capacity(CANDIDATES.len());
    for &a in &CANDIDATES {
        let dir = scratch.path().join(format!("alpha-{a}"));
        trainer.save_merged(&dir, a)?;
        let model = SentenceEmbedder::load_with(&dir, options.clone())?;
        let m = evaluate(&model, docs, &queries, 4_000).await?;
        tracing::info!(alpha = a, ndcg_at_10 = m.ndcg_at_10, "merge candidate");
        tried.push((a, m.ndcg_at_10));
    }
    let best = best_of(&tried)?;
    trainer.save_merged(out, best)?;
    Ok(Some(MergeReport {
        alpha: best,
        selected_on: format!("{} {what} over {} documents", queries.len(), docs.len()),
        tried,
    }))
}

/// The α with the best score (ties: the larger α).
fn best_of(tried: &[(f64, f64)]) -> Result<f64> {
    match tried
        .iter()
        .max_by(|x, y| x.1.total_cmp(&y.1).then(x.0.total_cmp(&y.0)))
    {
        Some(&(best, _)) => Ok(best),
        None => bail!("no merge weight was evaluated"),
    }
}
