//! What the bi-encoder ([`crate::SentenceEmbedder`]) and the cross-encoder
//! ([`crate::CrossEncoder`]) share around the BERT encoder: the tokenizer set up for our
//! truncation, the thread pool, int8 quantisation, model ids, and the packing of sequences
//! into batches of bounded token count.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use rag_core::{Error, Result};
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::bert::BertEncoder;
use crate::int8::{Kernel, Quantization};

/// `dir/tokenizer.json`, truncating to `max_len` tokens (longest text of a pair first) and
/// never padding: `tokenizer.json` may carry its own padding/truncation, ours are decided here.
pub(crate) fn tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&path)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    tokenizer_from(tokenizer, max_len)
}

/// `tokenizer` set up as [`tokenizer`] sets up a loaded one.
pub(crate) fn tokenizer_from(mut tokenizer: Tokenizer, max_len: usize) -> Result<Tokenizer> {
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| Error::invalid(format!("truncation: {e}")))?;
    Ok(tokenizer)
}

/// A rayon pool of `threads` threads (default: the machine's available parallelism) named
/// `<name>-<i>`, and its size.
pub(crate) fn thread_pool(
    threads: Option<usize>,
    name: &str,
) -> Result<(rayon::ThreadPool, usize)> {
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let name = name.to_string();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| Error::backend("embed-runtime", "building the thread pool", e))?;
    Ok((pool, threads))
}

/// Quantises `encoder` as asked (with `kernel`, or the fastest this CPU runs) and returns the
/// suffix its model id takes (`""` or `"-int8"`). A kernel the CPU lacks is an error.
pub(crate) fn quantize(
    encoder: &mut BertEncoder,
    quantize: Quantization,
    kernel: Option<Kernel>,
) -> Result<&'static str> {
    match quantize {
        Quantization::None => Ok(""),
        Quantization::Int8 => {
            let kernel = match kernel {
                Some(k) if !k.supported() => {
                    return Err(Error::invalid(format!(
                        "int8 kernel {k:?}: not on this CPU"
                    )));
                }
                Some(k) => k,
                None => Kernel::detect()?,
            };
            encoder.quantize_int8(kernel)?;
            Ok("-int8")
        }
    }
}

/// `id` ending in `suffix` (added once).
pub(crate) fn with_suffix(id: String, suffix: &str) -> String {
    if id.ends_with(suffix) {
        id
    } else {
        format!("{id}{suffix}")
    }
}

/// `<name>-<first 12 hex of SHA-256 over the weight files>`: the transformer's alone for a
/// model without Dense modules, so such ids do not change when heads are added elsewhere.
pub(crate) fn default_model_id(dir: &Path, weights: &[PathBuf]) -> Result<String> {
    let name = rag_core::uri::safe_segment(
        &dir.canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into()),
        '-',
    );
    let name = if name == "model" {
        // The PyPI packaging puts the model in `…/model`; the parent names it better.
        dir.canonicalize()
            .ok()
            .and_then(|p| {
                p.parent()?
                    .file_name()
                    .map(|n| n.to_string_lossy().replace('_', "-"))
            })
            .unwrap_or(name)
    } else {
        name
    };
    Ok(format!("{name}-{}", &hash_files(weights)?[..12]))
}

/// The hex SHA-256 over the files' bytes, in order.
pub(crate) fn hash_files(files: &[PathBuf]) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let mut file = std::fs::File::open(path)
            .map_err(|e| Error::not_found(format!("{}: {e}", path.display())))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| {
                Error::backend("embed-runtime", format!("reading {}", path.display()), e)
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Bytes of text tokenised before truncation to `max_len` tokens is certain to apply: a
/// longer text is cut to `max_len × 64` bytes first, and tokenised whole only when that prefix
/// came out shorter than `max_len` tokens (so the result is always exact).
pub(crate) const BYTES_PER_TOKEN_BOUND: usize = 64;

/// `text` trimmed and cut to at most `cap` bytes (on a character boundary), and whether the
/// cap cut it.
pub(crate) fn capped(text: &str, cap: usize) -> (String, bool) {
    let trimmed = text.trim();
    let mut end = trimmed.len().min(cap);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    (trimmed[..end].to_string(), end < trimmed.len())
}

/// Cuts `order` (sequence indices, longest first) into consecutive batches of at most
/// `max_tokens` tokens in all (a sequence longer than that is a batch of its own).
pub(crate) fn packed(
    order: &[usize],
    len: impl Fn(usize) -> usize,
    max_tokens: usize,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        let mut tokens = 0;
        while end < order.len() && (end == start || tokens + len(order[end]) <= max_tokens) {
            tokens += len(order[end]);
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_max_tokens_and_every_sequence_once() {
        let lens = [9, 5, 5, 4, 3, 1];
        let order: Vec<usize> = (0..lens.len()).collect();
        let batches = packed(&order, |i| lens[i], 10);
        assert_eq!(batches, vec![0..1, 1..3, 3..6]);
        // A sequence over the bound is a batch of its own.
        assert_eq!(packed(&[0, 1], |i| [20, 3][i], 10), vec![0..1, 1..2]);
        assert!(packed(&[], |_| 1, 10).is_empty());
    }

    #[test]
    fn capping_respects_character_boundaries() {
        assert_eq!(capped("  héllo  ", 2), ("h".to_string(), true));
        assert_eq!(capped("  héllo  ", 3), ("hé".to_string(), true));
        assert_eq!(capped("abc", 10), ("abc".to_string(), false));
    }
}
