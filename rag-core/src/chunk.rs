//! Documents and the chunker: paragraph- and heading-aware splitting into overlapping chunks
//! with content-hash ids and exact source offsets.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A source document.
///
/// `sections` and `pages` carry the structure a parser found (headings, page breaks); they are
/// empty for plain text and JSONL, where the chunker falls back to recognising headings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    /// Stable id (`getent.1`, or the file's path under the corpus prefix).
    pub id: String,
    /// Title (may be empty).
    pub title: String,
    /// Full text.
    pub text: String,
    /// Where it came from (`oss://bucket/raw-docs/corpus.jsonl#getent.1`).
    pub source: String,
    /// Where each section begins, in text order: a section runs to the next one's start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<Section>,
    /// Byte offset where each page begins, in order (page 1 first); empty when the format has
    /// no pages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pages: Vec<usize>,
    /// What the file says about itself (Markdown front matter, PDF info, DOCX core properties).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Document {
    /// A document without structure.
    pub fn new(
        id: impl Into<String>,
        title: impl Into<String>,
        text: impl Into<String>,
        source: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            text: text.into(),
            source: source.into(),
            ..Self::default()
        }
    }

    /// The heading path of the section holding byte `offset` (empty before the first heading).
    pub fn section_at(&self, offset: usize) -> &[String] {
        let i = self.sections.partition_point(|s| s.start <= offset);
        i.checked_sub(1)
            .map_or(&[][..], |i| self.sections[i].path.as_slice())
    }

    /// The page (from 1) holding byte `offset`, when the document has pages.
    pub fn page_at(&self, offset: usize) -> Option<u32> {
        let n = self.pages.partition_point(|&p| p <= offset);
        (!self.pages.is_empty()).then(|| n.max(1) as u32)
    }
}

/// A section of a document: its heading path (outermost first) and where its text begins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Section {
    /// Byte offset in the document's text where the section (its heading line) begins.
    pub start: usize,
    /// The headings from the outermost down to this section's own (`["Install", "Linux"]`).
    pub path: Vec<String>,
}

/// How a heading path is printed in citations and stored with chunks.
pub const SECTION_SEPARATOR: &str = " > ";

/// A piece of a document, the unit that is embedded, indexed and cited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Content-hash id: the same document id and text always give the same id, so re-running a
    /// stage upserts rather than duplicates.
    pub id: String,
    /// The document's id.
    pub doc_id: String,
    /// The document's title.
    pub title: String,
    /// The document's source.
    pub source: String,
    /// The chunk's text: exactly `document.text[start..end]`.
    pub text: String,
    /// Byte offset of the chunk in the document's text.
    pub start: usize,
    /// Byte offset one past the chunk's end.
    pub end: usize,
    /// Position of the chunk in its document, from 0.
    pub ordinal: usize,
    /// The heading path of the section the chunk begins in, joined by [`SECTION_SEPARATOR`];
    /// empty when the document has no structure or the chunk comes before the first heading.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub section: String,
    /// The page the chunk begins on (from 1), for paged formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The page it ends on, when that is a later one (`page..=page_end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
}

impl Chunk {
    /// The text given to an embedding model: title and chunk text, as the reference evaluation
    /// embeds documents.
    pub fn embedding_text(&self) -> String {
        if self.title.is_empty() {
            self.text.clone()
        } else {
            format!("{}\n{}", self.title, self.text)
        }
    }
}

/// The content-hash id of a chunk: the first 128 bits of SHA-256 over document id and text, hex.
pub fn chunk_id(doc_id: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(doc_id.as_bytes());
    h.update([0u8]);
    h.update(text.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// A chunk id held compactly: a content-hash id (32 lower-case hex digits, what [`chunk_id`]
/// makes) as its 16 bytes, in place, and any other id as it is — what the embedded index and
/// stage 6's manifest keep for every chunk of a corpus. Written and read as the id string;
/// content-hash keys order as their ids do.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChunkKey {
    /// A content-hash id's bytes.
    Hash([u8; 16]),
    /// Any other id.
    Other(Box<str>),
}

impl ChunkKey {
    /// The key of chunk id `id`.
    pub fn new(id: &str) -> Self {
        match Self::hash_bytes(id) {
            Some(bytes) => Self::Hash(bytes),
            None => Self::Other(id.into()),
        }
    }

    /// The 16 bytes of `id` if it is a content-hash id (32 lower-case hex digits).
    pub fn hash_bytes(id: &str) -> Option<[u8; 16]> {
        let mut bytes = [0u8; 16];
        let is_hash = id.len() == 32
            && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && hex::decode_to_slice(id, &mut bytes).is_ok();
        is_hash.then_some(bytes)
    }
}

impl std::fmt::Display for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hash(bytes) => f.write_str(&hex::encode(bytes)),
            Self::Other(id) => f.write_str(id),
        }
    }
}

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for ChunkKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ChunkKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let id = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Ok(Self::new(&id))
    }
}

/// How chunk sizes are measured.
pub trait SizeMeasure: Send + Sync {
    /// The size of `text` in this measure's unit.
    fn size(&self, text: &str) -> usize;
}

/// Sizes in Unicode scalar values.
#[derive(Debug, Clone, Copy, Default)]
pub struct Chars;

impl SizeMeasure for Chars {
    fn size(&self, text: &str) -> usize {
        text.chars().count()
    }
}

/// How many characters of Latin-script text one CJK character ([`crate::text::is_cjk`]) is
/// worth in [`ScriptChars`]: the ratio of model tokens per character of the two, rounded.
/// Measured with all-MiniLM-L6-v2's WordPiece tokenizer on the bundled man pages: 0.99 tokens
/// per character on Chinese lines, 0.29 (English pages) to 0.37 (the Latin lines of the
/// Chinese pages) on Latin ones — a ratio of 2.6 to 3.4 (BENCHMARKS.md, "Chinese text").
pub const CJK_CHAR_WEIGHT: usize = 3;

/// Sizes in characters weighted per script, so that a size means about as many model tokens in
/// any language: a CJK character (or CJK punctuation, or a full-width form), which tokenizers
/// cut into about one token each, counts as [`CJK_CHAR_WEIGHT`]; every other character as one (so text without CJK measures exactly as
/// [`Chars`] does). Without it a Chinese chunk of 1,200 characters is three to four times
/// longer in tokens than an English one and is truncated by the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScriptChars;

impl SizeMeasure for ScriptChars {
    fn size(&self, text: &str) -> usize {
        text.chars()
            .map(|c| {
                // CJK punctuation and full-width forms are a token each too.
                if crate::text::is_cjk(c) || matches!(c as u32, 0x3000..=0x303F | 0xFF00..=0xFFEF) {
                    CJK_CHAR_WEIGHT
                } else {
                    1
                }
            })
            .sum()
    }
}

/// Sizes in whitespace-separated words, a cheap stand-in for model tokens (a model's own
/// tokenizer can implement [`SizeMeasure`] instead).
#[derive(Debug, Clone, Copy, Default)]
pub struct Words;

impl SizeMeasure for Words {
    fn size(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

/// Splits documents into chunks of at most `max_size` units, overlapping by up to `overlap`.
///
/// Paragraphs (blocks between blank lines) are kept whole where they fit; a heading (a Markdown
/// `#` line or a man-page style all-capitals line) always starts a new chunk; an oversized
/// paragraph is split at line, then word, then character boundaries.
///
/// ```
/// use rag_core::chunk::{Chunker, Document};
/// let doc = Document {
///     id: "d".into(),
///     title: "t".into(),
///     text: "NAME\nfoo\n\nDESCRIPTION\nfoo does things.".into(),
///     source: "mem://bucket/d".into(),
///     ..Default::default()
/// };
/// let chunks = Chunker::chars(1000, 0).chunk(&doc);
/// assert_eq!(chunks.len(), 2);
/// assert_eq!(chunks[1].text, "DESCRIPTION\nfoo does things.");
/// assert_eq!(&doc.text[chunks[1].start..chunks[1].end], chunks[1].text);
/// ```
pub struct Chunker {
    max_size: usize,
    overlap: usize,
    measure: Box<dyn SizeMeasure>,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("max_size", &self.max_size)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl Chunker {
    /// A chunker with sizes in characters. `max_size` is at least 1; `overlap` is capped below it.
    pub fn chars(max_size: usize, overlap: usize) -> Self {
        Self::with_measure(max_size, overlap, Box::new(Chars))
    }

    /// A chunker with sizes in whatever `measure` counts.
    pub fn with_measure(max_size: usize, overlap: usize, measure: Box<dyn SizeMeasure>) -> Self {
        let max_size = max_size.max(1);
        Self {
            max_size,
            overlap: overlap.min(max_size / 2),
            measure,
        }
    }

    /// A chunker with sizes in [`ScriptChars`]: characters, a CJK one counting as
    /// [`CJK_CHAR_WEIGHT`]. What the pipeline and the CLI use.
    pub fn script_chars(max_size: usize, overlap: usize) -> Self {
        Self::with_measure(max_size, overlap, Box::new(ScriptChars))
    }

    /// Checks a configuration read from outside; sizes in [`ScriptChars`].
    pub fn try_new(max_size: usize, overlap: usize) -> Result<Self> {
        if max_size == 0 || overlap >= max_size {
            return Err(Error::invalid(format!(
                "chunk size {max_size} must be positive and larger than overlap {overlap}"
            )));
        }
        Ok(Self::script_chars(max_size, overlap))
    }

    /// Chunks every document, in order, dropping repeated chunk ids (the same text in the same
    /// document twice).
    pub fn chunk_all(&self, docs: &[Document]) -> Vec<Chunk> {
        let mut seen = std::collections::HashSet::new();
        docs.iter()
            .flat_map(|d| self.chunk(d))
            .filter(|c| seen.insert(c.id.clone()))
            .collect()
    }

    /// Chunks one document. An empty or whitespace-only document yields no chunks.
    ///
    /// A document with [`Document::sections`] is cut at every section start first (a paragraph
    /// that straddles one is split there); without them, heading-looking lines start chunks.
    pub fn chunk(&self, doc: &Document) -> Vec<Chunk> {
        let text = doc.text.as_str();
        let mut blocks = Vec::new();
        let starts: Vec<usize> = doc
            .sections
            .iter()
            .map(|s| s.start)
            .filter(|&s| s < text.len() && text.is_char_boundary(s))
            .collect();
        for (s, e, heading) in paragraphs_in_sections(text, &starts) {
            if self.measure.size(&text[s..e]) <= self.max_size {
                blocks.push((s, e, heading));
            } else {
                for (i, (ps, pe)) in self.split_oversized(text, s, e).into_iter().enumerate() {
                    blocks.push((ps, pe, heading && i == 0));
                }
            }
        }

        let mut spans: Vec<(usize, usize)> = Vec::new();
        // Indices into `blocks` of the chunk being built.
        let mut cur: Vec<usize> = Vec::new();
        for (i, &(_, e, heading)) in blocks.iter().enumerate() {
            let fits = cur
                .first()
                .is_none_or(|&f| self.measure.size(&text[blocks[f].0..e]) <= self.max_size);
            if !cur.is_empty() && (heading || !fits) {
                let (cs, ce) = (blocks[cur[0]].0, blocks[cur[cur.len() - 1]].1);
                spans.push((cs, ce));
                cur = if heading {
                    Vec::new()
                } else {
                    self.overlap_tail(text, &blocks, &cur, e)
                };
            }
            cur.push(i);
        }
        if let (Some(&f), Some(&l)) = (cur.first(), cur.last()) {
            spans.push((blocks[f].0, blocks[l].1));
        }

        spans
            .into_iter()
            .enumerate()
            .map(|(ordinal, (start, end))| {
                let chunk_text = text[start..end].to_string();
                Chunk {
                    id: chunk_id(&doc.id, &chunk_text),
                    doc_id: doc.id.clone(),
                    title: doc.title.clone(),
                    source: doc.source.clone(),
                    text: chunk_text,
                    start,
                    end,
                    ordinal,
                    section: doc.section_at(start).join(SECTION_SEPARATOR),
                    page: doc.page_at(start),
                    page_end: doc
                        .page_at(end.saturating_sub(1))
                        .filter(|&p| Some(p) > doc.page_at(start)),
                }
            })
            .collect()
    }

    /// The trailing blocks of `cur` that fit in the overlap and, with the block ending at
    /// `next_end`, still fit in a chunk.
    fn overlap_tail(
        &self,
        text: &str,
        blocks: &[(usize, usize, bool)],
        cur: &[usize],
        next_end: usize,
    ) -> Vec<usize> {
        let mut tail = Vec::new();
        let last_end = blocks[cur[cur.len() - 1]].1;
        for &b in cur.iter().rev().take(cur.len().saturating_sub(1)) {
            let (s, _, heading) = blocks[b];
            if heading
                || self.measure.size(&text[s..last_end]) > self.overlap
                || self.measure.size(&text[s..next_end]) > self.max_size
            {
                break;
            }
            tail.push(b);
        }
        tail.reverse();
        tail
    }

    /// Splits `text[start..end]` into pieces of at most `max_size`, preferring line, then word,
    /// then character boundaries.
    fn split_oversized(&self, text: &str, start: usize, end: usize) -> Vec<(usize, usize)> {
        self.split_at_level(text, start, end, 0)
    }

    /// `level` 0 splits at lines, 1 at sentence ends (what CJK text, which has no spaces,
    /// splits at before characters), 2 at words, 3 at characters.
    fn split_at_level(
        &self,
        text: &str,
        start: usize,
        end: usize,
        level: u8,
    ) -> Vec<(usize, usize)> {
        let piece = &text[start..end];
        let atoms: Vec<(usize, usize)> = match level {
            0 => split_keep(piece, '\n'),
            1 => split_sentences(piece),
            2 => split_words(piece),
            _ => piece
                .char_indices()
                .map(|(i, c)| (i, i + c.len_utf8()))
                .collect(),
        };
        if atoms.len() <= 1 && level < 3 {
            return self.split_at_level(text, start, end, level + 1);
        }
        let mut out = Vec::new();
        let mut cur: Option<(usize, usize)> = None;
        for (a, b) in atoms {
            let (a, b) = (start + a, start + b);
            if self.measure.size(&text[a..b]) > self.max_size {
                if let Some(c) = cur.take() {
                    out.push(c);
                }
                out.extend(self.split_at_level(text, a, b, level + 1));
                continue;
            }
            cur = match cur {
                Some((cs, _)) if self.measure.size(&text[cs..b]) <= self.max_size => Some((cs, b)),
                Some(c) => {
                    out.push(c);
                    Some((a, b))
                }
                None => Some((a, b)),
            };
        }
        out.extend(cur);
        // Trim whitespace at piece edges; drop pieces that are only whitespace.
        out.into_iter()
            .filter_map(|(a, b)| {
                let p = &text[a..b];
                let lead = p.len() - p.trim_start().len();
                let trail = p.len() - p.trim_end().len();
                (lead + trail < p.len()).then_some((a + lead, b - trail))
            })
            .collect()
    }
}

impl Default for Chunker {
    /// 1,200 characters with 150 characters of overlap, in [`ScriptChars`] (400 Chinese
    /// characters).
    fn default() -> Self {
        Self::script_chars(1200, 150)
    }
}

/// Byte spans of the paragraphs of `text` (runs of non-blank lines), trimmed.
fn paragraph_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut para: Option<(usize, usize)> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let (ls, le) = (pos, pos + line.len());
        pos = le;
        if line.trim().is_empty() {
            spans.extend(para.take());
            continue;
        }
        let content_start = ls + (line.len() - line.trim_start().len());
        let content_end = le - (line.len() - line.trim_end().len());
        para = Some(match para {
            Some((s, _)) => (s, content_end),
            None => (content_start, content_end),
        });
    }
    spans.extend(para);
    spans
}

/// Paragraph spans of `text` with whether each starts a section: with section `starts`
/// (sorted byte offsets), a paragraph is cut at every start inside it and a piece starts a
/// section when a start lies between the previous piece's end and its own start; without
/// them, a paragraph starts one when its first line looks like a heading.
fn paragraphs_in_sections(text: &str, starts: &[usize]) -> Vec<(usize, usize, bool)> {
    let paragraphs = paragraph_spans(text);
    if starts.is_empty() {
        return paragraphs
            .into_iter()
            .map(|(s, e)| (s, e, is_heading(first_line(&text[s..e]))))
            .collect();
    }
    let mut out = Vec::new();
    let mut next = 0; // index into `starts` of the first start not yet passed
    let mut prev_end = 0;
    for (s, e) in paragraphs {
        let mut piece_start = s;
        loop {
            // A section start at or before this piece (and after the previous one) makes it a
            // heading; a start strictly inside cuts the piece there.
            let mut heading = false;
            while next < starts.len() && starts[next] <= piece_start {
                heading |= starts[next] >= prev_end;
                next += 1;
            }
            let cut = (next < starts.len() && starts[next] < e).then(|| starts[next]);
            let piece_end = cut.map_or(e, |c| text[piece_start..c].trim_end().len() + piece_start);
            if piece_end > piece_start {
                out.push((piece_start, piece_end, heading || out.is_empty()));
                prev_end = piece_end;
            }
            match cut {
                Some(c) => {
                    let rest = &text[c..e];
                    piece_start = c + (rest.len() - rest.trim_start().len());
                    if piece_start >= e {
                        break;
                    }
                }
                None => break,
            }
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

/// A Markdown heading, or a man-page section heading: a short line of capitals at column 0.
fn is_heading(line: &str) -> bool {
    if line.starts_with('#') {
        return true;
    }
    let t = line.trim_end();
    !t.is_empty()
        && t.len() <= 60
        && !t.starts_with(char::is_whitespace)
        && t.chars().any(|c| c.is_alphabetic())
        && t.chars()
            .all(|c| c.is_uppercase() || c.is_ascii_digit() || matches!(c, ' ' | '-' | '/' | '_'))
}

/// Spans of `s` split after each `sep` (kept with the preceding piece).
fn split_keep(s: &str, sep: char) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    for part in s.split_inclusive(sep) {
        out.push((pos, pos + part.len()));
        pos += part.len();
    }
    out
}

/// Contiguous spans of `s` cut after each sentence's end ([`crate::text::sentence_spans`]).
fn split_sentences(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (_, end) in crate::text::sentence_spans(s) {
        if end > start {
            out.push((start, end));
            start = end;
        }
    }
    match out.last_mut() {
        Some(last) => last.1 = s.len(),
        None => out.push((0, s.len())),
    }
    out
}

/// Spans of the words of `s`, each with its trailing whitespace.
fn split_words(s: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            out.push((start, i));
            start = i;
            in_space = false;
        }
    }
    if start < s.len() {
        out.push((start, s.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(text: &str) -> Document {
        Document::new("doc", "T", text, "mem://bkt/doc")
    }

    fn sectioned(text: &str, heads: &[(&str, &[&str])]) -> Document {
        let mut d = doc(text);
        d.sections = heads
            .iter()
            .map(|(at, path)| Section {
                start: text.find(at).unwrap(),
                path: path.iter().map(|p| p.to_string()).collect(),
            })
            .collect();
        d
    }

    #[test]
    fn sections_cut_chunks_and_name_them() {
        // No line here looks like a heading; the structure alone decides. The second section
        // begins inside a paragraph, which is cut there.
        let text = "Intro words.\n\nInstall it like so.\nOn Linux run make.\nmore\n\nUsage notes.";
        let d = sectioned(
            text,
            &[
                ("Install", &["Guide", "Install"]),
                ("On Linux", &["Guide", "Install", "Linux"]),
                ("Usage", &["Guide", "Usage"]),
            ],
        );
        let c = Chunker::chars(1000, 100).chunk(&d);
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.text.as_str(), c.section.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("Intro words.", ""),
                ("Install it like so.", "Guide > Install"),
                ("On Linux run make.\nmore", "Guide > Install > Linux"),
                ("Usage notes.", "Guide > Usage"),
            ]
        );
        for ch in &c {
            assert_eq!(&text[ch.start..ch.end], ch.text);
        }
        // An all-capitals line is not a heading once the parser has said where headings are.
        let caps = sectioned("Top\n\nNOTE\nsmall print", &[("Top", &["Top"])]);
        assert_eq!(Chunker::chars(1000, 0).chunk(&caps).len(), 1);
    }

    #[test]
    fn chunks_know_their_page() {
        let text = "page one text\n\npage two text\n\nstill two";
        let mut d = doc(text);
        d.pages = vec![0, text.find("page two").unwrap()];
        let c = Chunker::chars(14, 0).chunk(&d);
        let pages: Vec<_> = c.iter().map(|c| (c.page, c.page_end)).collect();
        assert_eq!(pages, [(Some(1), None), (Some(2), None), (Some(2), None)]);
        let whole = Chunker::chars(1000, 0).chunk(&d);
        assert_eq!((whole[0].page, whole[0].page_end), (Some(1), Some(2)));
        assert_eq!(Chunker::chars(14, 0).chunk(&doc(text))[0].page, None);
    }

    #[test]
    fn headings_start_new_chunks() {
        let d = doc("SYNOPSIS\n   cmd [x]\n\nDESCRIPTION\n   does it.\n\nmore words here");
        let c = Chunker::chars(1000, 100).chunk(&d);
        let texts: Vec<_> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "SYNOPSIS\n   cmd [x]",
                "DESCRIPTION\n   does it.\n\nmore words here"
            ]
        );
    }

    #[test]
    fn paragraphs_pack_up_to_the_size_and_overlap() {
        let d = doc("aaaa aaaa\n\nbbbb bbbb\n\ncccc cccc\n\ndddd dddd");
        let c = Chunker::chars(20, 9).chunk(&d);
        let texts: Vec<_> = c.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "aaaa aaaa\n\nbbbb bbbb",
                "bbbb bbbb\n\ncccc cccc",
                "cccc cccc\n\ndddd dddd"
            ]
        );
    }

    #[test]
    fn cjk_text_is_measured_in_latin_equivalents_and_split_at_sentence_ends() {
        let sentence = "复制一个文件描述符并返回新的描述符。";
        let para = sentence.repeat(40);
        let c = Chunker::default().chunk(&doc(&para));
        assert!(c.len() > 1);
        for chunk in &c {
            assert!(ScriptChars.size(&chunk.text) <= 1200);
            assert!(chunk.text.chars().count() <= 1200 / CJK_CHAR_WEIGHT);
            assert!(chunk.text.ends_with('。'), "{}", chunk.text);
        }
        // Latin text measures as plain characters, so its chunks are what they were.
        let latin = "Some words here. ".repeat(200);
        assert_eq!(ScriptChars.size(&latin), Chars.size(&latin));
        assert_eq!(
            Chunker::default().chunk(&doc(&latin)),
            Chunker::chars(1200, 150).chunk(&doc(&latin))
        );
    }

    #[test]
    fn oversized_paragraphs_split_without_losing_text() {
        let long = "word ".repeat(100);
        let c = Chunker::chars(50, 0).chunk(&doc(&long));
        assert!(c.len() >= 10);
        assert!(c.iter().all(|c| c.text.chars().count() <= 50));
        let words: usize = c.iter().map(|c| c.text.split_whitespace().count()).sum();
        assert_eq!(words, 100);
    }

    #[test]
    fn ids_depend_on_content_only() {
        let a = Chunker::default().chunk(&doc("same text"));
        let b = Chunker::default().chunk(&doc("same text"));
        assert_eq!(a[0].id, b[0].id);
        assert_ne!(a[0].id, Chunker::default().chunk(&doc("other text"))[0].id);
    }

    #[test]
    fn empty_documents_have_no_chunks() {
        assert!(Chunker::default().chunk(&doc("")).is_empty());
        assert!(Chunker::default().chunk(&doc(" \n\n\t")).is_empty());
    }

    proptest! {
        #[test]
        fn offsets_are_valid_sizes_bounded_and_every_word_covered(
            text in "[a-zA-Zé中 \\n.#]{0,400}",
            max in 1usize..80,
            overlap in 0usize..40,
        ) {
            let d = doc(&text);
            let chunks = Chunker::chars(max, overlap).chunk(&d);
            let mut covered = vec![false; text.len()];
            for c in &chunks {
                prop_assert!(c.start < c.end && c.end <= text.len());
                prop_assert_eq!(&text[c.start..c.end], c.text.as_str());
                prop_assert!(c.text.chars().count() <= max.max(1));
                covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
            }
            for (i, ch) in text.char_indices() {
                if !ch.is_whitespace() {
                    prop_assert!(covered[i], "byte {} ({:?}) not in any chunk", i, ch);
                }
            }
            for w in chunks.windows(2) {
                prop_assert!(w[0].start <= w[1].start, "chunks out of order");
            }
        }

        /// With sections anywhere (even inside words or characters), chunks stay exact
        /// slices, cover every word, and no chunk runs across a section start.
        #[test]
        fn sections_anywhere_keep_offsets_exact(
            text in "[a-zé中 \\n.]{0,300}",
            cuts in proptest::collection::vec(0usize..300, 0..6),
            max in 1usize..80,
        ) {
            let mut d = doc(&text);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= text.len()).collect();
            cuts.sort_unstable();
            cuts.dedup();
            d.sections = cuts
                .iter()
                .map(|&c| Section { start: c, path: vec![format!("s{c}")] })
                .collect();
            let chunks = Chunker::chars(max, 0).chunk(&d);
            let mut covered = vec![false; text.len()];
            for c in &chunks {
                prop_assert_eq!(&text[c.start..c.end], c.text.as_str());
                covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
                for &s in cuts.iter().filter(|&&s| text.is_char_boundary(s)) {
                    prop_assert!(!(c.start < s && s < c.end) || text[s..c.end].trim().is_empty()
                        || text[c.start..s].trim().is_empty(),
                        "chunk {}..{} runs across section start {}", c.start, c.end, s);
                }
            }
            for (i, ch) in text.char_indices() {
                if !ch.is_whitespace() {
                    prop_assert!(covered[i], "byte {} not in any chunk", i);
                }
            }
        }
    }
}
