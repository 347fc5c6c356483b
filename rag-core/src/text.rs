//! Word tokenisation and sentence splitting shared by BM25, the hashed embedder and the
//! extractive answerer, so that all three see the same terms.

/// Lower-cased word tokens: maximal runs of alphanumeric characters or `_` (like the regex
/// `\w+`, as the reference BM25 evaluation tokenises).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// How a full-text field is cut into terms: at index time and, the same way, at query time.
/// An index records its analyzer in its [`IndexSchema`](crate::IndexSchema), so a query is
/// always analysed as the documents were.
///
/// ```
/// use rag_core::Analyzer;
///
/// let terms: Vec<String> = Analyzer::English.terms("Duplicating descriptors").collect();
/// assert_eq!(terms, ["duplic", "descriptor"]);
/// let terms: Vec<String> = Analyzer::Standard.terms("Duplicating descriptors").collect();
/// assert_eq!(terms, ["duplicating", "descriptors"]);
/// ```
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Analyzer {
    /// [`words`]: lower-cased alphanumeric runs, nothing else. What indexes made before
    /// analyzers were recorded use.
    #[default]
    Standard,
    /// [`words`], then each word of ASCII letters reduced to its Snowball English stem
    /// (`duplicates`, `duplicated` → `duplic`), as Lucene's and Elasticsearch's `english`
    /// analyzer stems: a query then matches the other forms of its words. Words in other
    /// scripts, and words with digits or `_`, are kept as they are.
    English,
}

impl Analyzer {
    /// The terms of `text`.
    pub fn terms(self, text: &str) -> Box<dyn Iterator<Item = String> + '_> {
        match self {
            Self::Standard => Box::new(words(text)),
            Self::English => {
                let stemmer = rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English);
                Box::new(words(text).map(move |w| {
                    if w.bytes().all(|b| b.is_ascii_lowercase()) {
                        stemmer.stem(&w).into_owned()
                    } else {
                        w
                    }
                }))
            }
        }
    }

    /// The name used in configuration files and schemas (`standard`, `english`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::English => "english",
        }
    }
}

impl std::fmt::Display for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Analyzer {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "standard" => Ok(Self::Standard),
            "english" => Ok(Self::English),
            other => Err(crate::Error::invalid(format!(
                "unknown analyzer {other:?} (standard, english)"
            ))),
        }
    }
}

/// Byte ranges of the sentences of `text`: split after `.`, `!`, `?` followed by whitespace,
/// and at blank lines; surrounding whitespace trimmed; empty sentences dropped.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let end_here = match b {
            b'.' | b'!' | b'?' => bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()),
            b'\n' => bytes.get(i + 1) == Some(&b'\n'),
            _ => false,
        };
        if end_here {
            push_trimmed(text, start, i + 1, &mut spans);
            start = i + 1;
        }
        i += 1;
    }
    push_trimmed(text, start, text.len(), &mut spans);
    spans
}

fn push_trimmed(text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    let trail = piece.len() - piece.trim_end().len();
    if lead + trail < piece.len() {
        out.push((start + lead, end - trail));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lowercase_alphanumeric_runs() {
        let w: Vec<_> = words("Use dup2() — or DUP3_flags, naïve 中文!").collect();
        assert_eq!(w, ["use", "dup2", "or", "dup3_flags", "naïve", "中文"]);
    }

    #[test]
    fn the_english_analyzer_stems_ascii_words_and_keeps_the_rest() {
        let t: Vec<_> = Analyzer::English
            .terms("Converts encodings; dup2 DUP3_flags naïve 中文 running")
            .collect();
        assert_eq!(
            t,
            [
                "convert",
                "encod",
                "dup2",
                "dup3_flags",
                "naïve",
                "中文",
                "run"
            ]
        );
        // A query's forms meet the document's.
        let q: Vec<_> = Analyzer::English.terms("convert encoding").collect();
        assert_eq!(q, ["convert", "encod"]);
        for a in [Analyzer::Standard, Analyzer::English] {
            assert_eq!(a.name().parse::<Analyzer>().unwrap(), a);
        }
        assert!("klingon".parse::<Analyzer>().is_err());
    }

    #[test]
    fn sentences_split_on_terminators_and_blank_lines() {
        let t = "First one. Second?\n\nThird line v1.2 stays\nwhole";
        let s: Vec<_> = sentence_spans(t)
            .into_iter()
            .map(|(a, b)| &t[a..b])
            .collect();
        assert_eq!(s, ["First one.", "Second?", "Third line v1.2 stays\nwhole"]);
    }
}
