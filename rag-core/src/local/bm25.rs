//! An incremental Okapi BM25 inverted index over slot numbers.
//!
//! [`LocalVectorIndex`](super::LocalVectorIndex) keeps one for its text queries; it is public
//! for code that needs lexical scores without an index (e.g. the embedding trainer's
//! hard-negative mining, which ranks candidates by BM25 and the base model together).
//!
//! ```
//! use rag_core::local::Bm25;
//!
//! let mut bm = Bm25::default();
//! bm.add(0, "open a file descriptor");
//! bm.add(1, "close a file");
//! let ranked = bm.ranked("duplicate a file descriptor", 10);
//! assert_eq!(ranked[0].0, 0);
//! ```

use std::collections::HashMap;

use crate::text::Analyzer;

/// Lucene's, Elasticsearch's and tantivy's defaults, so every BM25 of the project ranks alike.
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// Okapi BM25 (k1 1.2, b 0.75, Lucene's idf) over the terms of an [`Analyzer`] (documents and queries
/// alike; [`Analyzer::Standard`] by default); slots are any `usize` ids, added in increasing
/// order.
#[derive(Debug, Default)]
pub struct Bm25 {
    analyzer: Analyzer,
    postings: HashMap<String, Vec<(u32, u32)>>,
    doc_len: Vec<u32>,
    live: Vec<bool>,
    live_docs: usize,
    live_len: u64,
    /// Slots removed (their postings stay until the index is rebuilt).
    dead: usize,
}

impl Bm25 {
    /// An empty index whose documents and queries are cut into terms by `analyzer`.
    pub fn new(analyzer: Analyzer) -> Self {
        Self {
            analyzer,
            ..Self::default()
        }
    }

    /// Indexes `text` as slot `slot` (slots are added in increasing order).
    pub fn add(&mut self, slot: usize, text: &str) {
        let mut tf: HashMap<String, u32> = HashMap::new();
        let mut len = 0u32;
        for w in self.analyzer.terms(text) {
            *tf.entry(w).or_default() += 1;
            len += 1;
        }
        for (term, n) in tf {
            self.postings
                .entry(term)
                .or_default()
                .push((slot as u32, n));
        }
        if self.doc_len.len() <= slot {
            self.doc_len.resize(slot + 1, 0);
            self.live.resize(slot + 1, false);
        }
        self.doc_len[slot] = len;
        self.live[slot] = true;
        self.live_docs += 1;
        self.live_len += u64::from(len);
    }

    /// Forgets slot `slot`; its postings are skipped from now on.
    pub fn remove(&mut self, slot: usize) {
        if self.live.get(slot).copied().unwrap_or(false) {
            self.live[slot] = false;
            self.live_docs -= 1;
            self.dead += 1;
            self.live_len -= u64::from(self.doc_len[slot]);
        }
    }

    /// BM25 scores of the live slots that contain any query term.
    pub fn scores(&self, query: &str) -> HashMap<usize, f32> {
        self.scored(query).into_iter().collect()
    }

    /// BM25 scores of the live slots that contain any query term, in no order. Scores are
    /// summed in a dense array indexed by slot (a hash map per posting was 8× slower at a
    /// million documents); document frequencies are the posting lists' lengths until a slot
    /// is removed, then counted over live slots.
    pub fn scored(&self, query: &str) -> Vec<(usize, f32)> {
        if self.live_docs == 0 {
            return Vec::new();
        }
        let n = self.live_docs as f32;
        let avgdl = (self.live_len as f32 / n).max(1.0);
        let all_live = self.dead == 0;
        let mut terms: Vec<String> = self.analyzer.terms(query).collect();
        terms.sort();
        terms.dedup();
        let mut acc = vec![0f32; self.doc_len.len()];
        let mut touched: Vec<u32> = Vec::new();
        for term in terms {
            let Some(list) = self.postings.get(&term) else {
                continue;
            };
            let df = if all_live {
                list.len()
            } else {
                list.iter().filter(|(s, _)| self.live[*s as usize]).count()
            } as f32;
            if df == 0.0 {
                continue;
            }
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            let norm_per_len = K1 * B / avgdl;
            let norm_base = K1 * (1.0 - B);
            for &(slot, tf) in list {
                let s = slot as usize;
                if !all_live && !self.live[s] {
                    continue;
                }
                let tf = tf as f32;
                let norm = norm_base + norm_per_len * self.doc_len[s] as f32;
                if acc[s] == 0.0 {
                    touched.push(slot);
                }
                // idf > 0 and tf ≥ 1: every contribution is positive, so 0 means untouched.
                acc[s] += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        touched
            .into_iter()
            .map(|s| (s as usize, acc[s as usize]))
            .collect()
    }

    /// The `k` best-scoring slots for `query`, best first (ties by slot).
    pub fn ranked(&self, query: &str, k: usize) -> Vec<(usize, f32)> {
        let mut all = self.scored(query);
        let by_score = |a: &(usize, f32), b: &(usize, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if all.len() > k && k > 0 {
            all.select_nth_unstable_by(k - 1, by_score);
            all.truncate(k);
        }
        all.sort_by(by_score);
        all.truncate(k);
        all
    }

    /// The memory the index holds, estimated from its contents: every term's bytes and
    /// string and vector headers, 8 bytes a posting, 5 a slot.
    pub fn approx_bytes(&self) -> usize {
        let postings: usize = self
            .postings
            .iter()
            .map(|(t, l)| t.len() + 48 + l.capacity() * 8)
            .sum();
        postings + self.doc_len.capacity() * 4 + self.live.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rarer_terms_weigh_more_and_removed_slots_vanish() {
        let mut bm = Bm25::default();
        bm.add(0, "open a file descriptor");
        bm.add(1, "close a file");
        bm.add(2, "socket options");
        let s = bm.scores("file descriptor");
        assert!(s[&0] > s[&1]);
        assert!(!s.contains_key(&2));
        bm.remove(0);
        assert!(!bm.scores("descriptor").contains_key(&0));
    }

    #[test]
    fn an_english_index_matches_other_forms_of_the_query_words() {
        let docs = [
            "converts text between character encodings",
            "prints the date",
        ];
        let (mut plain, mut english) = (Bm25::default(), Bm25::new(Analyzer::English));
        for (i, d) in docs.iter().enumerate() {
            plain.add(i, d);
            english.add(i, d);
        }
        assert!(plain.scores("convert encoding").is_empty());
        assert_eq!(english.ranked("convert encoding", 1)[0].0, 0);
    }

    #[test]
    fn a_chinese_query_finds_its_words_inside_longer_runs() {
        // Real NAME lines of manpages-zh: the query shares words, never a whole run.
        let docs = [
            "复制文件并设置属性",
            "列出目录内容",
            "用八进制或其它格式表示文件",
        ];
        for analyzer in [Analyzer::Standard, Analyzer::English] {
            let mut bm = Bm25::new(analyzer);
            for (i, d) in docs.iter().enumerate() {
                bm.add(i, d);
            }
            assert_eq!(bm.ranked("如何复制文件？", 1)[0].0, 0);
            assert_eq!(bm.ranked("目录的内容", 1)[0].0, 1);
            assert_eq!(bm.ranked("以八进制显示 file", 1)[0].0, 2);
        }
    }
}
