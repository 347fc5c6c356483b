//! Training pairs for the contrastive trainer: (query, passage) pairs mined from raw documents,
//! built from a query set with known answers, or read from the user's JSONL.
//!
//! Mining needs nothing but the documents (seed step 2 gives only `raw-docs/`):
//! - **title → document**: the title as a query for the start of the text;
//! - **heading → section**: `"<title> <heading>"` for the section under that heading
//!   (markdown `#` headings or man-page style upper-case lines);
//! - **inverse cloze**: a sentence from the start of the document as a query for the
//!   document with that sentence removed.
//!
//! Passages of a document are written as the evaluation and the batch embedding see whole
//! documents: `title + "\n" + text`, cut to a character budget (the tokenizer cuts the rest).

use std::collections::{HashMap, HashSet};

use rag_core::eval::EvalQuery;
use rag_core::{Document, Error, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Where a pair came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairOrigin {
    /// The document's title → its text.
    Title,
    /// A section heading → the section.
    Heading,
    /// A sentence → the document without it.
    InverseCloze,
    /// A section's first sentence (the document's lead, when it has no headings) → the
    /// document without it: a summary-like query, the kind of text a first sentence is.
    Lead,
    /// A query with a known relevant document.
    Query,
    /// A user-supplied pair.
    Supplied,
    /// A question written by a chat model about the passage.
    Synthetic,
}

impl PairOrigin {
    /// Mined from the documents' own text (title, heading, sentence, lead): a pseudo-query.
    pub fn is_mined(self) -> bool {
        matches!(
            self,
            Self::Title | Self::Heading | Self::InverseCloze | Self::Lead
        )
    }
}

/// One training example: the passage is the positive for the query; the other passages of the
/// batch are its negatives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Query text.
    pub query: String,
    /// Passage text.
    pub passage: String,
    /// The document the passage comes from (two pairs of one document never share a batch).
    #[serde(default)]
    pub doc_id: String,
    /// How the pair was made.
    #[serde(default = "supplied")]
    pub origin: PairOrigin,
}

/// A hard negative of a [`Pair`]: a passage of another document that must score below the
/// pair's positive ([`EmbeddingTrainer::train_with_negatives`](super::EmbeddingTrainer::train_with_negatives)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Negative {
    /// Passage text.
    pub passage: String,
    /// Its document: in a batch, it is no negative of any query that document is relevant to.
    pub doc_id: String,
    /// A teacher's score of the pair's positive minus its score of this passage, the target of
    /// the margin-MSE objective ([`Objective::MarginMse`](super::Objective)); `None` when no
    /// teacher scored it.
    pub margin: Option<f32>,
}

fn supplied() -> PairOrigin {
    PairOrigin::Supplied
}

/// What [`mine_pairs`] extracts.
#[derive(Debug, Clone)]
pub struct MiningOptions {
    /// A title → document pair per document with a title.
    pub titles: bool,
    /// Heading → section pairs, at most this many per document.
    pub headings_per_doc: usize,
    /// Inverse-cloze pairs per document.
    pub cloze_per_doc: usize,
    /// Lead pairs per document: the first sentences of its first sections, in order.
    pub leads_per_doc: usize,
    /// Characters of a passage kept (the tokenizer truncates further).
    pub max_passage_chars: usize,
    /// Seed of the sentence choice.
    pub seed: u64,
}

impl Default for MiningOptions {
    fn default() -> Self {
        Self {
            titles: true,
            headings_per_doc: 2,
            cloze_per_doc: 2,
            leads_per_doc: 2,
            max_passage_chars: 2_000,
            seed: 17,
        }
    }
}

/// `title + "\n" + text` cut to `max_chars` (on a char boundary).
pub fn document_passage(doc: &Document, max_chars: usize) -> String {
    let full = if doc.title.trim().is_empty() {
        doc.text.trim().to_string()
    } else {
        format!("{}\n{}", doc.title.trim(), doc.text.trim())
    };
    cut(&full, max_chars).to_string()
}

fn cut(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A heading line: markdown `#…`, or a short unindented line in upper case (man pages).
fn heading(line: &str) -> Option<String> {
    let t = line.trim_end();
    if let Some(h) = t.strip_prefix('#') {
        let h = h.trim_start_matches('#').trim();
        return (!h.is_empty()).then(|| h.to_string());
    }
    let letters = t.chars().filter(|c| c.is_alphabetic()).count();
    (!t.starts_with(char::is_whitespace)
        && letters >= 3
        && t.len() <= 40
        && t.chars().all(|c| !c.is_lowercase()))
    .then(|| t.trim().to_string())
}

/// (heading, section text) in document order.
fn sections(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        match heading(line) {
            Some(h) => out.push((h, String::new())),
            None => {
                if let Some((_, body)) = out.last_mut() {
                    body.push_str(line.trim());
                    body.push('\n');
                }
            }
        }
    }
    out.retain(|(_, body)| body.split_whitespace().count() >= 8);
    out
}

/// Sentences of `text` (split after `.`, `!`, `?` followed by white space), white space
/// collapsed, with their byte ranges in `text`.
fn sentences(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let end = i + c.len_utf8();
        let boundary =
            matches!(c, '.' | '!' | '?') && bytes.get(end).is_none_or(|b| b.is_ascii_whitespace());
        if boundary || text[end..].starts_with("\n\n") {
            out.push((start, end));
            start = end;
        }
    }
    if start < text.len() {
        out.push((start, text.len()));
    }
    out
}

/// Byte ranges of the first sentence of each section of `text`, in order: the text's own
/// start (unless it opens with a heading) and the content after each heading line. Only
/// sentences of 5–40 words that are not headings.
fn leads(text: &str) -> Vec<(usize, usize)> {
    let mut starts = Vec::new();
    let mut offset = 0;
    let mut first_line = true;
    for line in text.split_inclusive('\n') {
        let is_heading = heading(line.trim_end_matches(['\n', '\r'])).is_some();
        if first_line && !line.trim().is_empty() {
            if !is_heading {
                starts.push(offset);
            }
            first_line = false;
        }
        if is_heading {
            starts.push(offset + line.len());
        }
        offset += line.len();
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    for start in starts {
        let rest = &text[start..];
        let skip = rest.len() - rest.trim_start().len();
        let Some(&(s, e)) = sentences(&rest[skip..]).first() else {
            continue;
        };
        let (s, e) = (start + skip + s, start + skip + e);
        let words = text[s..e].split_whitespace().count();
        if (5..=40).contains(&words)
            && heading(text[s..e].trim()).is_none()
            && !out.iter().any(|&(a, _)| a == s)
        {
            out.push((s, e));
        }
    }
    out
}

/// `doc` with the bytes `s..e` of its text removed, as a passage (`title\ntext`, cut).
fn without(doc: &Document, s: usize, e: usize, max: usize) -> String {
    let rest = format!("{}{}", &doc.text[..s], &doc.text[e..]);
    document_passage(
        &Document {
            text: rest,
            ..doc.clone()
        },
        max,
    )
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Mines pairs from raw documents (see the module docs). Deterministic for a seed.
pub fn mine_pairs(docs: &[Document], options: &MiningOptions) -> Vec<Pair> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut out = Vec::new();
    let max = options.max_passage_chars;
    for doc in docs {
        let title = doc.title.trim();
        if options.titles && !title.is_empty() && !doc.text.trim().is_empty() {
            out.push(Pair {
                query: title.to_string(),
                passage: cut(doc.text.trim(), max).to_string(),
                doc_id: doc.id.clone(),
                origin: PairOrigin::Title,
            });
        }
        if options.headings_per_doc > 0 {
            let mut secs = sections(&doc.text);
            secs.shuffle(&mut rng);
            for (h, body) in secs.into_iter().take(options.headings_per_doc) {
                let query = if title.is_empty() {
                    h.to_lowercase()
                } else {
                    format!("{title} {}", h.to_lowercase())
                };
                out.push(Pair {
                    query,
                    passage: cut(&format!("{h}\n{}", body.trim()), max).to_string(),
                    doc_id: doc.id.clone(),
                    origin: PairOrigin::Heading,
                });
            }
        }
        if options.cloze_per_doc > 0 {
            // Sentences from the start of the document (what its passage holds), 5–60 words.
            let window = cut(&doc.text, max);
            let candidates: Vec<(usize, usize)> = sentences(window)
                .into_iter()
                .filter(|&(s, e)| {
                    let words = window[s..e].split_whitespace().count();
                    (5..=60).contains(&words) && heading(window[s..e].trim()).is_none()
                })
                .collect();
            let mut chosen = candidates;
            chosen.shuffle(&mut rng);
            for (s, e) in chosen.into_iter().take(options.cloze_per_doc) {
                out.push(Pair {
                    query: collapse(&window[s..e]),
                    passage: without(doc, s, e, max),
                    doc_id: doc.id.clone(),
                    origin: PairOrigin::InverseCloze,
                });
            }
        }
        if options.leads_per_doc > 0 {
            // Sections starting within the passage's window, first ones first.
            let window = cut(&doc.text, max);
            for (s, e) in leads(window).into_iter().take(options.leads_per_doc) {
                out.push(Pair {
                    query: collapse(&window[s..e]),
                    passage: without(doc, s, e, max),
                    doc_id: doc.id.clone(),
                    origin: PairOrigin::Lead,
                });
            }
        }
    }
    out
}

/// Pairs from queries with known relevant documents (e.g. a query set's `train` split): each
/// (query, relevant document) becomes a pair with the document's passage. Returns the pairs and
/// the number of relevant ids not found among `docs`.
pub fn pairs_from_queries(
    queries: &[EvalQuery],
    docs: &[Document],
    max_passage_chars: usize,
) -> (Vec<Pair>, usize) {
    let by_id: HashMap<&str, &Document> = docs.iter().map(|d| (d.id.as_str(), d)).collect();
    let mut missing = 0;
    let mut out = Vec::new();
    for q in queries {
        for rel in &q.relevant {
            match by_id.get(rel.as_str()) {
                Some(doc) => out.push(Pair {
                    query: q.text.clone(),
                    passage: document_passage(doc, max_passage_chars),
                    doc_id: doc.id.clone(),
                    origin: PairOrigin::Query,
                }),
                None => missing += 1,
            }
        }
    }
    (out, missing)
}

/// Reads user pairs, one JSON object per line: `{"query": …, "passage": …}` (optional
/// `doc_id`). Blank lines are skipped; a bad line is an error naming its number.
pub fn read_pairs_jsonl(text: &str) -> Result<Vec<Pair>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut pair: Pair = serde_json::from_str(line)
            .map_err(|e| Error::invalid(format!("pairs line {}: {e}", n + 1)))?;
        if pair.query.trim().is_empty() || pair.passage.trim().is_empty() {
            return Err(Error::invalid(format!(
                "pairs line {}: empty query or passage",
                n + 1
            )));
        }
        if pair.doc_id.is_empty() {
            pair.doc_id = format!("pairs:{}", n + 1);
        }
        out.push(pair);
    }
    Ok(out)
}

/// Drops pairs with an empty side and repeats of the same (query, passage), keeping the first;
/// and a mined query (title, heading, sentence) that several documents share — boilerplate such
/// as a common heading or a repeated notice, which names no one document. Queries and passages
/// are compared with white space collapsed and case folded. A real query or a user's pair may
/// name several documents and is kept.
pub fn dedup(pairs: Vec<Pair>) -> Vec<Pair> {
    let key = |s: &str| collapse(s).to_lowercase();
    let mut docs_of: HashMap<String, HashSet<&str>> = HashMap::new();
    for p in pairs.iter().filter(|p| p.origin.is_mined()) {
        docs_of.entry(key(&p.query)).or_default().insert(&p.doc_id);
    }
    let shared: HashSet<String> = docs_of
        .into_iter()
        .filter(|(_, d)| d.len() > 1)
        .map(|(q, _)| q)
        .collect();
    let mut seen = HashSet::new();
    pairs
        .into_iter()
        .filter(|p| !p.query.trim().is_empty() && !p.passage.trim().is_empty())
        .filter(|p| !(p.origin.is_mined() && shared.contains(&key(&p.query))))
        .filter(|p| seen.insert((key(&p.query), key(&p.passage))))
        .collect()
}

/// Splits off the pairs of about `fraction` of the documents (chosen by a stable hash of the
/// document id, so a document's pairs are all on one side) as a held-out set.
pub fn hold_out(pairs: Vec<Pair>, fraction: f64) -> (Vec<Pair>, Vec<Pair>) {
    let threshold = (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    pairs
        .into_iter()
        .partition(|p| fnv1a(p.doc_id.as_bytes()) >= threshold)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix the high bits down: FNV's low bits are weak.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// Orders `pairs` into batches of `batch_size` for one epoch: shuffled with `rng`, and no batch
/// holds two pairs of the same document (their passages would be false negatives). Pairs that
/// cannot be placed without a clash go into later batches; the last batch may be short.
pub(crate) fn epoch_batches(
    pairs: &[Pair],
    batch_size: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.shuffle(rng);
    let mut batches = Vec::new();
    let mut pending: std::collections::VecDeque<usize> = order.into();
    while !pending.is_empty() {
        let mut batch = Vec::with_capacity(batch_size);
        let mut docs = HashSet::new();
        let mut deferred = Vec::new();
        while batch.len() < batch_size {
            let Some(i) = pending.pop_front() else { break };
            if docs.insert(pairs[i].doc_id.as_str()) {
                batch.push(i);
            } else {
                deferred.push(i);
            }
        }
        for i in deferred.into_iter().rev() {
            pending.push_front(i);
        }
        batches.push(batch);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, title: &str, text: &str) -> Document {
        Document {
            id: id.into(),
            title: title.into(),
            text: text.into(),
            source: format!("mem://{id}"),
            ..Default::default()
        }
    }

    const PAGE: &str = "SYNOPSIS\n       dup2 oldfd newfd\n\nDESCRIPTION\n       The dup() system call allocates a new file descriptor that refers to the same open file description. The new descriptor is the lowest-numbered unused one.\n\nRETURN VALUE\n       On success these calls return the new file descriptor and on error minus one is returned.\n";

    #[test]
    fn mining_makes_title_heading_and_cloze_pairs_from_a_page() {
        let d = doc("dup.2", "dup, dup2", PAGE);
        let pairs = mine_pairs(
            &[d],
            &MiningOptions {
                headings_per_doc: 5,
                ..Default::default()
            },
        );
        let title: Vec<_> = pairs
            .iter()
            .filter(|p| p.origin == PairOrigin::Title)
            .collect();
        assert_eq!(title.len(), 1);
        assert_eq!(title[0].query, "dup, dup2");
        assert!(title[0].passage.starts_with("SYNOPSIS"));
        let heads: Vec<&str> = pairs
            .iter()
            .filter(|p| p.origin == PairOrigin::Heading)
            .map(|p| p.query.as_str())
            .collect();
        // SYNOPSIS has fewer than 8 words under it.
        assert!(heads.contains(&"dup, dup2 description"), "{heads:?}");
        assert!(heads.contains(&"dup, dup2 return value"), "{heads:?}");
        assert!(!heads.iter().any(|h| h.ends_with("synopsis")), "{heads:?}");
        let cloze: Vec<_> = pairs
            .iter()
            .filter(|p| p.origin == PairOrigin::InverseCloze)
            .collect();
        assert_eq!(cloze.len(), 2);
        for p in cloze {
            assert!(PAGE.contains(p.query.split(' ').next().unwrap()));
            assert!(!collapse(&p.passage).contains(&p.query), "{p:?}");
            assert!(p.passage.starts_with("dup, dup2\n"));
        }
        // Same seed, same pairs.
        assert_eq!(
            pairs,
            mine_pairs(
                &[doc("dup.2", "dup, dup2", PAGE)],
                &MiningOptions {
                    headings_per_doc: 5,
                    ..Default::default()
                }
            )
        );
    }

    #[test]
    fn leads_are_the_first_sentences_of_sections_removed_from_the_passage() {
        let pairs = mine_pairs(
            &[doc("dup.2", "dup, dup2", PAGE)],
            &MiningOptions {
                titles: false,
                headings_per_doc: 0,
                cloze_per_doc: 0,
                leads_per_doc: 5,
                ..Default::default()
            },
        );
        let leads: Vec<&str> = pairs.iter().map(|p| p.query.as_str()).collect();
        // SYNOPSIS's first "sentence" has four words; the other two sections lead in order.
        assert_eq!(
            leads,
            [
                "The dup() system call allocates a new file descriptor that refers to the same open file description.",
                "On success these calls return the new file descriptor and on error minus one is returned."
            ]
        );
        for p in &pairs {
            assert_eq!(p.origin, PairOrigin::Lead);
            assert!(!collapse(&p.passage).contains(&p.query), "{p:?}");
            assert!(
                p.passage
                    .contains("The new descriptor is the lowest-numbered")
            );
        }
        // Plain prose without headings: its own first sentence, at most the number asked.
        let prose = doc(
            "p",
            "",
            "Tidal locking makes one face of a moon always point at its planet. It takes time.",
        );
        let pairs = mine_pairs(
            &[prose],
            &MiningOptions {
                leads_per_doc: 1,
                ..Default::default()
            },
        );
        let lead: Vec<_> = pairs
            .iter()
            .filter(|p| p.origin == PairOrigin::Lead)
            .collect();
        assert_eq!(lead.len(), 1);
        assert_eq!(
            lead[0].query,
            "Tidal locking makes one face of a moon always point at its planet."
        );
        assert_eq!(lead[0].passage.trim(), "It takes time.");
    }

    #[test]
    fn empty_and_tiny_documents_give_no_broken_pairs() {
        let pairs = mine_pairs(
            &[doc("a", "", ""), doc("b", "t", "   "), doc("c", "", "word")],
            &MiningOptions::default(),
        );
        assert!(
            pairs
                .iter()
                .all(|p| !p.query.trim().is_empty() && !p.passage.trim().is_empty())
        );
    }

    #[test]
    fn passages_are_cut_on_char_boundaries() {
        let d = doc("x", "é", &"ü".repeat(50));
        assert_eq!(document_passage(&d, 10).chars().count(), 10);
    }

    #[test]
    fn query_pairs_use_the_relevant_documents_and_count_missing_ones() {
        let docs = [doc("dup.2", "dup", PAGE)];
        let q = EvalQuery {
            id: "q".into(),
            text: "duplicate a file descriptor".into(),
            relevant: vec!["dup.2".into(), "gone.1".into()],
            split: "train".into(),
        };
        let (pairs, missing) = pairs_from_queries(&[q], &docs, 100);
        assert_eq!(missing, 1);
        assert_eq!(pairs.len(), 1);
        assert!(pairs[0].passage.starts_with("dup\nSYNOPSIS"));
    }

    #[test]
    fn user_pairs_are_read_and_bad_lines_named() {
        let pairs =
            read_pairs_jsonl("{\"query\":\"q\",\"passage\":\"p\"}\n\n{\"query\":\"r\",\"passage\":\"s\",\"doc_id\":\"d\"}\n")
                .unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].doc_id, "pairs:1");
        assert_eq!(pairs[1].doc_id, "d");
        let err = read_pairs_jsonl("{\"query\":\"q\"}\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = read_pairs_jsonl("{\"query\":\" \",\"passage\":\"p\"}").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn dedup_hold_out_and_batches_behave() {
        let mk = |q: &str, d: &str| Pair {
            query: q.into(),
            passage: format!("passage of {d}"),
            doc_id: d.into(),
            origin: PairOrigin::Supplied,
        };
        let pairs = dedup(vec![
            mk("a", "1"),
            mk(" A ", "1"),
            mk("b", "1"),
            mk("", "2"),
        ]);
        assert_eq!(pairs.len(), 2);
        // A mined query two documents share names neither; a real query may name both.
        let origin = |mut p: Pair, o: PairOrigin| {
            p.origin = o;
            p
        };
        let pairs = dedup(vec![
            origin(mk("See also", "1"), PairOrigin::Heading),
            origin(mk("see  ALSO", "2"), PairOrigin::Heading),
            origin(mk("tar archives", "1"), PairOrigin::Title),
            origin(mk("both pages", "1"), PairOrigin::Query),
            origin(mk("both pages", "2"), PairOrigin::Query),
        ]);
        let kept: Vec<&str> = pairs.iter().map(|p| p.query.as_str()).collect();
        assert_eq!(kept, ["tar archives", "both pages", "both pages"]);

        let many: Vec<Pair> = (0..1000)
            .map(|i| mk(&format!("q{i}"), &format!("d{}", i / 2)))
            .collect();
        let (train, held) = hold_out(many.clone(), 0.1);
        assert!((60..=140).contains(&held.len()), "{}", held.len());
        let held_docs: HashSet<_> = held.iter().map(|p| &p.doc_id).collect();
        assert!(train.iter().all(|p| !held_docs.contains(&p.doc_id)));

        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let batches = epoch_batches(&many, 32, &mut rng);
        let mut all: Vec<usize> = batches.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        for b in &batches {
            let docs: HashSet<_> = b.iter().map(|&i| &many[i].doc_id).collect();
            assert_eq!(docs.len(), b.len(), "a batch repeats a document");
        }
        assert!(batches[..batches.len() - 1].iter().all(|b| b.len() == 32));
    }
}
