//! Chinese text, two measurements on the bundled `data/manpages-zh` (and the English
//! `data/manpages` beside it):
//!
//! 1. BM25 with the analyzer's CJK scheme (overlapping character bigrams, no dictionary)
//!    beside a dictionary segmenter (jieba-rs: precise mode and search mode) and single
//!    characters: nDCG@10 of the queries of each split, chunks ranked and cut to documents
//!    as the loop reports them (a document at its best chunk's rank).
//! 2. Chunk sizes in model tokens: the default chunker (sizes in script-weighted characters)
//!    and plain characters, measured with all-MiniLM-L6-v2's tokenizer (no truncation):
//!    percentiles and the share of chunks longer than the model reads (256 tokens).
//!
//! ```text
//! cargo bench -p embed-runtime --bench cjk_text -- [--model models/all-MiniLM-L6-v2]
//! ```
//! Segmenters other than the analyzer's reach the same BM25 (`rag_core::local::Bm25`) as
//! opaque terms: each segment becomes one ASCII word (a hash), which the standard analyzer
//! keeps whole.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rag_core::chunk::{Chunk, Chunker, Document};
use rag_core::eval::MetricsAccumulator;
use rag_core::local::Bm25;
use rag_core::text::Analyzer;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn jsonl_gz(path: &Path) -> Vec<Value> {
    let mut raw = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut raw)
        .unwrap();
    raw.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn documents(corpus: &str) -> Vec<Document> {
    jsonl_gz(
        &root()
            .join("data")
            .join(corpus)
            .join("docs/corpus.jsonl.gz"),
    )
    .into_iter()
    .map(|v| {
        Document::new(
            v["id"].as_str().unwrap(),
            v["title"].as_str().unwrap_or_default(),
            v["text"].as_str().unwrap(),
            format!("mem://bench/{}", v["id"].as_str().unwrap()),
        )
    })
    .collect()
}

struct Query {
    text: String,
    relevant: Vec<String>,
    split: String,
}

fn queries(corpus: &str) -> Vec<Query> {
    jsonl_gz(&root().join("data").join(corpus).join("queries.jsonl.gz"))
        .into_iter()
        .map(|v| Query {
            text: v["text"].as_str().unwrap().to_string(),
            relevant: v["relevant"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect(),
            split: v["split"].as_str().unwrap_or("test").to_string(),
        })
        .collect()
}

/// How a text becomes the words the BM25 analyzer sees.
enum Segmenter {
    /// The analyzer itself (CJK runs as overlapping character bigrams).
    Bigrams,
    /// jieba-rs, precise mode (`cut`, HMM for unknown words).
    Jieba(jieba_rs::Jieba),
    /// jieba-rs, search mode (`cut_for_search`: long words also as their dictionary parts).
    JiebaSearch(jieba_rs::Jieba),
    /// Every CJK character alone, other words as the analyzer cuts them.
    Characters,
}

impl Segmenter {
    fn name(&self) -> &'static str {
        match self {
            Self::Bigrams => "CJK bigrams (the analyzer's scheme, no dictionary)",
            Self::Jieba(_) => "jieba-rs, precise mode",
            Self::JiebaSearch(_) => "jieba-rs, search mode",
            Self::Characters => "single CJK characters",
        }
    }

    /// The text the BM25 analyzer reads.
    fn prepare(&self, text: &str) -> String {
        let opaque = |segments: &mut dyn Iterator<Item = String>| {
            let words: Vec<String> = segments
                .filter(|s| s.chars().any(char::is_alphanumeric))
                .map(|s| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    s.to_lowercase().hash(&mut h);
                    format!("t{:x}", h.finish())
                })
                .collect();
            words.join(" ")
        };
        match self {
            Self::Bigrams => text.to_string(),
            Self::Jieba(j) => opaque(&mut j.cut(text, true).into_iter().map(str::to_string)),
            Self::JiebaSearch(j) => {
                opaque(&mut j.cut_for_search(text, true).into_iter().map(str::to_string))
            }
            Self::Characters => opaque(&mut text.split_whitespace().flat_map(|w| {
                let mut out = Vec::new();
                let mut latin = String::new();
                for c in w.chars() {
                    if rag_core::text::is_cjk(c) {
                        if !latin.is_empty() {
                            out.push(std::mem::take(&mut latin));
                        }
                        out.push(c.to_string());
                    } else if c.is_alphanumeric() {
                        latin.push(c);
                    } else if !latin.is_empty() {
                        out.push(std::mem::take(&mut latin));
                    }
                }
                if !latin.is_empty() {
                    out.push(latin);
                }
                out
            })),
        }
    }
}

/// nDCG@10 per split, and the seconds to index.
fn evaluate(seg: &Segmenter, chunks: &[Chunk], queries: &[Query]) -> (Vec<(String, f64)>, f64) {
    let started = Instant::now();
    let mut bm25 = Bm25::new(Analyzer::Standard);
    for (slot, c) in chunks.iter().enumerate() {
        bm25.add(slot, &seg.prepare(&c.text));
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut by_split: HashMap<String, MetricsAccumulator> = HashMap::new();
    for q in queries {
        let mut docs: Vec<String> = Vec::new();
        for (slot, _) in bm25.ranked(&seg.prepare(&q.text), 200) {
            let doc = &chunks[slot].doc_id;
            if !docs.contains(doc) {
                docs.push(doc.clone());
            }
            if docs.len() == 10 {
                break;
            }
        }
        by_split
            .entry(q.split.clone())
            .or_default()
            .add(&docs, &q.relevant);
    }
    let mut rows: Vec<(String, f64)> = by_split
        .into_iter()
        .map(|(split, acc)| (split, acc.finish().ndcg_at_10))
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0));
    (rows, seconds)
}

fn percentiles(mut xs: Vec<usize>) -> String {
    xs.sort_unstable();
    let at = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    let over = xs.iter().filter(|&&n| n > 256).count() as f64 / xs.len() as f64;
    format!(
        "| {} | {} | {} | {} | {} | {:.1} % |",
        at(0.1),
        at(0.5),
        at(0.9),
        at(0.99),
        xs[xs.len() - 1],
        over * 100.0
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .iter()
        .position(|a| a == "--model")
        .map(|i| PathBuf::from(&args[i + 1]))
        .unwrap_or_else(|| root().join("models/all-MiniLM-L6-v2"));

    let zh = documents("manpages-zh");
    let zh_queries = queries("manpages-zh");
    let chunks = Chunker::default().chunk_all(&zh);
    println!(
        "## BM25 on data/manpages-zh ({} documents, {} chunks, {} queries)\n",
        zh.len(),
        chunks.len(),
        zh_queries.len()
    );
    println!("| segmentation | nDCG@10 test | nDCG@10 train | index s |");
    println!("|---|---|---|---|");
    let segmenters = [
        Segmenter::Bigrams,
        Segmenter::Jieba(jieba_rs::Jieba::new()),
        Segmenter::JiebaSearch(jieba_rs::Jieba::new()),
        Segmenter::Characters,
    ];
    for seg in &segmenters {
        let (rows, seconds) = evaluate(seg, &chunks, &zh_queries);
        let get = |s: &str| {
            rows.iter()
                .find(|(k, _)| k == s)
                .map_or("–".into(), |(_, v)| format!("{v:.3}"))
        };
        println!(
            "| {} | {} | {} | {seconds:.2} |",
            seg.name(),
            get("test"),
            get("train")
        );
    }

    let mut tokenizer = tokenizers::Tokenizer::from_file(model.join("tokenizer.json"))
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-model.sh)", model.display()));
    // The file's own truncation (128) would hide the long chunks.
    tokenizer.with_truncation(None).unwrap();
    tokenizer.with_padding(None);
    let count = |texts: Vec<&str>| -> Vec<usize> {
        tokenizer
            .encode_batch(texts, true)
            .unwrap()
            .iter()
            .map(|e| e.get_ids().len())
            .collect()
    };
    println!("\n## Chunk sizes in all-MiniLM-L6-v2 tokens (it reads 256)\n");
    println!("| corpus, chunker | chunks | p10 | p50 | p90 | p99 | max | over 256 |");
    println!("|---|---|---|---|---|---|---|---|");
    let en = documents("manpages");
    for (corpus, docs) in [("manpages-zh", &zh), ("manpages (English)", &en)] {
        for (name, chunker) in [
            (
                "default: 1,200 script-weighted chars (CJK ×3)",
                Chunker::default(),
            ),
            ("1,200 plain chars", Chunker::chars(1200, 150)),
        ] {
            let chunks = chunker.chunk_all(docs);
            let sizes = count(chunks.iter().map(|c| c.text.as_str()).collect());
            println!(
                "| {corpus}, {name} | {} {}",
                chunks.len(),
                percentiles(sizes)
            );
        }
    }
}
