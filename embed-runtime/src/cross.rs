//! [`CrossEncoder`]: a sentence-transformers CrossEncoder directory (a BERT, XLM-RoBERTa or GTE
//! sequence classifier with one output, e.g. bge-reranker) as a [`rag_core::Reranker`]. The
//! query and the passage are read together as one sequence (`[CLS] query [SEP] passage [SEP]`,
//! the passage's tokens of type 1; XLM-R's `<s> query </s></s> passage </s>`); the first
//! token's state goes through BERT's pooler (dense + tanh) and the classifier (RoBERTa's
//! classification head: the same two steps), and the logit through the model's activation
//! (sigmoid unless the directory says otherwise).
//!
//! It runs on the bi-encoder's engine: pairs sorted by length and packed without padding,
//! the same kernels and threads, optional int8.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rag_core::rerank::{Reranker, check_query};
use rag_core::{Error, Result};
use serde_json::Value;
use tokenizers::{EncodeInput, Encoding, Tokenizer};

use crate::bert::{self, BertEncoder, Workspace};
use crate::int8::{Kernel, Quantization};
use crate::layout::read_json;
use crate::runtime;

/// How a [`CrossEncoder`] runs. `Default` follows the model directory.
#[derive(Debug, Clone)]
pub struct CrossEncoderOptions {
    /// Worker threads (default: the machine's available parallelism).
    pub threads: Option<usize>,
    /// Tokens per forward pass (pairs are sorted by length and packed up to this many).
    /// Default 8,192.
    pub max_batch_tokens: usize,
    /// Overrides the model's maximum pair length (capped by its position embeddings).
    pub max_seq_length: Option<usize>,
    /// The model id; default `<directory name>-<weights hash>`.
    pub model_id: Option<String>,
    /// How the encoder's linear layers compute: f32 (default) or int8 ([`crate::int8`]).
    pub quantize: Quantization,
    /// The int8 kernel; `None` picks the fastest this CPU runs.
    pub int8_kernel: Option<Kernel>,
}

impl Default for CrossEncoderOptions {
    fn default() -> Self {
        Self {
            threads: None,
            max_batch_tokens: 8192,
            max_seq_length: None,
            model_id: None,
            quantize: Quantization::None,
            int8_kernel: None,
        }
    }
}

/// What turns the classifier's logit into the score (sentence-transformers' `activation_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreActivation {
    /// `1 / (1 + e^-x)`: sentence-transformers' default for one label.
    Sigmoid,
    /// The logit itself.
    Identity,
    /// `tanh(x)`.
    Tanh,
}

impl ScoreActivation {
    /// The activation named by its torch class path (`torch.nn.modules.activation.Sigmoid`,
    /// `torch.nn.modules.linear.Identity`, `torch.nn.modules.activation.Tanh`).
    pub fn from_torch(path: &str) -> Result<Self> {
        match path.rsplit('.').next().unwrap_or(path) {
            "Sigmoid" => Ok(Self::Sigmoid),
            "Identity" => Ok(Self::Identity),
            "Tanh" => Ok(Self::Tanh),
            _ => Err(Error::invalid(format!(
                "activation_fn {path:?} is not supported (Sigmoid, Identity or Tanh)"
            ))),
        }
    }

    /// The torch class path sentence-transformers writes for it.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::Sigmoid => "torch.nn.modules.activation.Sigmoid",
            Self::Identity => "torch.nn.modules.linear.Identity",
            Self::Tanh => "torch.nn.modules.activation.Tanh",
        }
    }

    /// Applies it to a logit.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Self::Identity => x,
            Self::Tanh => x.tanh(),
        }
    }
}

/// BERT's pooler (dense + tanh on the `[CLS]` state) and the one-output classifier, or
/// RoBERTa's classification head (the same two steps).
struct Head {
    /// `h × h`, row `j` = the weights of output `j`.
    pooler_w: Vec<f32>,
    pooler_b: Vec<f32>,
    classifier_w: Vec<f32>,
    classifier_b: f32,
}

impl Head {
    fn logit(&self, cls: &[f32]) -> f32 {
        let h = cls.len();
        let mut logit = self.classifier_b;
        for (j, row) in self.pooler_w.chunks_exact(h).enumerate() {
            let z: f32 = row.iter().zip(cls).map(|(w, x)| w * x).sum::<f32>() + self.pooler_b[j];
            logit += self.classifier_w[j] * z.tanh();
        }
        logit
    }
}

struct Inner {
    encoder: BertEncoder,
    head: Head,
    activation: ScoreActivation,
    tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
    threads: usize,
    max_len: usize,
    max_batch_tokens: usize,
    model_id: String,
    workspace: Mutex<Workspace>,
    truncated: AtomicU64,
}

/// A cross-encoder reranker on the CPU (see the module docs).
///
/// ```no_run
/// use embed_runtime::CrossEncoder;
/// use rag_core::rerank::Reranker;
///
/// # async fn demo() -> rag_core::Result<()> {
/// let model = CrossEncoder::load("models/reranker".as_ref())?;
/// let passages = vec![
///     "close() closes a file descriptor".to_string(),
///     "dup() duplicates a file descriptor".to_string(),
/// ];
/// let best = model.rerank("how do I copy a file descriptor?", &passages, 1).await?;
/// println!("passage {} scores {:.3}", best[0].index, best[0].score);
/// # Ok(()) }
/// ```
///
/// Cheap to clone (shared state); calls from several tasks take turns on the one thread pool.
#[derive(Clone)]
pub struct CrossEncoder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("model_id", &self.inner.model_id)
            .field("activation", &self.inner.activation)
            .field("max_len", &self.inner.max_len)
            .field("threads", &self.inner.threads)
            .field("quantization", &self.inner.encoder.quantization())
            .finish()
    }
}

/// Whether `dir/config.json` describes a sequence classifier; the error names what it is
/// instead (a sentence-transformers bi-encoder is the usual mix-up).
fn check_kind(dir: &Path, config: &Value) -> Result<()> {
    let architectures: Vec<&str> = config["architectures"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if architectures
        .iter()
        .any(|a| a.ends_with("ForSequenceClassification"))
    {
        return Ok(());
    }
    let what = if dir.join("modules.json").exists() && dir.join("1_Pooling").exists() {
        "a sentence-transformers embedding model (bi-encoder)".to_string()
    } else if architectures.is_empty() {
        "a model without `architectures` in config.json".to_string()
    } else {
        format!("a {} model", architectures.join("/"))
    };
    Err(Error::invalid(format!(
        "{} holds {what}, not a cross-encoder (a BERT or XLM-RoBERTa sequence classifier, \
         e.g. BertForSequenceClassification with one label)",
        dir.display()
    )))
}

/// The number of labels: `num_labels`, else the size of `id2label` (as transformers reads it),
/// else 2 (transformers' default).
fn num_labels(config: &Value) -> usize {
    config["num_labels"]
        .as_u64()
        .map(|n| n as usize)
        .or_else(|| config["id2label"].as_object().map(|m| m.len()))
        .unwrap_or(2)
}

/// The activation sentence-transformers would apply: `config_sentence_transformers.json`'s
/// `activation_fn` (v5+), `config.json`'s `sentence_transformers.activation_fn` (v4) or
/// `sbert_ce_default_activation_function` (before v4), else sigmoid for one label.
fn activation(dir: &Path, config: &Value) -> Result<ScoreActivation> {
    let st_path = dir.join("config_sentence_transformers.json");
    let st: Value = if st_path.exists() {
        read_json(&st_path)?
    } else {
        Value::Null
    };
    let named = st["activation_fn"]
        .as_str()
        .or_else(|| config["sentence_transformers"]["activation_fn"].as_str())
        .or_else(|| config["sbert_ce_default_activation_function"].as_str());
    named.map_or(Ok(ScoreActivation::Sigmoid), ScoreActivation::from_torch)
}

/// The longest pair the model reads: `sentence_bert_config.json`'s `max_seq_length`, else
/// the tokenizer's `model_max_length`, else the position embeddings.
fn max_length(dir: &Path) -> Result<Option<usize>> {
    let sbert = dir.join("sentence_bert_config.json");
    if sbert.exists() {
        let v: Value = read_json(&sbert)?;
        if let Some(n) = v["max_seq_length"].as_u64() {
            return Ok(Some(n as usize));
        }
    }
    crate::layout::tokenizer_max_length(dir)
}

impl CrossEncoder {
    /// Loads the cross-encoder in `dir` with default options.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, CrossEncoderOptions::default())
    }

    /// Loads the cross-encoder in `dir`: `config.json` (a BERT sequence classifier with one
    /// label), `model.safetensors`, `tokenizer.json`, and sentence-transformers' settings
    /// when present. Another kind of directory is [`Error::InvalidInput`] saying what it is.
    pub fn load_with(dir: &Path, options: CrossEncoderOptions) -> Result<Self> {
        let raw: Value = read_json(&dir.join("config.json"))?;
        check_kind(dir, &raw)?;
        let labels = num_labels(&raw);
        if labels != 1 {
            return Err(Error::invalid(format!(
                "{}: the classifier has {labels} labels; a reranker needs one relevance score",
                dir.display()
            )));
        }
        let activation = activation(dir, &raw)?;
        let (config, map) = bert::load_weights(dir)?;
        let h = config.hidden_size;
        // BERT: the pooler, then `classifier`; RoBERTa's classification head is the same
        // two steps under other names (`classifier.dense`, tanh, `classifier.out_proj`).
        let prefix = match config.weight_prefix(|k| map.contains_key(k)) {
            "" => config.classifier_prefix(),
            found => found,
        };
        let [dense, out] = config.family()?.classifier_head(prefix);
        let head = Head {
            pooler_w: bert::tensor_f32(&map, &format!("{dense}.weight"), &[h, h])?,
            pooler_b: bert::tensor_f32(&map, &format!("{dense}.bias"), &[h])?,
            classifier_w: bert::tensor_f32(&map, &format!("{out}.weight"), &[1, h])?,
            classifier_b: bert::tensor_f32(&map, &format!("{out}.bias"), &[1])?[0],
        };
        let mut encoder = BertEncoder::from_tensors(config, map)?;
        let suffix = runtime::quantize(&mut encoder, options.quantize, options.int8_kernel)?;
        let positions = encoder.config().max_tokens();
        let max_len = options
            .max_seq_length
            .or(max_length(dir)?)
            .unwrap_or(positions)
            .min(positions);
        if max_len < 3 {
            return Err(Error::invalid(
                "max_seq_length must leave room for [CLS] and two [SEP]",
            ));
        }
        let tokenizer = runtime::tokenizer(dir, max_len)?;
        let (pool, threads) = runtime::thread_pool(options.threads, "rerank")?;
        let model_id = match options.model_id {
            Some(id) => id,
            None => runtime::default_model_id(dir, &[dir.join("model.safetensors")])?,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                encoder,
                head,
                activation,
                tokenizer,
                pool,
                threads,
                max_len,
                max_batch_tokens: options.max_batch_tokens.max(max_len),
                model_id: runtime::with_suffix(model_id, suffix),
                workspace: Mutex::new(Workspace::default()),
                truncated: AtomicU64::new(0),
            }),
        })
    }

    /// Scores of the pairs (query, passage), after the activation; blocking.
    pub fn predict(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        let a = self.inner.activation;
        Ok(self
            .inner
            .logits(pairs)?
            .into_iter()
            .map(|x| a.apply(x))
            .collect())
    }

    /// The classifier's raw outputs for the pairs, before the activation; blocking.
    pub fn logits(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        self.inner.logits(pairs)
    }

    /// Tokens the pair becomes (after truncation, with special tokens).
    pub fn count_tokens(&self, query: &str, passage: &str) -> Result<usize> {
        Ok(self.inner.encode(&[(query, passage)])?[0].get_ids().len())
    }

    /// Pairs this model cut to its maximum length since it was loaded.
    pub fn truncated_pairs(&self) -> u64 {
        self.inner.truncated.load(Ordering::Relaxed)
    }

    /// The longest pair it reads, in tokens.
    pub fn max_seq_length(&self) -> usize {
        self.inner.max_len
    }

    /// The activation applied to the logits.
    pub fn activation(&self) -> ScoreActivation {
        self.inner.activation
    }
}

impl Inner {
    /// The pairs' encodings, truncated longest text first to `max_len` (an empty passage
    /// still makes a pair, `[CLS] query [SEP] [SEP]`, as sentence-transformers encodes it).
    fn encode(&self, pairs: &[(&str, &str)]) -> Result<Vec<Encoding>> {
        let cap = self.max_len * runtime::BYTES_PER_TOKEN_BOUND;
        let mut cut = Vec::with_capacity(pairs.len());
        let inputs: Vec<EncodeInput<'static>> = pairs
            .iter()
            .map(|(q, d)| {
                let (q, cut_q) = runtime::capped(q, cap);
                let (d, cut_d) = runtime::capped(d, cap);
                cut.push(cut_q || cut_d);
                (q, d).into()
            })
            .collect();
        let mut encodings = self
            .pool
            .install(|| self.tokenizer.encode_batch(inputs, true))
            .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
        let mut truncated = 0;
        for ((enc, (q, d)), was_cut) in encodings.iter_mut().zip(pairs).zip(cut) {
            if was_cut && enc.get_ids().len() < self.max_len {
                *enc = self
                    .tokenizer
                    .encode((q.trim(), d.trim()), true)
                    .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
            }
            if was_cut && enc.get_ids().len() >= self.max_len || !enc.get_overflowing().is_empty() {
                truncated += 1;
            }
        }
        self.truncated.fetch_add(truncated, Ordering::Relaxed);
        Ok(encodings)
    }

    fn logits(&self, pairs: &[(&str, &str)]) -> Result<Vec<f32>> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.encode(pairs)?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].get_ids().len()));
        let h = self.encoder.config().hidden_size;
        let mut out = vec![0.0; pairs.len()];
        let mut guard = self
            .workspace
            .lock()
            .map_err(|_| Error::backend_msg("embed-runtime", "a previous call panicked"))?;
        let ws: &mut Workspace = &mut guard;
        let len = |i: usize| encodings[i].get_ids().len();
        for range in runtime::packed(&order, len, self.max_batch_tokens) {
            let batch = &order[range];
            let seqs: Vec<&[u32]> = batch.iter().map(|&i| encodings[i].get_ids()).collect();
            let types: Vec<&[u32]> = batch.iter().map(|&i| encodings[i].get_type_ids()).collect();
            let states = self.pool.install(|| {
                self.encoder
                    .forward_typed(&seqs, Some(&types), &mut *ws, self.threads)
            })?;
            let mut row = 0;
            for (&i, seq) in batch.iter().zip(&seqs) {
                out[i] = self.head.logit(&states[row * h..(row + 1) * h]);
                row += seq.len();
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Reranker for CrossEncoder {
    async fn score(&self, query: &str, documents: &[String]) -> Result<Vec<f32>> {
        check_query(query)?;
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let this = self.clone();
        let query = query.to_string();
        let documents = documents.to_vec();
        tokio::task::spawn_blocking(move || {
            let pairs: Vec<(&str, &str)> = documents
                .iter()
                .map(|d| (query.as_str(), d.as_str()))
                .collect();
            this.predict(&pairs)
        })
        .await
        .map_err(|e| Error::backend("embed-runtime", "rerank task failed", e))?
    }

    fn model_id(&self) -> String {
        self.inner.model_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_follow_torch() {
        assert_eq!(
            ScoreActivation::from_torch("torch.nn.modules.activation.Sigmoid").unwrap(),
            ScoreActivation::Sigmoid
        );
        for a in [
            ScoreActivation::Sigmoid,
            ScoreActivation::Identity,
            ScoreActivation::Tanh,
        ] {
            assert_eq!(ScoreActivation::from_torch(a.torch_name()).unwrap(), a);
        }
        assert!(ScoreActivation::from_torch("my.module.Softplus").is_err());
        assert!((ScoreActivation::Sigmoid.apply(0.0) - 0.5).abs() < 1e-7);
        assert_eq!(ScoreActivation::Identity.apply(-2.5), -2.5);
    }

    #[test]
    fn labels_are_read_as_transformers_does() {
        assert_eq!(num_labels(&serde_json::json!({"num_labels": 1})), 1);
        assert_eq!(
            num_labels(&serde_json::json!({"id2label": {"0": "a", "1": "b", "2": "c"}})),
            3
        );
        assert_eq!(num_labels(&serde_json::json!({})), 2);
    }
}
