//! Queries of one index: exact or graph kNN, BM25, filters.

use super::data::Text;
use super::*;

impl IndexData {
    pub(super) fn knn(&self, q: &[f32], n: usize, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let scored = match self.knn_ann(q, n, req) {
            Some(scored) => scored,
            None => self.knn_exact(q, req),
        };
        self.top(scored, n)
    }

    /// Graph search, or `None` where exact search is the better tool: small indexes, and
    /// filters that pass few records (a graph walk would visit mostly rejected nodes).
    pub(super) fn knn_ann(
        &self,
        q: &[f32],
        n: usize,
        req: &SearchRequest,
    ) -> Option<Vec<(usize, f32)>> {
        let ann = self.ann.as_ref()?;
        let live = self.live_len();
        if live < ann.factory.exact_below() {
            return None;
        }
        let keep = |key: u64| self.is_live(key as usize) && self.passes_req(req, key as usize);
        if req.filter.is_some() {
            let passing = self
                .live_slots()
                .filter(|&i| self.passes_req(req, i))
                .count();
            if passing <= ann.factory.exact_below().max(n) || passing * 20 < live {
                return None;
            }
        }
        let ef = req.num_candidates.max(n);
        let filter: Option<&(dyn Fn(u64) -> bool + Sync)> = if req.filter.is_some() {
            Some(&keep)
        } else {
            None
        };
        // A graph may score with vectors stored at reduced precision (vector-store's HNSW
        // keeps bfloat16): it is asked for a few more than `n`, and those are scored again
        // from the records, so hits carry exact scores in exact order.
        let wanted = (2 * n).max(n + 8).min(ef.max(n));
        match ann.graph.search(q, wanted, ef, filter) {
            Ok(found) => {
                let qnorm = norm(q);
                let scored = found
                    .into_iter()
                    .filter_map(|(key, _)| {
                        self.is_live(key as usize).then_some(())?;
                        Some((key as usize, self.exact_score(q, qnorm, key as usize)))
                    })
                    .collect();
                Some(scored)
            }
            Err(e) => {
                tracing::warn!(error = %e, "ANN search failed; searching exactly");
                None
            }
        }
    }

    /// The metric's score of slot `i` for `q` (`qnorm`: `q`'s length, for cosine).
    fn exact_score(&self, q: &[f32], qnorm: f32, i: usize) -> f32 {
        let v = self.vector(i);
        match self.schema.metric {
            Metric::Cosine => {
                let dot = crate::embedding::dot(q, v);
                let norm = self.norm(i);
                if qnorm == 0.0 || norm == 0.0 {
                    0.0
                } else {
                    dot / (qnorm * norm)
                }
            }
            m => m.score(q, v),
        }
    }

    fn knn_exact(&self, q: &[f32], req: &SearchRequest) -> Vec<(usize, f32)> {
        let qnorm = norm(q);
        self.live_slots()
            .filter(|&i| self.passes_req(req, i))
            .map(|i| (i, self.exact_score(q, qnorm, i)))
            .collect()
    }

    pub(super) fn text(&self, q: &str, n: usize, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let scored = match &self.text {
            Text::Builtin(bm) => bm
                .scored(q)
                .into_iter()
                .filter(|&(i, _)| self.is_live(i) && self.passes_req(req, i))
                .collect(),
            Text::External { index, .. } => index
                .search(q, n, req.filter.as_ref())?
                .into_iter()
                .filter_map(|(id, score)| Some((self.slot_of(&id)?, score)))
                .collect(),
            Text::Pending => Vec::new(),
        };
        self.top(scored, n)
    }

    /// Whether slot `i` passes the request's filter, if any.
    fn passes_req(&self, req: &SearchRequest, i: usize) -> bool {
        req.filter.as_ref().is_none_or(|f| self.passes(f, i))
    }

    /// The best `n` of `scored` as hits, their bodies read where they lie.
    pub(super) fn top(&self, mut scored: Vec<(usize, f32)>, n: usize) -> Result<Vec<SearchHit>> {
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if scored.len() > n {
            scored.select_nth_unstable_by(n, by_score);
            scored.truncate(n);
        }
        scored.sort_by(by_score);
        scored
            .into_iter()
            .filter_map(|(i, score)| self.slot(i).map(|s| (s, score)))
            .map(|(s, score)| {
                let (text, metadata) = s.body()?;
                Ok(SearchHit {
                    id: s.id.to_string(),
                    score,
                    text,
                    metadata,
                })
            })
            .collect()
    }
}

fn norm(v: &[f32]) -> f32 {
    crate::embedding::dot(v, v).sqrt()
}
