//! Training data from the base model's own vectors: each (query, document) pair's positive is
//! the document's passage (a chunk, or the whole document when each document is one passage)
//! the base model ranks highest for the query — the passage retrieval will really return — and
//! its hard negatives are the passages of other documents ranked highest, by the base model
//! alone or fused (RRF) with a lexical ranking such as BM25, the hybrid retriever's view.
//! False-negative control: passages of any document relevant to the query are never negatives,
//! and neither is a passage the base model scores within `max_ratio` of the positive (likely
//! relevant but unlabelled, as NV-Retriever's "TopK-PercPos" filter).
//!
//! Everything here works on vectors already computed (the pooled-vector cache of stage 5), so
//! mining costs one matrix product per query and no encoder pass; a rerun reads the same
//! vectors from the cache and mines the same pairs.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// How [`mine`] picks positives and negatives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HardOptions {
    /// Hard negatives per pair (0: in-batch negatives only).
    pub negatives: usize,
    /// A candidate scoring at least this share of the positive's cosine is dropped as a
    /// likely false negative.
    pub max_ratio: f32,
    /// At most this many negatives from one document per pair (variety over near-copies).
    pub per_document: usize,
    /// Only passages within the first `window` of the ranking can be negatives (the rank
    /// window; a pair may get fewer than `negatives`).
    pub window: usize,
}

impl Default for HardOptions {
    fn default() -> Self {
        Self {
            negatives: 3,
            max_ratio: 0.95,
            per_document: 1,
            window: 100,
        }
    }
}

/// One training example over vectors: query row, positive chunk, negative chunks, and the
/// documents relevant to the query (masked out of its negatives, in-batch ones included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardPair {
    /// Row of the query in the query matrix.
    pub query: usize,
    /// The positive chunk.
    pub positive: usize,
    /// Hard-negative chunks.
    pub negatives: Vec<usize>,
    /// Documents relevant to the query (indices into the document list).
    pub relevant: Vec<u32>,
}

/// What [`mine`] kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiningReport {
    /// Pairs made.
    pub pairs: usize,
    /// (query, document) pairs whose document has no chunk.
    pub without_chunks: usize,
    /// Negatives kept.
    pub negatives: usize,
    /// Candidates dropped as likely false negatives (within `max_ratio` of the positive).
    pub dropped_false_negatives: usize,
    /// Candidates skipped because their document is relevant to the query.
    pub skipped_relevant: usize,
    /// Kept negatives that the lexical ranking put in the window but the base model alone
    /// would not have (0 without a lexical ranking).
    #[serde(default)]
    pub from_lexical: usize,
}

/// A unit-length copy (`rag_core::embedding::normalize`).
fn unit(v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    rag_core::embedding::normalize(&mut v);
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Reciprocal-rank-fusion constant (as the hybrid retriever's `rrf_fuse`).
const RRF_K: f32 = 60.0;

/// Pairs over vectors. `queries[i]` is the (un-normalised) vector of query `i`, `relevant[i]`
/// its relevant documents (indices into the document list); `chunks[c]` the vector of chunk
/// `c` and `chunk_docs[c]` its document. `lexical[i]`, when given (it may be empty, or shorter
/// than `queries`), ranks chunks for query `i` by a lexical score, best first: candidates are
/// then ordered by the RRF of both rankings. One pair per (query, relevant document that has
/// chunks); the order is deterministic.
pub fn mine(
    queries: &[Vec<f32>],
    relevant: &[Vec<u32>],
    chunks: &[Vec<f32>],
    chunk_docs: &[u32],
    lexical: &[Vec<usize>],
    options: &HardOptions,
) -> (Vec<HardPair>, MiningReport) {
    let chunks: Vec<Vec<f32>> = chunks.iter().map(|c| unit(c)).collect();
    let mut by_doc: HashMap<u32, Vec<usize>> = HashMap::new();
    for (c, &d) in chunk_docs.iter().enumerate() {
        by_doc.entry(d).or_default().push(c);
    }
    let mut report = MiningReport::default();
    let mut out = Vec::new();
    for (qi, (q, rel)) in queries.iter().zip(relevant).enumerate() {
        let q = unit(q);
        let scores: Vec<f32> = chunks.iter().map(|c| dot(&q, c)).collect();
        let rel_set: HashSet<u32> = rel.iter().copied().collect();
        let mut ranked: Vec<usize> = (0..chunks.len()).collect();
        ranked.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
        let dense_window: HashSet<usize> = ranked.iter().take(options.window).copied().collect();
        let lex = lexical.get(qi).filter(|l| !l.is_empty());
        if let Some(lex) = lex {
            let mut fused = vec![0f32; chunks.len()];
            for (r, &c) in ranked.iter().enumerate() {
                fused[c] = 1.0 / (RRF_K + r as f32 + 1.0);
            }
            for (r, &c) in lex.iter().enumerate() {
                if let Some(f) = fused.get_mut(c) {
                    *f += 1.0 / (RRF_K + r as f32 + 1.0);
                }
            }
            ranked.sort_by(|&a, &b| fused[b].total_cmp(&fused[a]).then(a.cmp(&b)));
        }
        ranked.truncate(options.window);
        for &d in rel {
            let Some(own) = by_doc.get(&d) else {
                report.without_chunks += 1;
                continue;
            };
            let positive = own
                .iter()
                .copied()
                .max_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(b.cmp(&a)))
                .unwrap_or(own[0]);
            let ceiling = options.max_ratio * scores[positive];
            let mut negatives = Vec::with_capacity(options.negatives);
            let mut per_doc: HashMap<u32, usize> = HashMap::new();
            for &c in &ranked {
                if negatives.len() >= options.negatives {
                    break;
                }
                let doc = chunk_docs[c];
                if rel_set.contains(&doc) {
                    report.skipped_relevant += 1;
                    continue;
                }
                if scores[c] >= ceiling {
                    report.dropped_false_negatives += 1;
                    continue;
                }
                let n = per_doc.entry(doc).or_default();
                if *n >= options.per_document {
                    continue;
                }
                *n += 1;
                if lex.is_some() && !dense_window.contains(&c) {
                    report.from_lexical += 1;
                }
                negatives.push(c);
            }
            report.negatives += negatives.len();
            out.push(HardPair {
                query: qi,
                positive,
                negatives,
                relevant: rel.clone(),
            });
        }
    }
    report.pairs = out.len();
    (out, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_chunk_is_the_positive_and_near_ties_are_not_negatives() {
        // Query along x. Document 0 has chunks 0 (weak) and 1 (strong); document 1 a chunk
        // almost as close as the positive (a likely false negative) and a weaker one;
        // document 2 a clear negative; document 3 is relevant too and never a negative.
        let queries = vec![vec![1.0, 0.0, 0.0]];
        let relevant = vec![vec![0, 3]];
        let chunks = vec![
            vec![0.5, 1.0, 0.0],  // 0: doc 0, cos 0.45
            vec![1.0, 0.1, 0.0],  // 1: doc 0, cos 0.995
            vec![1.0, 0.12, 0.0], // 2: doc 1, cos 0.993 ≥ 0.95 × 0.995 → dropped
            vec![0.6, 0.8, 0.0],  // 3: doc 1, cos 0.6
            vec![0.7, 0.0, 0.7],  // 4: doc 2, cos 0.707
            vec![1.0, 0.0, 0.05], // 5: doc 3, relevant
        ];
        let docs = vec![0, 0, 1, 1, 2, 3];
        let options = HardOptions {
            negatives: 2,
            ..Default::default()
        };
        let (pairs, report) = mine(&queries, &relevant, &chunks, &docs, &[], &options);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].positive, 1);
        assert_eq!(pairs[0].negatives, vec![4, 3]);
        assert_eq!(pairs[1].positive, 5, "document 3's own best chunk");
        assert!(report.dropped_false_negatives >= 1);
        assert!(report.skipped_relevant >= 1);
        assert_eq!(report.negatives, 4);
    }

    #[test]
    fn a_document_without_chunks_is_counted_not_paired() {
        let (pairs, report) = mine(
            &[vec![1.0, 0.0]],
            &[vec![7]],
            &[vec![1.0, 0.0]],
            &[0],
            &[],
            &HardOptions::default(),
        );
        assert!(pairs.is_empty());
        assert_eq!(report.without_chunks, 1);
    }

    #[test]
    fn a_lexical_ranking_brings_its_candidates_into_the_window() {
        // Dense order of the candidates (docs 1..=4): 1, 2, 3, 4. With a window of 3 (the
        // positive included) only 1 and 2 can be negatives; BM25's top pick, doc 4, enters
        // the window once fused and is counted as lexical.
        let queries = vec![vec![1.0, 0.0]];
        let relevant = vec![vec![0]];
        let chunks = vec![
            vec![1.0, 0.0],  // 0: positive
            vec![0.8, 0.6],  // 1
            vec![0.6, 0.8],  // 2
            vec![0.3, 0.95], // 3
            vec![0.1, 1.0],  // 4
        ];
        let docs = vec![0, 1, 2, 3, 4];
        let options = HardOptions {
            negatives: 2,
            window: 3,
            ..Default::default()
        };
        let (dense, r) = mine(&queries, &relevant, &chunks, &docs, &[], &options);
        assert_eq!(dense[0].negatives, vec![1, 2]);
        assert_eq!(r.from_lexical, 0);
        let lexical = vec![vec![4, 0]];
        let (fused, r) = mine(&queries, &relevant, &chunks, &docs, &lexical, &options);
        assert!(fused[0].negatives.contains(&4), "{:?}", fused[0].negatives);
        assert_eq!(r.from_lexical, 1);
        // The same call gives the same pairs.
        assert_eq!(
            mine(&queries, &relevant, &chunks, &docs, &lexical, &options).0,
            fused
        );
    }
}
