//! Evaluation query sets: JSONL (optionally gzipped) of
//! `{"id", "text", "relevant": [doc ids], "split": "train"|"test"}`.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use rag_core::eval::EvalQuery;

/// Reads the queries of `split` (all queries when `split` is `None`).
pub fn read_queries(path: &Path, split: Option<&str>) -> Result<Vec<EvalQuery>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    parse_queries(&decode_text(&name, raw)?, &name, split)
}

/// The UTF-8 text of a file's bytes, gunzipped first when `name` ends in `.gz`.
pub fn decode_text(name: &str, raw: Vec<u8>) -> Result<String> {
    let raw = if name.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {name}"))?;
        out
    } else {
        raw
    };
    String::from_utf8(raw).with_context(|| format!("{name} is not UTF-8"))
}

/// Reads the queries of `split`, which must hold some: a split the file lacks (a typo such as
/// `--split tets`) is a usage error listing the splits it has, never an evaluation of nothing.
pub fn read_split(path: &Path, split: &str) -> Result<Vec<EvalQuery>> {
    let name = path.display().to_string();
    let raw = std::fs::read(path).with_context(|| format!("reading queries from {name}"))?;
    parse_split(&decode_text(&name, raw)?, &name, split)
}

/// [`parse_queries`] of one split that must hold some queries (see [`read_split`]).
pub fn parse_split(text: &str, name: &str, split: &str) -> Result<Vec<EvalQuery>> {
    let all = parse_queries(text, name, None)?;
    let splits: std::collections::BTreeSet<&str> = all.iter().map(|q| q.split.as_str()).collect();
    if !splits.contains(split) {
        let has: Vec<String> = splits
            .into_iter()
            .map(|s| {
                if s.is_empty() {
                    "(no \"split\" field)".to_string()
                } else {
                    s.to_string()
                }
            })
            .collect();
        return Err(crate::exit::UsageError(format!(
            "{name} has no queries of split {split:?}; its splits: {}",
            if has.is_empty() {
                "none".to_string()
            } else {
                has.join(", ")
            }
        ))
        .into());
    }
    Ok(all.into_iter().filter(|q| q.split == split).collect())
}

/// Parses JSONL query text (`name` labels errors); keeps `split` only when given.
pub fn parse_queries(text: &str, name: &str, split: Option<&str>) -> Result<Vec<EvalQuery>> {
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let q: EvalQuery =
            serde_json::from_str(line).with_context(|| format!("{name}:{}: not a query", n + 1))?;
        if split.is_none_or(|s| q.split == s) {
            out.push(q);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_the_file_lacks_is_a_usage_error_naming_the_splits() {
        // `--split nonsense` once evaluated 0 queries and exited 0.
        let text = "{\"id\":\"a\",\"text\":\"x\",\"relevant\":[\"d\"],\"split\":\"test\"}\n{\"id\":\"b\",\"text\":\"y\",\"relevant\":[\"d\"],\"split\":\"train\"}\n";
        let err = parse_split(text, "q.jsonl", "nonsense").unwrap_err();
        assert_eq!(crate::exit::code(&err), crate::exit::USAGE);
        assert_eq!(
            err.to_string(),
            "q.jsonl has no queries of split \"nonsense\"; its splits: test, train"
        );
        assert_eq!(parse_split(text, "q.jsonl", "test").unwrap().len(), 1);
    }

    #[test]
    fn reads_one_split_and_reports_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.jsonl");
        std::fs::write(
            &p,
            "{\"id\":\"a\",\"text\":\"x\",\"relevant\":[\"d\"],\"split\":\"test\"}\n\n{\"id\":\"b\",\"text\":\"y\",\"relevant\":[],\"split\":\"train\"}\n",
        )
        .unwrap();
        assert_eq!(read_queries(&p, Some("test")).unwrap().len(), 1);
        assert_eq!(read_queries(&p, None).unwrap().len(), 2);
        std::fs::write(&p, "nope\n").unwrap();
        let err = read_queries(&p, None).unwrap_err();
        assert!(format!("{err:#}").contains("q.jsonl:1"), "{err:#}");
    }
}
