//! Word tokenisation and sentence splitting shared by BM25, the hashed embedder and the
//! extractive answerer, so that all three see the same terms.

/// Lower-cased word tokens: maximal runs of alphanumeric characters or `_` (like the regex
/// `\w+`, as the reference BM25 evaluation tokenises).
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
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
    fn sentences_split_on_terminators_and_blank_lines() {
        let t = "First one. Second?\n\nThird line v1.2 stays\nwhole";
        let s: Vec<_> = sentence_spans(t)
            .into_iter()
            .map(|(a, b)| &t[a..b])
            .collect();
        assert_eq!(s, ["First one.", "Second?", "Third line v1.2 stays\nwhole"]);
    }
}
