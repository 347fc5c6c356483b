//! The base model's and BM25's view of the corpus for full fine-tuning ([`DocumentView`]):
//! every document is one passage (its start, as the pairs' passages are cut), embedded with
//! the frozen base model (through the pooled-vector cache, so a rerun encodes nothing) and
//! indexed by BM25. Two uses:
//!
//! - **round-trip filtering** of pseudo-queries (`--round-trip K`, [`DocumentView::round_trip`]):
//!   a mined or synthetic query is kept only if the hybrid ranking (RRF of both) puts its own
//!   document in the first K — the consistency filter of GPL/InPars/Promptagator, which
//!   drops queries too vague to identify their document;
//! - **hard negatives** (`--negatives N`, [`DocumentView::negatives`]): each training query's
//!   candidates ranked by both (RRF), the hybrid retriever's view of what it confuses, and
//!   filtered by [`embed_runtime::train::hard::mine`]: no document relevant to the query,
//!   nothing within `--negative-ratio` of the positive's score (likely unlabelled positives),
//!   at most one per document, only from the first `window` of the ranking. Each negative
//!   carries the hybrid teacher's margin (positive minus negative, see `Teacher`), the target
//!   of `--loss margin-mse` (GPL's distillation).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use embed_runtime::SentenceEmbedder;
use embed_runtime::train::hard::{self, HardOptions, MiningReport};
use embed_runtime::train::pairs::{Negative, Pair, PairOrigin, document_passage};
use rag_core::Document;
use rag_core::local::Bm25;
use rag_core::pipeline::Progress;
use serde::Serialize;

/// What the mining of document negatives did.
#[derive(Debug, Clone, Serialize)]
pub struct NegativeReport {
    /// Documents embedded as candidates.
    pub documents: usize,
    /// Distinct training queries.
    pub queries: usize,
    /// Training pairs that got at least one negative.
    pub pairs_with_negatives: usize,
    /// What was kept and dropped.
    pub mining: MiningReport,
    /// Mean of the hybrid teacher's margins (positive − negative, cosine units).
    pub teacher_margin_mean: f32,
    /// Negatives the teacher scores above their pair's positive (a margin-MSE loss teaches
    /// those the other way round from a contrastive one).
    pub teacher_prefers_negative: usize,
    /// Seconds to mine.
    pub seconds: f64,
}

/// What round-trip filtering kept.
#[derive(Debug, Clone, Serialize)]
pub struct RoundTripReport {
    /// A pseudo-query was kept when its document ranked within this many.
    pub top_k: usize,
    /// Pairs checked (mined and synthetic ones; real queries and user pairs are kept as given).
    pub checked: usize,
    /// Of them, kept.
    pub kept: usize,
    /// Kept and dropped per origin.
    pub by_origin: Vec<(PairOrigin, usize, usize)>,
}

/// Distinct queries of some pairs: text, relevant documents, base-model vector, BM25 ranking.
struct Queries {
    texts: Vec<String>,
    relevant: Vec<Vec<u32>>,
    vectors: Vec<Vec<f32>>,
    lexical: Vec<Vec<usize>>,
}

/// The documents as the base model and BM25 see them.
pub(super) struct DocumentView<'a> {
    base: &'a SentenceEmbedder,
    docs: &'a [Document],
    passages: Vec<String>,
    vectors: Vec<Vec<f32>>,
    bm25: Bm25,
}

impl<'a> DocumentView<'a> {
    /// Embeds every document's passage with `base` and indexes them by BM25.
    pub fn build(
        base: &'a SentenceEmbedder,
        docs: &'a [Document],
        max_passage_chars: usize,
        analyzer: rag_core::Analyzer,
        progress: Arc<dyn Progress>,
    ) -> Result<Self> {
        let started = std::time::Instant::now();
        let passages: Vec<String> = docs
            .iter()
            .map(|d| document_passage(d, max_passage_chars))
            .collect();
        let (vectors, cached) = super::passages::embed_passages(
            base,
            &passages,
            "documents",
            "frozen",
            progress.as_ref(),
        )?;
        let mut bm25 = Bm25::new(analyzer);
        for (slot, p) in passages.iter().enumerate() {
            bm25.add(slot, p);
        }
        tracing::info!(
            documents = docs.len(),
            cached,
            seconds = started.elapsed().as_secs_f64(),
            "documents embedded and indexed for mining"
        );
        Ok(Self {
            base,
            docs,
            passages,
            vectors: vectors.iter().map(|v| unit(v)).collect(),
            bm25,
        })
    }

    /// Distinct query texts of `pairs` with their relevant documents, their vectors and their
    /// BM25 rankings (first `window`).
    fn queries(&self, pairs: &[Pair], window: usize) -> Result<Queries> {
        let (texts, relevant) = super::passages::queries_of(pairs, self.docs);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = self.base.embed_unnormalized(&refs, true)?;
        let lexical = texts
            .iter()
            .map(|q| {
                self.bm25
                    .ranked(q, window)
                    .into_iter()
                    .map(|(s, _)| s)
                    .collect()
            })
            .collect();
        Ok(Queries {
            texts,
            relevant,
            vectors,
            lexical,
        })
    }

    /// Keeps the pairs whose query ranks its own document within `top_k` (hybrid: RRF of the
    /// base model and BM25); pairs from real queries, users, or naming no known document are
    /// kept unchecked.
    pub fn round_trip(
        &self,
        pairs: Vec<Pair>,
        top_k: usize,
    ) -> Result<(Vec<Pair>, RoundTripReport)> {
        let checked = |p: &Pair| p.origin.is_mined() || p.origin == PairOrigin::Synthetic;
        let pseudo: Vec<Pair> = pairs.iter().filter(|p| checked(p)).cloned().collect();
        let window = top_k.max(1) * 4 + 60;
        let Queries {
            texts,
            vectors,
            lexical,
            ..
        } = self.queries(&pseudo, window)?;
        let doc_index: HashMap<&str, usize> = self
            .docs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.as_str(), i))
            .collect();
        // Each distinct query's hybrid top-k documents.
        let top: HashMap<&str, Vec<usize>> = texts
            .iter()
            .zip(vectors.iter().zip(&lexical))
            .map(|(t, (v, lex))| (t.as_str(), self.hybrid_top(v, lex, top_k)))
            .collect();
        let mut by_origin: Vec<(PairOrigin, usize, usize)> = Vec::new();
        let mut kept = Vec::with_capacity(pairs.len());
        let (mut n_checked, mut n_kept) = (0, 0);
        for p in pairs {
            let doc = doc_index.get(p.doc_id.as_str());
            let (true, Some(&doc)) = (checked(&p), doc) else {
                kept.push(p);
                continue;
            };
            let keep = top.get(p.query.as_str()).is_some_and(|t| t.contains(&doc));
            n_checked += 1;
            let slot = match by_origin.iter().position(|(o, _, _)| *o == p.origin) {
                Some(i) => i,
                None => {
                    by_origin.push((p.origin, 0, 0));
                    by_origin.len() - 1
                }
            };
            if keep {
                by_origin[slot].1 += 1;
                n_kept += 1;
                kept.push(p);
            } else {
                by_origin[slot].2 += 1;
            }
        }
        Ok((
            kept,
            RoundTripReport {
                top_k,
                checked: n_checked,
                kept: n_kept,
                by_origin,
            },
        ))
    }

    /// The first `k` documents of the RRF of the dense ranking and `lexical`.
    fn hybrid_top(&self, query: &[f32], lexical: &[usize], k: usize) -> Vec<usize> {
        let scores = self.cosines(query);
        let mut dense: Vec<usize> = (0..scores.len()).collect();
        dense.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let mut fused = vec![0f32; scores.len()];
        for list in [&dense[..], lexical] {
            for (r, &d) in list.iter().enumerate() {
                fused[d] += 1.0 / (60.0 + r as f32 + 1.0);
            }
        }
        let mut order: Vec<usize> = (0..fused.len()).collect();
        order.sort_by(|&a, &b| fused[b].total_cmp(&fused[a]).then(a.cmp(&b)));
        order.truncate(k);
        order
    }

    /// One negative list per pair of `train` (empty for a pair whose document is not in the
    /// view, or that got none).
    pub fn negatives(
        &self,
        train: &[Pair],
        options: &HardOptions,
    ) -> Result<(Vec<Vec<Negative>>, NegativeReport)> {
        let started = std::time::Instant::now();
        let Queries {
            texts,
            relevant,
            vectors,
            lexical,
        } = self.queries(train, options.window)?;
        let identity: Vec<u32> = (0..self.docs.len() as u32).collect();
        let (mined, report) = hard::mine(
            &vectors,
            &relevant,
            &self.vectors,
            &identity,
            &lexical,
            options,
        );
        // Back to the training pairs: (query text, document) → its negatives, each with the
        // hybrid teacher's margin (used by the margin-MSE objective).
        let docs = self.docs;
        let by_key: HashMap<(&str, &str), &hard::HardPair> = mined
            .iter()
            .map(|h| ((texts[h.query].as_str(), docs[h.positive].id.as_str()), h))
            .collect();
        let mut teachers: HashMap<usize, Teacher> = HashMap::new();
        let negatives: Vec<Vec<Negative>> = train
            .iter()
            .map(|p| {
                by_key
                    .get(&(p.query.as_str(), p.doc_id.as_str()))
                    .map(|h| {
                        let teacher = teachers.entry(h.query).or_insert_with(|| {
                            self.teacher(
                                &texts[h.query],
                                &vectors[h.query],
                                &lexical[h.query],
                                options.window,
                            )
                        });
                        h.negatives
                            .iter()
                            .map(|&d| Negative {
                                passage: self.passages[d].clone(),
                                doc_id: docs[d].id.clone(),
                                margin: Some(teacher.score(h.positive) - teacher.score(d)),
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let pairs_with_negatives = negatives.iter().filter(|n| !n.is_empty()).count();
        let margins: Vec<f32> = negatives
            .iter()
            .flatten()
            .filter_map(|n| n.margin)
            .collect();
        let teacher_margin_mean = margins.iter().sum::<f32>() / margins.len().max(1) as f32;
        let teacher_prefers_negative = margins.iter().filter(|&&m| m < 0.0).count();
        tracing::info!(
            pairs_with_negatives,
            negatives = report.negatives,
            dropped_false_negatives = report.dropped_false_negatives,
            from_lexical = report.from_lexical,
            "mined document hard negatives"
        );
        Ok((
            negatives,
            NegativeReport {
                documents: docs.len(),
                queries: texts.len(),
                pairs_with_negatives,
                mining: report,
                teacher_margin_mean,
                teacher_prefers_negative,
                seconds: started.elapsed().as_secs_f64(),
            },
        ))
    }
}

/// The hybrid teacher's view of one query (GPL's teacher, here the base model plus BM25):
/// `score(d) = cos(q, d) + w · bm25(q, d)`, with `w = σ_cos / σ_bm25` over the query's
/// candidates (the first `window` of either ranking) — an equal-weight fusion of the two
/// z-normalised scores, kept in cosine units so its margins match the student's. With no
/// lexical spread (no query term in any candidate) it is the base model alone.
struct Teacher {
    cosine: Vec<f32>,
    lexical: HashMap<usize, f32>,
    weight: f32,
}

impl Teacher {
    fn score(&self, doc: usize) -> f32 {
        self.cosine[doc] + self.weight * self.lexical.get(&doc).copied().unwrap_or(0.0)
    }
}

impl DocumentView<'_> {
    /// The cosine of `query` (a base-model vector) with every document.
    fn cosines(&self, query: &[f32]) -> Vec<f32> {
        let q = unit(query);
        self.vectors
            .iter()
            .map(|d| d.iter().zip(&q).map(|(a, b)| a * b).sum())
            .collect()
    }

    /// `top_lexical`: the query's BM25 ranking, first `window` (what [`Self::queries`] made).
    fn teacher(
        &self,
        query: &str,
        vector: &[f32],
        top_lexical: &[usize],
        window: usize,
    ) -> Teacher {
        let cosine = self.cosines(vector);
        let lexical = self.bm25.scores(query);
        let mut dense: Vec<usize> = (0..cosine.len()).collect();
        dense.sort_by(|&a, &b| cosine[b].total_cmp(&cosine[a]).then(a.cmp(&b)));
        let mut candidates: Vec<usize> = dense.into_iter().take(window).collect();
        candidates.extend(top_lexical.iter().take(window));
        candidates.sort_unstable();
        candidates.dedup();
        let spread = |values: Vec<f32>| {
            let n = values.len().max(1) as f32;
            let mean = values.iter().sum::<f32>() / n;
            (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n).sqrt()
        };
        let cos_spread = spread(candidates.iter().map(|&d| cosine[d]).collect());
        let lex_spread = spread(
            candidates
                .iter()
                .map(|d| lexical.get(d).copied().unwrap_or(0.0))
                .collect(),
        );
        let weight = if lex_spread > 1e-6 {
            cos_spread / lex_spread
        } else {
            0.0
        };
        Teacher {
            cosine,
            lexical,
            weight,
        }
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    rag_core::embedding::normalize(&mut v);
    v
}
