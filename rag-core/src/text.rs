//! Word tokenisation and sentence splitting shared by BM25, the hashed embedder and the
//! extractive answerer, so that all three see the same terms.

/// Lower-cased word tokens: maximal runs of alphanumeric characters or `_` (like the regex
/// `\w+`, as the reference BM25 evaluation tokenises), where scripts written without spaces
/// between words — Han, kana, Hangul ([`is_cjk`]) — are cut apart from the rest and become
/// overlapping character bigrams (`复制文件` → `复制`, `制文`, `文件`; a lone character stays a
/// unigram), as Lucene's `CJKBigramFilter` indexes them: no dictionary, any CJK language, and a
/// query's words are found inside a document's longer runs.
///
/// ```
/// let w: Vec<String> = rag_core::text::words("复制fd描述符 Dup2!").collect();
/// assert_eq!(w, ["复制", "fd", "描述", "述符", "dup2"]);
/// ```
pub fn words(text: &str) -> Words<'_> {
    Words {
        text,
        pos: 0,
        cjk: None,
    }
}

/// The iterator of [`words`].
#[derive(Debug, Clone)]
pub struct Words<'a> {
    text: &'a str,
    /// Where scanning resumes.
    pos: usize,
    /// Inside a CJK run: the next bigram's start, the run's end, and whether the run has not
    /// yet produced a token.
    cjk: Option<(usize, usize, bool)>,
}

impl Iterator for Words<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if let Some((at, end, first)) = self.cjk {
                let mut chars = self.text[at..end].chars();
                let c1 = chars.next().map_or(0, char::len_utf8);
                match chars.next() {
                    Some(c2) => {
                        self.cjk = Some((at + c1, end, false));
                        return Some(self.text[at..at + c1 + c2.len_utf8()].to_string());
                    }
                    None => {
                        self.cjk = None;
                        if first {
                            return Some(self.text[at..end].to_string());
                        }
                    }
                }
            }
            let rest = &self.text[self.pos..];
            let (skip, c) = rest.char_indices().find(|&(_, c)| is_word_char(c))?;
            let start = self.pos + skip;
            let cjk = is_cjk(c);
            let len = self.text[start..]
                .char_indices()
                .find(|&(_, d)| !is_word_char(d) || is_cjk(d) != cjk)
                .map_or(self.text.len() - start, |(i, _)| i);
            self.pos = start + len;
            if cjk {
                self.cjk = Some((start, start + len, true));
            } else {
                return Some(self.text[start..start + len].to_lowercase());
            }
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether `c` belongs to a script written without spaces between words, which [`words`]
/// cuts into character bigrams: CJK unified and compatibility ideographs (all extensions),
/// hiragana, katakana (full and half width) and Hangul.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3400..=0x4DBF         // CJK Unified Ideographs Extension A
        | 0x4E00..=0x9FFF       // CJK Unified Ideographs
        | 0xF900..=0xFAFF       // CJK Compatibility Ideographs
        | 0x20000..=0x3FFFF     // Extensions B–H, compatibility supplement
        | 0x3040..=0x30FF       // Hiragana, Katakana
        | 0x31F0..=0x31FF       // Katakana Phonetic Extensions
        | 0xFF66..=0xFF9F       // Halfwidth Katakana
        | 0x1100..=0x11FF       // Hangul Jamo
        | 0x3130..=0x318F       // Hangul Compatibility Jamo
        | 0xAC00..=0xD7AF       // Hangul Syllables
    )
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
/// after the CJK terminators `。`, `！`, `？`, `；` (and the full-width `．`) whether or not a space
/// follows, with any closing quotes or brackets right after them, and at blank lines;
/// surrounding whitespace trimmed; empty sentences dropped.
pub fn sentence_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let mut end = match c {
            '.' | '!' | '?' if next.is_none_or(char::is_whitespace) => i + 1,
            '。' | '！' | '？' | '；' | '．' => i + c.len_utf8(),
            '\n' if next == Some('\n') => i + 1,
            _ => continue,
        };
        if c != '\n' {
            while let Some(&(j, q)) = chars.peek() {
                if !matches!(
                    q,
                    '”' | '’' | '」' | '』' | '）' | '】' | '》' | '"' | '\'' | ')'
                ) {
                    break;
                }
                end = j + q.len_utf8();
                chars.next();
            }
        }
        push_trimmed(text, start, end, &mut spans);
        start = end;
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
        let t = "复制文件描述符。它返回新的描述符！见“dup2。”对吗？是；v1.2 不拆";
        let s: Vec<_> = sentence_spans(t)
            .into_iter()
            .map(|(a, b)| &t[a..b])
            .collect();
        assert_eq!(
            s,
            [
                "复制文件描述符。",
                "它返回新的描述符！",
                "见“dup2。”",
                "对吗？",
                "是；",
                "v1.2 不拆"
            ]
        );
    }

    #[test]
    fn cjk_runs_become_bigrams_apart_from_latin_words() {
        let w: Vec<_> =
            words("如何复制文件描述符? 用dup2()或 ls。한국어 日本語のテキスト 字").collect();
        assert_eq!(
            w,
            [
                "如何", "何复", "复制", "制文", "文件", "件描", "描述", "述符", "用", "dup2", "或",
                "ls", "한국", "국어", "日本", "本語", "語の", "のテ", "テキ", "キス", "スト", "字"
            ]
        );
        // A query's bigrams are found inside the document's longer run.
        let doc: Vec<_> = words("列出目录内容").collect();
        assert!(words("目录").all(|t| doc.contains(&t)));
        assert_eq!(words("").count(), 0);
        assert_eq!(words("— ，。").count(), 0);
        // Latin text tokenises as before.
        let w: Vec<_> = words("naïve_x 3.14 Ünïcode").collect();
        assert_eq!(w, ["naïve_x", "3", "14", "ünïcode"]);
    }
}
