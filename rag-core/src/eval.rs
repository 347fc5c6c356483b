//! Retrieval metrics: hit@k, MRR@10 and nDCG@10 over a query set with known relevant documents.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// A query and the ids of the documents that answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalQuery {
    /// Query id.
    pub id: String,
    /// Query text.
    pub text: String,
    /// Relevant document ids.
    pub relevant: Vec<String>,
    /// `train` or `test`.
    #[serde(default)]
    pub split: String,
}

/// Mean metrics over a query set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RetrievalMetrics {
    /// Queries evaluated.
    pub queries: usize,
    /// Share of queries with a relevant document first.
    pub hit_at_1: f64,
    /// … within the first 5.
    pub hit_at_5: f64,
    /// … within the first 10.
    pub hit_at_10: f64,
    /// Mean reciprocal rank of the first relevant document within the first 10.
    pub mrr_at_10: f64,
    /// Mean nDCG@10 with binary relevance.
    pub ndcg_at_10: f64,
    /// The hit@k curve: element `k − 1` is the share of queries with a relevant document
    /// within the first `k` (k = 1…10).
    #[serde(default)]
    pub hit_at: [f64; 10],
}

/// Accumulates per-query rankings into [`RetrievalMetrics`].
#[derive(Debug, Default)]
pub struct MetricsAccumulator {
    sum: RetrievalMetrics,
}

impl MetricsAccumulator {
    /// Adds one query: `ranked` are document ids best first (duplicates are ignored after their
    /// first place), `relevant` the ids that answer it.
    pub fn add(&mut self, ranked: &[String], relevant: &[String]) {
        let relevant: HashSet<&str> = relevant.iter().map(String::as_str).collect();
        let mut seen = HashSet::new();
        let ranked: Vec<&str> = ranked
            .iter()
            .map(String::as_str)
            .filter(|id| seen.insert(*id))
            .take(10)
            .collect();
        let first = ranked.iter().position(|id| relevant.contains(id));
        let hit = |k: usize| f64::from(u8::from(first.is_some_and(|p| p < k)));
        let dcg: f64 = ranked
            .iter()
            .enumerate()
            .filter(|(_, id)| relevant.contains(*id))
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let ideal: f64 = (0..relevant.len().min(10))
            .map(|i| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let s = &mut self.sum;
        s.queries += 1;
        s.hit_at_1 += hit(1);
        s.hit_at_5 += hit(5);
        s.hit_at_10 += hit(10);
        for (k, h) in s.hit_at.iter_mut().enumerate() {
            *h += hit(k + 1);
        }
        s.mrr_at_10 += first.map_or(0.0, |p| 1.0 / (p + 1) as f64);
        s.ndcg_at_10 += if ideal > 0.0 { dcg / ideal } else { 0.0 };
    }

    /// The means so far.
    pub fn finish(&self) -> RetrievalMetrics {
        let s = self.sum;
        let n = s.queries.max(1) as f64;
        RetrievalMetrics {
            queries: s.queries,
            hit_at_1: s.hit_at_1 / n,
            hit_at_5: s.hit_at_5 / n,
            hit_at_10: s.hit_at_10 / n,
            mrr_at_10: s.mrr_at_10 / n,
            ndcg_at_10: s.ndcg_at_10 / n,
            hit_at: s.hit_at.map(|h| h / n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let mut acc = MetricsAccumulator::default();
        acc.add(&ids(&["a", "b"]), &ids(&["a"])); // rank 1
        acc.add(&ids(&["x", "x", "y", "b"]), &ids(&["b"])); // duplicates collapse: rank 3
        acc.add(&ids(&["x"]), &ids(&["z"])); // miss
        let m = acc.finish();
        assert_eq!(m.queries, 3);
        assert!((m.hit_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.hit_at_5 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.mrr_at_10 - (1.0 + 1.0 / 3.0) / 3.0).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 / 4f64.log2()) / 3.0;
        let third = 1.0 / 3.0;
        let curve = [
            third,
            third,
            2.0 * third,
            2.0 * third,
            2.0 * third,
            2.0 * third,
        ];
        for (k, want) in curve.iter().enumerate() {
            assert!(
                (m.hit_at[k] - want).abs() < 1e-12,
                "hit@{} = {}",
                k + 1,
                m.hit_at[k]
            );
        }
        assert_eq!(m.hit_at[0], m.hit_at_1);
        assert_eq!(m.hit_at[9], m.hit_at_10);
        assert!((m.ndcg_at_10 - ndcg).abs() < 1e-12);
    }
}
