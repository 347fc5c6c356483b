//! The embedded index's BM25 on one synthetic corpus, three ways: the in-memory
//! `rag_core::local::Bm25` (what the index used before, and what the trainer's mining still
//! uses), the index's text index (`vector_store::fulltext::TantivyIndex`: tantivy through
//! ragloop's analyzer, written as stage 6 writes, 512 records a call, then committed), and
//! plain tantivy (`en_stem` tokenizer, the same Snowball English stems, one writer, merged
//! into one segment) — build time, index size, queries per second (one thread, top 10) and how
//! many of the plain tantivy top 10 each returns.
//!
//! The corpus: `--docs N` documents (default 1,000,000) of 120 words drawn from the word
//! frequencies of the bundled man pages (a Zipfian vocabulary of real words); the queries: the
//! bundled query set's texts. The in-memory index's size is estimated from its postings; the
//! others are measured on disk.
//!
//! `cargo bench -p vector-store --bench bm25 -- --docs 1000000`

use std::collections::HashMap;
use std::io::Read;
use std::time::Instant;

use rag_core::local::Bm25;
use rag_core::local::fulltext::{TextDoc, TextIndex};
use rag_core::{Analyzer, IndexSchema, Metadata, Metric};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{INDEXED, STORED, Schema, TextFieldIndexing, TextOptions, Value};
use tantivy::{Index, IndexWriter, TantivyDocument, doc};

fn gunzip(path: &str) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .expect("gzip");
    out
}

fn texts(jsonl: &str, field: &str) -> Vec<String> {
    jsonl
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v[field].as_str().map(str::to_string))
        .collect()
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let docs: usize = args
        .iter()
        .position(|a| a == "--docs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1_000_000);
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/manpages/");
    let pages = texts(&gunzip(&format!("{root}docs/corpus.jsonl.gz")), "text");
    let queries = texts(&gunzip(&format!("{root}queries.jsonl.gz")), "text");
    // The man pages' words and their counts: a cumulative table to draw from.
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for p in &pages {
        for w in p
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            *counts.entry(w).or_default() += 1;
        }
    }
    let mut vocab: Vec<(&str, u64)> = counts.into_iter().collect();
    vocab.sort();
    let mut cumulative = Vec::with_capacity(vocab.len());
    let mut total = 0;
    for (_, c) in &vocab {
        total += c;
        cumulative.push(total);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut document = || {
        let mut s = String::with_capacity(900);
        for _ in 0..120 {
            let x = rng.next() % total;
            let i = cumulative.partition_point(|&c| c <= x);
            s.push_str(vocab[i].0);
            s.push(' ');
        }
        s
    };
    let corpus: Vec<String> = (0..docs).map(|_| document()).collect();
    let bytes: usize = corpus.iter().map(String::len).sum();
    eprintln!(
        "{docs} documents ({:.0} MB), {} words in the vocabulary, {} queries",
        bytes as f64 / 1e6,
        vocab.len(),
        queries.len()
    );

    // Ours.
    let t = Instant::now();
    let mut ours = Bm25::new(Analyzer::English);
    for (i, d) in corpus.iter().enumerate() {
        ours.add(i, d);
    }
    let ours_build = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ours_top: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| ours.ranked(q, 10).into_iter().map(|(s, _)| s).collect())
        .collect();
    let ours_qps = queries.len() as f64 / t.elapsed().as_secs_f64();
    let ours_size = ours.approx_bytes();
    drop(ours);

    // The embedded index's text index.
    let text_dir = tempfile::tempdir().expect("temp dir");
    let schema = IndexSchema::new("bench", 4, Metric::Cosine).with_analyzer(Analyzer::English);
    let t = Instant::now();
    let embedded =
        vector_store::fulltext::TantivyIndex::open(&schema, Some(text_dir.path())).expect("open");
    let ids: Vec<String> = (0..docs).map(|i| i.to_string()).collect();
    let empty = Metadata::new();
    for (n, batch) in corpus.chunks(512).enumerate() {
        let items: Vec<TextDoc<'_>> = batch
            .iter()
            .enumerate()
            .map(|(j, text)| TextDoc {
                id: &ids[n * 512 + j],
                text,
                metadata: &empty,
            })
            .collect();
        embedded.upsert(&items, "bench").expect("upsert");
    }
    embedded.commit().expect("commit");
    let embedded_build = t.elapsed().as_secs_f64();
    let embedded_size = dir_bytes(text_dir.path());
    let embedded_segments = tantivy::Index::open_in_dir(text_dir.path())
        .and_then(|i| i.searchable_segment_ids())
        .map_or(0, |s| s.len());
    let t = Instant::now();
    let embedded_top: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            embedded
                .search(q, 10, None)
                .expect("search")
                .into_iter()
                .map(|(id, _)| id.parse().unwrap_or(usize::MAX))
                .collect()
        })
        .collect();
    let embedded_qps = queries.len() as f64 / t.elapsed().as_secs_f64();
    drop(embedded);

    // tantivy.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut schema = Schema::builder();
    let text = schema.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(tantivy::schema::IndexRecordOption::WithFreqs),
        ),
    );
    let id = schema.add_u64_field("id", INDEXED | STORED);
    let index = Index::create_in_dir(dir.path(), schema.build()).expect("tantivy index");
    let t = Instant::now();
    let mut writer: IndexWriter = index.writer_with_num_threads(1, 512 << 20).expect("writer");
    for (i, d) in corpus.iter().enumerate() {
        writer
            .add_document(doc!(text => d.as_str(), id => i as u64))
            .expect("add");
    }
    writer.commit().expect("commit");
    let segments = index.searchable_segment_ids().expect("segments");
    if segments.len() > 1 {
        let _ = writer.merge(&segments).wait();
    }
    writer.wait_merging_threads().expect("merge");
    let tantivy_build = t.elapsed().as_secs_f64();
    let tantivy_size = dir_bytes(dir.path());
    let reader = index.reader().expect("reader");
    let searcher = reader.searcher();
    // Any query term may match (OR), as ours scores.
    let parser = QueryParser::for_index(&index, vec![text]);
    let t = Instant::now();
    let tantivy_top: Vec<Vec<usize>> = queries
        .iter()
        .map(|q| {
            let (query, _) = parser.parse_query_lenient(q);
            searcher
                .search(&query, &TopDocs::with_limit(10).order_by_score())
                .expect("search")
                .into_iter()
                .map(|(_, addr)| {
                    let d: TantivyDocument = searcher.doc(addr).expect("doc");
                    d.get_first(id).and_then(|v| v.as_u64()).unwrap_or(u64::MAX) as usize
                })
                .collect()
        })
        .collect();
    let tantivy_qps = queries.len() as f64 / t.elapsed().as_secs_f64();

    let agreement_with = |top: &[Vec<usize>], reference: &[Vec<usize>]| {
        top.iter()
            .zip(reference)
            .map(|(a, b)| {
                let hit = a.iter().filter(|x| b.contains(x)).count();
                hit as f64 / b.len().max(1) as f64
            })
            .sum::<f64>()
            / queries.len() as f64
    };
    let agreement = |top: &[Vec<usize>]| agreement_with(top, &tantivy_top);

    println!(
        "| engine | documents | build s | index MB | queries/s (1 thread, top 10) | top-10 agreement with plain tantivy |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| rag-core Bm25 (in memory) | {docs} | {ours_build:.1} | {:.0} (estimate) | {ours_qps:.0} | {:.3} |",
        ours_size as f64 / 1e6,
        agreement(&ours_top)
    );
    println!(
        "| embedded index text (TantivyIndex, 512 a write) | {docs} | {embedded_build:.1} | {:.0} | {embedded_qps:.0} | {:.3} |",
        embedded_size as f64 / 1e6,
        agreement(&embedded_top)
    );
    println!(
        "| plain tantivy 0.27 (en_stem, 1 writer thread, one segment) | {docs} | {tantivy_build:.1} | {:.0} | {tantivy_qps:.0} | 1 |",
        tantivy_size as f64 / 1e6
    );
    println!(
        "\nthe embedded text index's top 10 beside the in-memory Bm25's (same analyzer and formula; \
         tantivy keeps lengths in a byte): {:.3}; segments in the embedded index: {embedded_segments}",
        agreement_with(&embedded_top, &ours_top)
    );
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}
