//! The hybrid fusion weight for the adapter this job trains, chosen **out of fold**: the
//! training queries are split into [`FOLDS`] folds; for each, an adapter is fitted on the
//! other folds (a second or so on cached vectors) and ranks the fold's queries over every
//! chunk, as does BM25 over the chunks' text; the fusion with the best document-level
//! nDCG@10 over all those held-out rankings is the trained model's. So the weight is chosen
//! for the trained model itself, on queries the model that ranked them never learnt — the
//! base model's weight undervalues a better dense list. Written as `fusion.json` beside the
//! model; `ragloop run` uses it for the trained model's hybrid retrieval.

use anyhow::Result;
use embed_runtime::train::hard::HardPair;
use embed_runtime::train::{AdapterTrainer, TrainConfig};
use rag_core::local::Bm25;
use rag_core::{Analyzer, Metadata, SearchHit};

use super::passages::Prepared;
use crate::evaluation::{Candidates, FusionChoice, choose_fusion};

/// Folds of the training queries.
pub(super) const FOLDS: usize = 4;
/// Fewer distinct training queries than this and no weight is chosen (too noisy).
pub(super) const MIN_QUERIES: usize = 40;
/// Fewer held-out queries than this and a full fine-tune keeps the base model's weight: the
/// loop holds out 5 % of the documents' queries (38 of the man pages' 865), and a noisy but
/// unbiased choice for the trained model beats one made for another model.
pub(super) const MIN_HELD_OUT: usize = 30;
/// Candidates taken from each list, as the loop's hybrid search takes.
const CANDIDATES: usize = 100;

/// Chooses the fusion out of fold (see the module docs), or `None` with too few queries.
/// Leaves `trainer` reset (the identity adapter).
pub(super) fn cross_fit(
    trainer: &mut AdapterTrainer,
    prepared: &Prepared,
    config: &TrainConfig,
    analyzer: rag_core::Analyzer,
) -> Result<Option<FusionChoice>> {
    let queries = prepared.queries.len();
    if queries < MIN_QUERIES {
        return Ok(None);
    }
    let lists = Lists::new(&prepared.texts, &prepared.chunk_docs, analyzer);
    let mut candidates: Vec<Candidates> = Vec::with_capacity(queries);
    for fold in 0..FOLDS {
        let (held, train): (Vec<&HardPair>, Vec<&HardPair>) =
            prepared.pairs.iter().partition(|p| p.query % FOLDS == fold);
        if held.is_empty() || train.len() < 2 {
            continue;
        }
        let train: Vec<HardPair> = train.into_iter().cloned().collect();
        trainer.reset()?;
        trainer.train_hard(
            &prepared.queries,
            &prepared.chunks,
            &prepared.chunk_docs,
            &train,
            config,
            &mut |_| {},
        )?;
        let chunks = trainer.apply(&prepared.chunks)?;
        let mut rows: Vec<usize> = held.iter().map(|p| p.query).collect();
        rows.sort_unstable();
        rows.dedup();
        let raw: Vec<Vec<f32>> = rows.iter().map(|&q| prepared.queries[q].clone()).collect();
        let vectors = trainer.apply(&raw)?;
        for (&row, q) in rows.iter().zip(&vectors) {
            let relevant: Vec<u32> = held
                .iter()
                .find(|p| p.query == row)
                .map(|p| p.relevant.clone())
                .unwrap_or_default();
            if let Some(c) = lists.candidates(q, &chunks, &prepared.query_texts[row], &relevant) {
                candidates.push(c);
            }
        }
    }
    trainer.reset()?;
    if candidates.len() < MIN_QUERIES {
        return Ok(None);
    }
    let (best, score, rrf) = choose_fusion(&candidates);
    Ok(Some(FusionChoice {
        fusion: best,
        reason: format!(
            "{best}, chosen out of fold on {} training queries ({FOLDS} adapters, each ranking the queries it did not learn): nDCG@10 {score:.3} (RRF {rrf:.3})",
            candidates.len()
        ),
        analyzer: Some(analyzer),
    }))
}

/// The fusion for a fully fine-tuned model, chosen on the held-out labelled queries (never
/// trained on) ranked over every chunk by that model beside BM25 — where four out-of-fold
/// models would cost four trainings. `queries` and `chunks` are unit vectors of the trained
/// model; `None` with fewer than [`MIN_HELD_OUT`] queries (the base model's choice stays).
pub(super) fn held_out(
    queries: &[Vec<f32>],
    query_texts: &[String],
    relevant: &[Vec<u32>],
    chunks: &[Vec<f32>],
    texts: &[String],
    chunk_docs: &[u32],
    analyzer: Analyzer,
) -> Option<FusionChoice> {
    if queries.len() < MIN_HELD_OUT {
        return None;
    }
    let lists = Lists::new(texts, chunk_docs, analyzer);
    let candidates: Vec<Candidates> = queries
        .iter()
        .zip(query_texts)
        .zip(relevant)
        .filter_map(|((q, text), rel)| lists.candidates(q, chunks, text, rel))
        .collect();
    if candidates.len() < MIN_HELD_OUT {
        return None;
    }
    let (best, score, rrf) = choose_fusion(&candidates);
    Some(FusionChoice {
        fusion: best,
        reason: format!(
            "{best}, chosen on {} held-out training queries over the chunks: nDCG@10 {score:.3} (RRF {rrf:.3})",
            candidates.len()
        ),
        analyzer: Some(analyzer),
    })
}

/// BM25 over the chunks' text, and how a query's two candidate lists are cut from it and
/// from the dense scores.
pub(super) struct Lists<'a> {
    bm25: Bm25,
    chunk_docs: &'a [u32],
}

impl<'a> Lists<'a> {
    pub(super) fn new(texts: &[String], chunk_docs: &'a [u32], analyzer: Analyzer) -> Self {
        let mut bm25 = Bm25::new(analyzer);
        for (slot, text) in texts.iter().enumerate() {
            bm25.add(slot, text);
        }
        Self { bm25, chunk_docs }
    }

    /// The `n` best chunks for `text` by BM25, best first.
    pub(super) fn lexical(&self, text: &str, n: usize) -> Vec<(usize, f32)> {
        self.bm25.ranked(text, n)
    }

    fn hit(&self, chunk: usize, score: f32) -> SearchHit {
        let mut metadata = Metadata::new();
        metadata.insert("doc_id".into(), self.chunk_docs[chunk].to_string().into());
        SearchHit {
            id: chunk.to_string(),
            score,
            text: String::new(),
            metadata,
        }
    }

    /// The top [`CANDIDATES`] chunks by dot product with `query` and by BM25 for `text`,
    /// with the relevant documents (`None` over no chunks).
    pub(super) fn candidates(
        &self,
        query: &[f32],
        chunks: &[Vec<f32>],
        text: &str,
        relevant: &[u32],
    ) -> Option<Candidates> {
        let dense = top_dense(query, chunks, CANDIDATES);
        if dense.is_empty() {
            return None;
        }
        let lexical = self.lexical(text, CANDIDATES);
        Some((
            dense.into_iter().map(|(c, s)| self.hit(c, s)).collect(),
            lexical.into_iter().map(|(c, s)| self.hit(c, s)).collect(),
            relevant.iter().map(u32::to_string).collect(),
        ))
    }
}

/// The `n` chunks with the largest dot product with `query`, best first (ties by index).
pub(super) fn top_dense(query: &[f32], chunks: &[Vec<f32>], n: usize) -> Vec<(usize, f32)> {
    let mut dense: Vec<(usize, f32)> = chunks
        .iter()
        .enumerate()
        .map(|(c, v)| (c, query.iter().zip(v).map(|(a, b)| a * b).sum()))
        .collect();
    let n = n.min(dense.len());
    if n == 0 {
        return Vec::new();
    }
    dense.select_nth_unstable_by(n - 1, |a, b| b.1.total_cmp(&a.1));
    dense.truncate(n);
    dense.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    dense
}
