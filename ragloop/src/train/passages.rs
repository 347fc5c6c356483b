//! The adapter's passage-level recipe (`--passages chunks`, the default): the corpus is chunked
//! exactly as stage 5 chunks it and embedded with the frozen base model — through the
//! pooled-vector cache (`--cache`), so the loop's stage 5 later finds every vector there (or
//! this job finds stage 5's) and the corpus is encoded once for the base model, the trained
//! one and the training. Each pair's positive is its document's best chunk for the query
//! (for a pseudo-query mined from the documents, the best chunk it was not copied from);
//! hard negatives come from the other documents with false-negative control
//! ([`embed_runtime::train::hard`]).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Result, bail};
use embed_runtime::SentenceEmbedder;
use embed_runtime::train::hard::{self, HardOptions, MiningReport};
use embed_runtime::train::pairs::{Negative, Pair, PairOrigin};
use rag_core::eval::{MetricsAccumulator, RetrievalMetrics};
use rag_core::pipeline::{Progress, Stage};
use rag_core::{Chunker, Document};
use serde::Serialize;

/// Texts per encoder call (the progress moves per call).
const BATCH: usize = 256;
/// Chunks each held-out query adds to the pool merge weights are judged on, from the base
/// model's list and from BM25's ([`ChunkPositives::pool`]).
const POOL_PER_LIST: usize = 30;

/// What the passage-level preparation did.
#[derive(Debug, Clone, Serialize)]
pub struct PassageReport {
    /// Chunks of the corpus (as stage 5 cuts them).
    pub chunks: usize,
    /// Of them, vectors the cache already had.
    pub cached: usize,
    /// Distinct training queries.
    pub queries: usize,
    /// Positives and negatives: what was kept and dropped.
    pub mining: MiningReport,
    /// Pseudo-queries copied from the documents' text whose positive moved off the chunk they
    /// were copied from onto another chunk of their document.
    pub moved_off_source: usize,
    /// Pseudo-queries dropped because every chunk of their document holds their text.
    pub dropped_only_source: usize,
    /// Seconds to embed the chunks and queries.
    pub seconds: f64,
}

/// Query vectors, chunk vectors, chunk documents and the mined pairs.
pub(super) struct Prepared {
    pub queries: Vec<Vec<f32>>,
    /// The queries' texts (rows of `queries`).
    pub query_texts: Vec<String>,
    /// The chunks' texts as embedded (rows of `chunks`).
    pub texts: Vec<String>,
    pub chunks: Vec<Vec<f32>>,
    pub chunk_docs: Vec<u32>,
    pub pairs: Vec<hard::HardPair>,
    pub report: PassageReport,
}

/// Embeds the corpus's chunks and the pairs' queries with `base` and mines the pairs.
pub(super) fn prepare(
    base: &SentenceEmbedder,
    docs: &[Document],
    train: &[Pair],
    options: &HardOptions,
    progress: Arc<dyn Progress>,
) -> Result<Prepared> {
    let started = std::time::Instant::now();
    let doc_index: HashMap<&str, u32> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i as u32))
        .collect();
    let chunks = Chunker::default().chunk_all(docs);
    let texts: Vec<String> = chunks.iter().map(rag_core::Chunk::embedding_text).collect();
    let chunk_docs: Vec<u32> = chunks
        .iter()
        .map(|c| {
            doc_index
                .get(c.doc_id.as_str())
                .copied()
                .unwrap_or(u32::MAX)
        })
        .collect();
    let (vectors, cached) = embed_passages(base, &texts, "chunks", "frozen", progress.as_ref())?;

    let (query_texts, relevant) = queries_of(train, docs);
    if query_texts.is_empty() {
        bail!("no training pair names a document of the corpus");
    }
    let refs: Vec<&str> = query_texts.iter().map(String::as_str).collect();
    let queries = base.embed_unnormalized(&refs, true)?;
    let (mut pairs, mining) = hard::mine(&queries, &relevant, &vectors, &chunk_docs, &[], options);
    let mined: std::collections::HashSet<&str> = train
        .iter()
        .filter(|p| p.origin.is_mined())
        .map(|p| p.query.as_str())
        .collect();
    // A pseudo-query mined from the documents (a title, a heading, a sentence) is never paired
    // with a chunk whose embedded text holds it verbatim: matching a string to the chunk it
    // came from is a copying task that teaches nothing about how users ask. Its positive is
    // the best other chunk of its document (BENCHMARKS.md: dense nDCG@10 on held-out real
    // queries 0.626 → 0.649 for an adapter on mined pairs).
    let mut by_doc: HashMap<u32, Vec<usize>> = HashMap::new();
    for (c, &d) in chunk_docs.iter().enumerate() {
        by_doc.entry(d).or_default().push(c);
    }
    let sources: Vec<Vec<usize>> = query_texts
        .iter()
        .zip(&relevant)
        .map(|(q, rel)| {
            if mined.contains(q.as_str()) {
                source_chunks(q, rel, &texts, &by_doc)
            } else {
                Vec::new()
            }
        })
        .collect();
    let (moved_off_source, dropped_only_source) = off_sources(
        &mut pairs,
        &sources,
        &queries,
        &vectors,
        &chunk_docs,
        &by_doc,
    );
    tracing::info!(
        pairs = mining.pairs,
        negatives = mining.negatives,
        dropped_false_negatives = mining.dropped_false_negatives,
        "mined positives and hard negatives"
    );
    let report = PassageReport {
        chunks: texts.len(),
        cached,
        queries: query_texts.len(),
        mining,
        moved_off_source,
        dropped_only_source,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Prepared {
        queries,
        query_texts,
        texts,
        chunks: vectors,
        chunk_docs,
        pairs,
        report,
    })
}

/// Whitespace runs as single spaces, so a sentence matches across the line breaks of a chunk.
fn squashed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The chunks of `relevant` documents (`by_doc`: a document's chunks) whose embedded text
/// (`texts`: title and chunk) holds `query` verbatim (whitespace aside).
fn source_chunks(
    query: &str,
    relevant: &[u32],
    texts: &[String],
    by_doc: &HashMap<u32, Vec<usize>>,
) -> Vec<usize> {
    let needle = squashed(query);
    if needle.is_empty() {
        return Vec::new();
    }
    relevant
        .iter()
        .filter_map(|d| by_doc.get(d))
        .flatten()
        .copied()
        .filter(|&c| squashed(&texts[c]).contains(&needle))
        .collect()
}

/// Moves each pair whose positive is one of its query's source chunks onto the best other
/// chunk of the same document (by the base model), and drops the pairs whose document has no
/// other chunk. Returns (moved, dropped).
fn off_sources(
    pairs: &mut Vec<hard::HardPair>,
    sources: &[Vec<usize>],
    queries: &[Vec<f32>],
    chunks: &[Vec<f32>],
    chunk_docs: &[u32],
    by_doc: &HashMap<u32, Vec<usize>>,
) -> (usize, usize) {
    let (mut moved, mut dropped) = (0, 0);
    pairs.retain_mut(|p| {
        let own = &sources[p.query];
        if !own.contains(&p.positive) {
            return true;
        }
        let q = &queries[p.query];
        // The query's norm is the same for every chunk: the dot over the chunk's norm ranks
        // as the cosine does.
        let best = by_doc[&chunk_docs[p.positive]]
            .iter()
            .copied()
            .filter(|c| !own.contains(c))
            .map(|c| {
                let v = &chunks[c];
                let s = rag_core::embedding::dot(q, v)
                    / rag_core::embedding::dot(v, v).sqrt().max(1e-12);
                (c, s)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        match best {
            Some((c, _)) => {
                p.positive = c;
                moved += 1;
                true
            }
            None => {
                dropped += 1;
                false
            }
        }
    });
    (moved, dropped)
}

/// Embeds passages (`what`: "chunks", "documents") with `base` (`which`: "frozen",
/// "trained"), `BATCH` per call with progress; returns their vectors and how many came from
/// the cache.
pub(super) fn embed_passages(
    base: &SentenceEmbedder,
    texts: &[String],
    what: &str,
    which: &str,
    progress: &dyn Progress,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let cached_before = base.cached_vectors();
    progress.begin(Stage::TrainEmbeddings, Some(texts.len() as u64));
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(BATCH) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        vectors.extend(base.embed_unnormalized(&refs, false)?);
        progress.advance(Stage::TrainEmbeddings, batch.len() as u64);
    }
    let encoded = base.cached_vectors().saturating_sub(cached_before);
    let cached = texts.len().saturating_sub(encoded);
    progress.end(
        Stage::TrainEmbeddings,
        &format!(
            "{} {what} embedded with the {which} model ({cached} from the cache)",
            texts.len()
        ),
    );
    Ok((vectors, cached))
}

/// Retrieval of `queries` (vectors, unit length) over the chunks (unit length), ranked at
/// document level by each document's best chunk, as the loop's dense retriever ranks them.
pub(super) fn chunk_metrics(
    queries: &[Vec<f32>],
    relevant: &[Vec<u32>],
    chunks: &[Vec<f32>],
    chunk_docs: &[u32],
) -> RetrievalMetrics {
    let mut acc = MetricsAccumulator::default();
    for (q, rel) in queries.iter().zip(relevant) {
        let mut best: HashMap<u32, f32> = HashMap::new();
        for (c, &d) in chunks.iter().zip(chunk_docs) {
            let s: f32 = q.iter().zip(c).map(|(a, b)| a * b).sum();
            let e = best.entry(d).or_insert(f32::MIN);
            *e = e.max(s);
        }
        let mut ranked: Vec<(u32, f32)> = best.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let ranked: Vec<String> = ranked.iter().take(50).map(|(d, _)| d.to_string()).collect();
        let rel: Vec<String> = rel.iter().map(u32::to_string).collect();
        acc.add(&ranked, &rel);
    }
    acc.finish()
}

/// Pairs as (query text, relevant documents), one entry per distinct query: its relevant
/// documents are those of all its pairs (pairs naming no document of `docs` are left out).
pub(super) fn queries_of(held: &[Pair], docs: &[Document]) -> (Vec<String>, Vec<Vec<u32>>) {
    let doc_index: HashMap<&str, u32> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), i as u32))
        .collect();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    let (mut texts, mut relevant): (Vec<String>, Vec<Vec<u32>>) = (Vec::new(), Vec::new());
    for p in held {
        let Some(&d) = doc_index.get(p.doc_id.as_str()) else {
            continue;
        };
        let i = *slot.entry(p.query.as_str()).or_insert_with(|| {
            texts.push(p.query.clone());
            relevant.push(Vec::new());
            texts.len() - 1
        });
        if !relevant[i].contains(&d) {
            relevant[i].push(d);
        }
    }
    (texts, relevant)
}

/// Unit-length copies (`rag_core::embedding::normalize`).
pub(super) fn normalized(vectors: &[Vec<f32>]) -> Vec<Vec<f32>> {
    vectors
        .iter()
        .map(|v| {
            let mut v = v.clone();
            rag_core::embedding::normalize(&mut v);
            v
        })
        .collect()
}

/// Full fine-tuning's chunk positives for labelled queries ([`chunk_positives`]), and what is
/// needed to compare the base and trained models over the chunks afterwards.
pub(super) struct ChunkPositives {
    prepared: Prepared,
    /// The held-out queries (texts, relevant documents) and their base-model vectors.
    held: (Vec<String>, Vec<Vec<u32>>),
    held_base: Vec<Vec<f32>>,
}

/// When some training pairs are labelled queries: the corpus chunked as stage 5 chunks it and
/// embedded with `base` (through its cache), each such pair's positive its document's best
/// chunk ([`prepare`], no hard negatives). `None` when no pair is a labelled query.
pub(super) fn chunk_positives(
    base: &SentenceEmbedder,
    docs: &[Document],
    train: &[Pair],
    held: &[Pair],
    progress: Arc<dyn Progress>,
) -> Result<Option<ChunkPositives>> {
    let labelled: Vec<Pair> = train
        .iter()
        .filter(|p| p.origin == PairOrigin::Query)
        .cloned()
        .collect();
    if labelled.is_empty() {
        return Ok(None);
    }
    let options = HardOptions {
        negatives: 0,
        ..HardOptions::default()
    };
    let prepared = prepare(base, docs, &labelled, &options, progress)?;
    let held_real: Vec<Pair> = held
        .iter()
        .filter(|p| p.origin == PairOrigin::Query)
        .cloned()
        .collect();
    let held = queries_of(&held_real, docs);
    let refs: Vec<&str> = held.0.iter().map(String::as_str).collect();
    let held_base = if refs.is_empty() {
        Vec::new()
    } else {
        base.embed_unnormalized(&refs, true)?
    };
    Ok(Some(ChunkPositives {
        prepared,
        held,
        held_base,
    }))
}

/// [`ChunkPositives::pairs`] on `prepared` (the labelled queries' chunk positives).
fn labelled_pairs(
    prepared: &Prepared,
    train: &[Pair],
    docs: &[Document],
    starts: bool,
) -> Vec<Pair> {
    let p = prepared;
    let mut out: Vec<Pair> = train
        .iter()
        .filter(|t| starts || t.origin != PairOrigin::Query)
        .cloned()
        .collect();
    out.extend(p.pairs.iter().filter_map(|h| {
        let doc = docs.get(*p.chunk_docs.get(h.positive)? as usize)?;
        Some(Pair {
            query: p.query_texts.get(h.query)?.clone(),
            passage: p.texts.get(h.positive)?.clone(),
            doc_id: doc.id.clone(),
            origin: PairOrigin::Query,
        })
    }));
    out
}

/// The hard negatives of `before` (one list per pair, or none) for the pairs of `after`: each
/// pair takes the list of the pair of `before` with its query and document (none if there is
/// no such pair), so a list stays with its query when the positives change.
pub(super) fn carry_negatives(
    before: &[Pair],
    negatives: &[Vec<Negative>],
    after: &[Pair],
) -> Vec<Vec<Negative>> {
    if negatives.is_empty() {
        return Vec::new();
    }
    let by_pair: HashMap<(&str, &str), &Vec<Negative>> = before
        .iter()
        .zip(negatives)
        .map(|(p, n)| ((p.query.as_str(), p.doc_id.as_str()), n))
        .collect();
    after
        .iter()
        .map(|p| {
            by_pair
                .get(&(p.query.as_str(), p.doc_id.as_str()))
                .map(|n| n.to_vec())
                .unwrap_or_default()
        })
        .collect()
}

/// A sample of the corpus's chunks to judge models on without encoding every chunk: the
/// held-out queries' top chunks by the base model and by BM25, shared by all the queries.
pub(super) struct Pool {
    /// Rows of the corpus's chunks, ascending.
    rows: Vec<usize>,
}

impl Pool {
    /// Chunks in the pool.
    pub(super) fn len(&self) -> usize {
        self.rows.len()
    }
}

impl ChunkPositives {
    /// Held-out labelled queries (the merge is judged on them when there are any).
    pub(super) fn held_queries(&self) -> usize {
        self.held.0.len()
    }

    /// The pool of chunks merge weights are judged on: for each held-out query, its
    /// [`POOL_PER_LIST`] best chunks by the base model and by BM25 (`analyzer`) over the
    /// chunks' text — the candidates a hybrid search would take — all queries ranking the
    /// union. Every model is then compared on the same chunks, at a few percent of an
    /// encoder pass over the corpus; the chunks a better model would bring up from further
    /// down are the ones it misses, alike for every weight.
    pub(super) fn pool(&self, analyzer: rag_core::Analyzer) -> Pool {
        let p = &self.prepared;
        let lists = super::fusion::Lists::new(&p.texts, &p.chunk_docs, analyzer);
        let chunks = normalized(&p.chunks);
        let mut rows = std::collections::BTreeSet::new();
        for (q, text) in normalized(&self.held_base).iter().zip(&self.held.0) {
            let dense = super::fusion::top_dense(q, &chunks, POOL_PER_LIST);
            rows.extend(dense.into_iter().map(|(c, _)| c));
            rows.extend(
                lists
                    .lexical(text, POOL_PER_LIST)
                    .into_iter()
                    .map(|(c, _)| c),
            );
        }
        Pool {
            rows: rows.into_iter().collect(),
        }
    }

    /// The held-out queries ranked over `pool` by `model` (`None`: the base model, from the
    /// vectors already here), at document level as [`chunk_metrics`] ranks.
    pub(super) fn judge(
        &self,
        pool: &Pool,
        model: Option<&SentenceEmbedder>,
    ) -> Result<RetrievalMetrics> {
        let p = &self.prepared;
        let (texts, relevant) = &self.held;
        let docs: Vec<u32> = pool.rows.iter().map(|&r| p.chunk_docs[r]).collect();
        let (queries, chunks) = match model {
            None => (
                normalized(&self.held_base),
                pool.rows.iter().map(|&r| p.chunks[r].clone()).collect(),
            ),
            Some(m) => {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let queries = m.embed_unnormalized(&refs, true)?;
                let mut chunks = Vec::with_capacity(pool.rows.len());
                for batch in pool.rows.chunks(BATCH) {
                    let refs: Vec<&str> = batch.iter().map(|&r| p.texts[r].as_str()).collect();
                    chunks.extend(m.embed_unnormalized(&refs, false)?);
                }
                (normalized(&queries), chunks)
            }
        };
        Ok(chunk_metrics(
            &queries,
            relevant,
            &normalized(&chunks),
            &docs,
        ))
    }
    /// `train` with each labelled query's pair replaced by (query, its document's best chunk),
    /// one per relevant document — or, with `starts`, joined by it; other pairs as they are.
    pub(super) fn pairs(&self, train: &[Pair], docs: &[Document], starts: bool) -> Vec<Pair> {
        labelled_pairs(&self.prepared, train, docs, starts)
    }

    /// The held-out labelled queries over every chunk, base against `trained` (`None` with
    /// none held out), and the hybrid fusion chosen for `trained` on those rankings beside
    /// BM25 (`analyzer`) over the chunks ([`super::fusion::held_out`]).
    pub(super) fn compare(
        &self,
        trained: &SentenceEmbedder,
        analyzer: rag_core::Analyzer,
        progress: Arc<dyn Progress>,
    ) -> Result<(
        Option<super::Comparison>,
        Option<crate::evaluation::FusionChoice>,
    )> {
        let (texts, relevant) = &self.held;
        if texts.is_empty() {
            return Ok((None, None));
        }
        let p = &self.prepared;
        let base = chunk_metrics(
            &normalized(&self.held_base),
            relevant,
            &normalized(&p.chunks),
            &p.chunk_docs,
        );
        let (chunks, _) =
            embed_passages(trained, &p.texts, "chunks", "trained", progress.as_ref())?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let queries = normalized(&trained.embed_unnormalized(&refs, true)?);
        let chunks = normalized(&chunks);
        let after = chunk_metrics(&queries, relevant, &chunks, &p.chunk_docs);
        let fusion = super::fusion::held_out(
            &queries,
            texts,
            relevant,
            &chunks,
            &p.texts,
            &p.chunk_docs,
            analyzer,
        );
        let comparison = super::Comparison {
            set: format!(
                "{} held-out queries over the {} chunks",
                texts.len(),
                p.chunk_docs.len()
            ),
            base,
            trained: after,
        };
        Ok((Some(comparison), fusion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(query: usize, positive: usize, relevant: u32) -> hard::HardPair {
        hard::HardPair {
            query,
            positive,
            negatives: vec![],
            relevant: vec![relevant],
        }
    }

    #[test]
    fn a_copied_pseudo_query_is_paired_with_another_chunk_of_its_document() {
        // Document 0 has three chunks, document 1 one; the query's text sits in chunk 0
        // (across a line break) and in document 1's only chunk.
        let texts: Vec<String> = [
            "dup\nmake a copy of a\n file descriptor",
            "dup\nreturns the new descriptor",
            "dup\nerrors: EBADF",
            "close\nmake a copy of a file descriptor first",
        ]
        .map(String::from)
        .to_vec();
        let chunk_docs = [0, 0, 0, 1];
        let by_doc = HashMap::from([(0, vec![0, 1, 2]), (1, vec![3])]);
        let query = "make a copy of a file descriptor";
        assert_eq!(source_chunks(query, &[0], &texts, &by_doc), vec![0]);
        assert_eq!(source_chunks(query, &[1], &texts, &by_doc), vec![3]);
        assert_eq!(
            source_chunks("not there", &[0, 1], &texts, &by_doc),
            Vec::<usize>::new()
        );

        // Chunk 2 is nearer the query than chunk 1: it becomes the positive. The pair of
        // document 1 has no other chunk and is dropped; a pair of a real query is left alone.
        let queries = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]];
        let chunks = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.8, 0.6],
            vec![1.0, 0.0],
        ];
        let sources = vec![vec![0], vec![3], vec![]];
        let mut pairs = vec![pair(0, 0, 0), pair(1, 3, 1), pair(2, 0, 0)];
        let (moved, dropped) = off_sources(
            &mut pairs,
            &sources,
            &queries,
            &chunks,
            &chunk_docs,
            &by_doc,
        );
        assert_eq!((moved, dropped), (1, 1));
        assert_eq!(pairs.len(), 2);
        assert_eq!((pairs[0].query, pairs[0].positive), (0, 2));
        assert_eq!((pairs[1].query, pairs[1].positive), (2, 0));
    }

    #[test]
    fn labelled_queries_train_on_their_best_chunk_and_with_starts_on_the_page_too() {
        let docs = vec![
            Document::new("dup.2", "dup", "make a copy of a file descriptor", "t"),
            Document::new("close.2", "close", "close a file descriptor", "t"),
        ];
        let prepared = Prepared {
            queries: vec![vec![1.0, 0.0]],
            query_texts: vec!["copy an fd".into()],
            texts: vec![
                "dup\nmake a copy".into(),
                "dup\nof a file descriptor".into(),
                "close\nclose a file descriptor".into(),
            ],
            chunks: vec![vec![0.0, 1.0], vec![1.0, 0.0], vec![0.5, 0.5]],
            chunk_docs: vec![0, 0, 1],
            pairs: vec![pair(0, 1, 0)],
            report: PassageReport {
                chunks: 3,
                cached: 0,
                queries: 1,
                mining: MiningReport::default(),
                moved_off_source: 0,
                dropped_only_source: 0,
                seconds: 0.0,
            },
        };
        let start = Pair {
            query: "copy an fd".into(),
            passage: "dup\nmake a copy of a file descriptor".into(),
            doc_id: "dup.2".into(),
            origin: PairOrigin::Query,
        };
        let mined = Pair {
            query: "close".into(),
            passage: "close\nclose a file descriptor".into(),
            doc_id: "close.2".into(),
            origin: PairOrigin::Title,
        };
        let train = vec![start.clone(), mined.clone()];
        let best = Pair {
            passage: "dup\nof a file descriptor".into(),
            ..start.clone()
        };
        assert_eq!(
            labelled_pairs(&prepared, &train, &docs, false),
            vec![mined.clone(), best.clone()]
        );
        let both = labelled_pairs(&prepared, &train, &docs, true);
        assert_eq!(both, vec![start, mined, best]);

        // Hard negatives follow their query and document into the new list.
        let negative = |text: &str| Negative {
            passage: text.into(),
            doc_id: "other".into(),
            margin: None,
        };
        let lists = vec![vec![negative("a")], vec![negative("b")]];
        let carried = carry_negatives(&train, &lists, &both);
        assert_eq!(carried.len(), 3);
        assert_eq!(carried[0], lists[0]);
        assert_eq!(carried[1], lists[1]);
        assert_eq!(carried[2], lists[0]);
        assert!(carry_negatives(&train, &[], &both).is_empty());
    }
}
