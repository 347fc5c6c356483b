//! Checking, splitting and writing the dataset (`train.jsonl`, `validation.jsonl`,
//! `manifest.json`).

use super::generate::is_refusal;
use super::*;

/// The example as the model sees it in training: system, the RAG prompt over its chunk, the
/// answer.
pub fn messages(pair: &QaPair) -> Vec<Message> {
    let context = [ContextChunk {
        id: pair.chunk_id.clone(),
        text: pair.context.clone(),
    }];
    let mut m = rag_request(&context, &pair.question).messages;
    if m.first().is_none_or(|m| m.content != SYSTEM_PROMPT) {
        m.insert(0, Message::system(SYSTEM_PROMPT));
    }
    m.push(Message::assistant(pair.answer.clone()));
    m
}

/// One JSONL line: `{"messages": [{"role": "system", …}, {"role": "user", …},
/// {"role": "assistant", …}]}`.
pub fn messages_line(pair: &QaPair) -> String {
    #[derive(Serialize)]
    struct Line {
        messages: Vec<Message>,
    }
    serde_json::to_string(&Line {
        messages: messages(pair),
    })
    .expect("strings serialise")
}

/// Keeps the usable pairs and splits them: empty, refused, uncited (with
/// `require_citation`), duplicate-question and too-long examples are dropped (with the reason);
/// a document's examples go to validation when the hash of its id falls in
/// `validation_fraction` (so no document is on both sides, and the split is stable).
pub fn validate(pairs: Vec<QaPair>, options: &QaOptions) -> QaDataset {
    let mut out = QaDataset::default();
    let mut seen = HashSet::new();
    for pair in pairs {
        let why = if pair.answer.trim().is_empty() {
            Some(Drop::EmptyAnswer)
        } else if is_refusal(&pair.answer) {
            Some(Drop::Refused)
        } else if options.require_citation
            && cited_ids(&pair.answer, [pair.chunk_id.as_str()]).is_empty()
        {
            Some(Drop::Uncited)
        } else if !seen.insert(pair.question.trim().to_lowercase()) {
            Some(Drop::Duplicate)
        } else {
            let tokens: usize = messages(&pair)
                .iter()
                .map(|m| (options.count_tokens)(&m.content))
                .sum();
            (tokens > options.max_tokens).then_some(Drop::TooLong(tokens))
        };
        match why {
            Some(why) => out.dropped.push(Dropped {
                chunk_id: pair.chunk_id.clone(),
                question: Some(pair.question.clone()),
                why,
            }),
            None if in_validation(&pair.doc_id, options.validation_fraction) => {
                out.validation.push(pair)
            }
            None => out.train.push(pair),
        }
    }
    out
}

pub(super) fn in_validation(doc_id: &str, fraction: f64) -> bool {
    let h = Sha256::digest(doc_id.as_bytes());
    let x = u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64;
    x < fraction
}

/// What `manifest.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// `ragloop-qa-pairs/1`.
    pub format: String,
    /// Training examples.
    pub train: usize,
    /// Validation examples.
    pub validation: usize,
    /// Dropped examples per reason.
    pub dropped: BTreeMap<String, usize>,
    /// SHA-256 over the chunk ids the dataset was built from, in order (changes when the
    /// corpus or the chunking does).
    pub corpus_hash: String,
    /// The model that wrote questions and answers (or `user` for given pairs).
    pub generator: String,
    /// Chat tokens spent.
    pub usage: Usage,
}

/// SHA-256 (hex) over the chunk ids in order.
pub fn corpus_hash(chunks: &[Chunk]) -> String {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c.id.as_bytes());
        h.update(b"\n");
    }
    hex_string(&h.finalize())
}

pub(super) fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `train.jsonl`, `validation.jsonl` (when any) and `manifest.json` under `prefix`;
/// the manifest last, so its presence means the dataset is whole. Refuses an empty training
/// set.
pub async fn write_dataset(
    store: &dyn ObjectStore,
    prefix: &StoreUri,
    dataset: &QaDataset,
    corpus_hash: &str,
    generator: &str,
) -> Result<Manifest> {
    if dataset.train.is_empty() {
        return Err(Error::invalid(format!(
            "no training examples left ({} dropped: {:?})",
            dataset.dropped.len(),
            dataset.dropped_by_reason()
        )));
    }
    let prefix = prefix.as_prefix();
    let jsonl = |pairs: &[QaPair]| {
        let mut s = String::new();
        for p in pairs {
            s.push_str(&messages_line(p));
            s.push('\n');
        }
        bytes::Bytes::from(s)
    };
    store
        .put(&prefix.join("train.jsonl")?, jsonl(&dataset.train))
        .await?;
    if !dataset.validation.is_empty() {
        store
            .put(
                &prefix.join("validation.jsonl")?,
                jsonl(&dataset.validation),
            )
            .await?;
    }
    let manifest = Manifest {
        format: "ragloop-qa-pairs/1".into(),
        train: dataset.train.len(),
        validation: dataset.validation.len(),
        dropped: dataset
            .dropped_by_reason()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        corpus_hash: corpus_hash.to_string(),
        generator: generator.to_string(),
        usage: dataset.usage,
    };
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::invalid(format!("manifest: {e}")))?;
    store
        .put(&prefix.join("manifest.json")?, body.into())
        .await?;
    Ok(manifest)
}
