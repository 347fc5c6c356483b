//! The embedded BM25 (`rag_core::local::Bm25`, English analyzer) beside tantivy (`en_stem`
//! tokenizer: the same Snowball English stems) on one synthetic corpus: build time, index
//! size, queries per second (one thread, top 10) and how many of tantivy's top 10 ours returns.
//!
//! The corpus: `--docs N` documents (default 1,000,000) of 120 words drawn from the word
//! frequencies of the bundled man pages (a Zipfian vocabulary of real words); the queries: the
//! bundled query set's texts. Our index lives in memory (its size is estimated from its
//! postings); tantivy's is written to a temporary directory and merged into one segment.
//!
//! `cargo bench -p rag-core --features bench-tantivy --bench bm25 -- --docs 1000000`

use std::collections::HashMap;
use std::io::Read;
use std::time::Instant;

use rag_core::Analyzer;
use rag_core::local::Bm25;
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
    let tantivy_size: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
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

    let agreement: f64 = ours_top
        .iter()
        .zip(&tantivy_top)
        .map(|(a, b)| {
            let hit = a.iter().filter(|x| b.contains(x)).count();
            hit as f64 / b.len().max(1) as f64
        })
        .sum::<f64>()
        / queries.len() as f64;

    println!("| engine | documents | build s | index MB | queries/s (1 thread, top 10) |");
    println!("|---|---|---|---|---|");
    println!(
        "| rag-core Bm25 (in memory) | {docs} | {ours_build:.1} | {:.0} (estimate) | {ours_qps:.0} |",
        ours_size as f64 / 1e6
    );
    println!(
        "| tantivy 0.27 (en_stem, 1 writer thread, one segment) | {docs} | {tantivy_build:.1} | {:.0} | {tantivy_qps:.0} |",
        tantivy_size as f64 / 1e6
    );
    println!(
        "\ntop-10 agreement (share of tantivy's top 10 in ours): {agreement:.3}; speed: build {:.2}×, queries {:.2}× tantivy's",
        tantivy_build / ours_build,
        ours_qps / tantivy_qps
    );
}
