//! [`SentenceEmbedder`]: a sentence-transformers model directory as a
//! [`rag_core::EmbeddingModel`] — tokenizer, BERT encoder, pooling, normalisation, prefixes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rag_core::{Embedding, EmbeddingModel, Error, Result};
use tokenizers::{Encoding, Tokenizer};

use crate::bert::{BertEncoder, Workspace};
use crate::cache::{self, PooledCache};
use crate::device::DeviceChoice;
use crate::head::{self, DenseHead};
use crate::int8::{Kernel, Quantization};
use crate::layout::{ModelLayout, Pooling};
use crate::runtime;
use crate::train::TrainableBert;

/// How a [`SentenceEmbedder`] runs. `Default` follows the model directory.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Worker threads (default: the machine's available parallelism).
    pub threads: Option<usize>,
    /// Tokens per forward pass; sequences are sorted by length and packed up to this many
    /// (no padding is ever computed). Default 8,192.
    pub max_batch_tokens: usize,
    /// Overrides `max_seq_length` of `sentence_bert_config.json` (capped by the model's
    /// position embeddings).
    pub max_seq_length: Option<usize>,
    /// Prepended to queries; `None` takes the model's `query` prompt, if any.
    pub query_prefix: Option<String>,
    /// Prepended to documents; `None` takes the model's `document` prompt, if any.
    pub document_prefix: Option<String>,
    /// The id written into Parquet metadata; default `<directory name>-<weights hash>`.
    pub model_id: Option<String>,
    /// Keep the encoder's pooled vectors under this directory ([`PooledCache`], one
    /// subdirectory per encoder): text encoded once is never encoded again, by this model or
    /// any other on the same encoder (a linear adapter trained on it).
    pub cache_dir: Option<std::path::PathBuf>,
    /// How the encoder's linear layers compute: f32 (default) or int8 ([`crate::int8`]).
    /// An int8 model's vectors differ a little from the f32 model's, so its model id (and
    /// its cache) end in `-int8`.
    pub quantize: Quantization,
    /// The int8 kernel; `None` picks the fastest this CPU runs (or `RAGLOOP_INT8_KERNEL`).
    /// A kernel the CPU lacks is an error. All kernels give the same bits.
    pub int8_kernel: Option<Kernel>,
    /// Where the encoder runs ([`crate::device`]): `Auto` (default) takes a CUDA GPU when
    /// this build has the `cuda` feature and one is visible, else the CPU's packed encoder.
    /// On a GPU the encoder is the trainer's model on candle's ops, padded per batch; its
    /// vectors equal the CPU's within f32 tolerance, so the model id is the same. int8 is a
    /// CPU path: with `quantize` int8, `Auto` stays on the CPU and `Cuda` is an error.
    pub device: DeviceChoice,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        Self {
            threads: None,
            max_batch_tokens: 8192,
            max_seq_length: None,
            query_prefix: None,
            document_prefix: None,
            model_id: None,
            cache_dir: None,
            quantize: Quantization::None,
            int8_kernel: None,
            device: DeviceChoice::Auto,
        }
    }
}

struct Inner {
    layout: ModelLayout,
    encoder: BertEncoder,
    /// The encoder on a GPU, when the device is one (else the CPU's `encoder` runs).
    device_encoder: Option<TrainableBert>,
    heads: Vec<DenseHead>,
    tokenizer: Tokenizer,
    pool: rayon::ThreadPool,
    threads: usize,
    max_len: usize,
    max_batch_tokens: usize,
    query_prefix: String,
    document_prefix: String,
    model_id: String,
    workspace: Mutex<Workspace>,
    cache: Option<PooledCache>,
    /// What identifies the tokenizer for the cache's text links: its file's hash and the
    /// sequence limit.
    tokenizer_id: cache::Key,
}

/// A sentence-transformers model (BERT encoder + pooling [+ normalisation]) on the CPU.
///
/// Cheap to clone (shared state); calls from several tasks take turns on the one thread pool.
#[derive(Clone)]
pub struct SentenceEmbedder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SentenceEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEmbedder")
            .field("model_id", &self.inner.model_id)
            .field("dims", &self.inner.layout.dims)
            .field("pooling", &self.inner.layout.pooling)
            .field("normalize", &self.inner.layout.normalize)
            .field("max_len", &self.inner.max_len)
            .field("threads", &self.inner.threads)
            .field("quantization", &self.inner.encoder.quantization())
            .field(
                "device",
                &self
                    .inner
                    .device_encoder
                    .as_ref()
                    .map_or("cpu".into(), |m| crate::device::device_name(m.device())),
            )
            .finish()
    }
}

impl SentenceEmbedder {
    /// Loads the model in `dir` with default options.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, EmbedderOptions::default())
    }

    /// Loads the model in `dir`.
    pub fn load_with(dir: &Path, options: EmbedderOptions) -> Result<Self> {
        let layout = ModelLayout::read(dir)?;
        let device = match (options.device, options.quantize) {
            (_, Quantization::None) => options.device.resolve()?,
            (DeviceChoice::Cuda(n), _) => {
                return Err(Error::invalid(format!(
                    "device cuda:{n} with int8: int8 is a CPU path (use the f32 model on a GPU)"
                )));
            }
            _ => candle_core::Device::Cpu,
        };
        let device_encoder = if device.is_cpu() {
            None
        } else {
            // The padded model of the trainer; pooling is applied below, as on the CPU.
            let (config, map) = crate::bert::load_weights(&layout.transformer_dir)?;
            Some(TrainableBert::from_tensors_on(
                config,
                map,
                Pooling::Mean,
                &device,
            )?)
        };
        let mut encoder = BertEncoder::load(&layout.transformer_dir)?;
        let suffix = runtime::quantize(&mut encoder, options.quantize, options.int8_kernel)?;
        let config = encoder.config();
        if config.hidden_size != layout.pooling_dims {
            return Err(Error::invalid(format!(
                "pooling dimension {} differs from the encoder's hidden size {}",
                layout.pooling_dims, config.hidden_size
            )));
        }
        let heads = layout
            .dense
            .iter()
            .map(DenseHead::load)
            .collect::<Result<Vec<_>>>()?;
        let max_len = options
            .max_seq_length
            .unwrap_or(layout.max_seq_length)
            .min(config.max_tokens());
        if max_len < 2 {
            return Err(Error::invalid(
                "max_seq_length must leave room for [CLS] and [SEP]",
            ));
        }
        let tokenizer = runtime::tokenizer(&layout.transformer_dir, max_len)?;
        let (pool, threads) = runtime::thread_pool(options.threads, "embed")?;
        let model_id = match options.model_id {
            Some(id) => id,
            None => {
                let mut weights = vec![layout.transformer_dir.join("model.safetensors")];
                weights.extend(layout.dense.iter().map(|d| head::weights_path(&d.dir)));
                runtime::default_model_id(dir, &weights)?
            }
        };
        let model_id = runtime::with_suffix(model_id, suffix);
        let cache = match &options.cache_dir {
            None => None,
            Some(root) => {
                // The pooled vectors depend on the encoder's weights, the pooling and nothing
                // else (the token ids, which the key holds, carry the prefix and truncation).
                let weights =
                    runtime::hash_files(&[layout.transformer_dir.join("model.safetensors")])?;
                let name =
                    format!("{}-{:?}{suffix}", &weights[..16], layout.pooling).to_lowercase();
                Some(PooledCache::open(&root.join(name), layout.pooling_dims)?)
            }
        };
        let tokenizer_id = match &cache {
            None => [0; 16],
            Some(_) => {
                let file = runtime::hash_files(&[layout.transformer_dir.join("tokenizer.json")])?;
                cache::text_key(&[0; 16], &file, &max_len.to_string())
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                query_prefix: options
                    .query_prefix
                    .or(layout.query_prefix.clone())
                    .unwrap_or_default(),
                document_prefix: options
                    .document_prefix
                    .or(layout.document_prefix.clone())
                    .unwrap_or_default(),
                layout,
                encoder,
                device_encoder,
                heads,
                tokenizer,
                pool,
                threads,
                max_len,
                max_batch_tokens: options.max_batch_tokens.max(max_len),
                model_id,
                workspace: Mutex::new(Workspace::default()),
                cache,
                tokenizer_id,
            }),
        })
    }

    /// The model directory's layout.
    pub fn layout(&self) -> &ModelLayout {
        &self.inner.layout
    }

    /// Embeds `texts` as they are (no prefix), blocking the calling thread.
    pub fn embed_raw(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        self.inner.embed(texts, "", Output::Final, Cached::Yes)
    }

    /// Embeddings as the model's last `Dense` module (or pooling) leaves them, before
    /// normalisation, with the query or document prefix; blocking. A linear adapter trains on
    /// these.
    pub fn embed_unnormalized(&self, texts: &[&str], query: bool) -> Result<Vec<Embedding>> {
        let prefix = if query {
            &self.inner.query_prefix
        } else {
            &self.inner.document_prefix
        };
        let cached = if query { Cached::No } else { Cached::Yes };
        self.inner
            .embed(texts, prefix, Output::Unnormalized, cached)
    }

    /// Pooled vectors in this model's cache ([`EmbedderOptions::cache_dir`]; 0 without one).
    pub fn cached_vectors(&self) -> usize {
        self.inner.cached()
    }

    /// Number of tokens `text` becomes (after truncation, with special tokens).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.inner.encode(&[text], "")?[0].get_ids().len())
    }
}

/// Where [`Inner::embed`] stops.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    /// The model's output (Dense modules, then normalisation if the model has it).
    Final,
    /// Before normalisation.
    Unnormalized,
}

/// Whether [`Inner::embed`] goes through the pooled-vector cache. Passages do (the corpus pass
/// is the expensive one, and the adapter and stage 5 reread it); queries do not: they are
/// cheap to encode, and a server's stream of distinct questions would grow the cache without
/// bound.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cached {
    Yes,
    No,
}

impl Inner {
    fn encode(&self, texts: &[&str], prefix: &str) -> Result<Vec<Encoding>> {
        let cap = self.max_len * runtime::BYTES_PER_TOKEN_BOUND;
        // Each input once: the prefixed, trimmed text, and whether the byte cap cut it.
        let (inputs, cut): (Vec<String>, Vec<bool>) = texts
            .iter()
            .map(|t| runtime::capped(&format!("{prefix}{t}"), cap))
            .unzip();
        let mut encodings = self
            .pool
            .install(|| self.tokenizer.encode_batch(inputs, true))
            .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
        for ((enc, t), was_cut) in encodings.iter_mut().zip(texts).zip(cut) {
            if was_cut && enc.get_ids().len() < self.max_len {
                let full = format!("{prefix}{t}");
                *enc = self
                    .tokenizer
                    .encode(full.trim(), true)
                    .map_err(|e| Error::invalid(format!("tokenizer: {e}")))?;
            }
        }
        Ok(encodings)
    }

    fn embed(
        &self,
        texts: &[&str],
        prefix: &str,
        output: Output,
        cached: Cached,
    ) -> Result<Vec<Embedding>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = match self.cache.as_ref().filter(|_| cached == Cached::Yes) {
            Some(c) => self.pooled_by_text(c, texts, prefix)?,
            None => self.pooled(&self.encode(texts, prefix)?, cached)?,
        };
        for v in &mut out {
            for head in &self.heads {
                *v = head.apply(v);
            }
            if self.layout.normalize && output == Output::Final {
                rag_core::embedding::normalize(v);
            }
        }
        Ok(out)
    }

    /// The pooled vectors of `texts` through the cache: those it links to a vector by text
    /// (`cache::text_key`) untokenised; the rest tokenised and looked up or encoded as
    /// [`pooled`](Self::pooled) does, then linked.
    fn pooled_by_text(
        &self,
        c: &PooledCache,
        texts: &[&str],
        prefix: &str,
    ) -> Result<Vec<Vec<f32>>> {
        let keys: Vec<cache::Key> = texts
            .iter()
            .map(|t| cache::text_key(&self.tokenizer_id, prefix, t))
            .collect();
        let mut out: Vec<Option<Vec<f32>>> = keys.iter().map(|k| c.get_text(k)).collect();
        let misses: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        if !misses.is_empty() {
            let miss_texts: Vec<&str> = misses.iter().map(|&i| texts[i]).collect();
            let encodings = self.encode(&miss_texts, prefix)?;
            let vectors = self.pooled(&encodings, Cached::Yes)?;
            let links: Vec<(cache::Key, cache::Key)> = misses
                .iter()
                .zip(&encodings)
                .map(|(&i, e)| (keys[i], cache::key(e.get_ids())))
                .collect();
            c.link(&links)?;
            for (&i, v) in misses.iter().zip(vectors) {
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// The pooled vector of each sequence: from the cache when it has it, else encoded (the
    /// misses sorted by length and packed into batches of `max_batch_tokens`) and cached
    /// (`Cached::No`: encoded, the cache neither read nor written).
    fn pooled(&self, encodings: &[Encoding], cached: Cached) -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); encodings.len()];
        let mut misses: Vec<(usize, Option<cache::Key>)> = Vec::new();
        let cache = self.cache.as_ref().filter(|_| cached == Cached::Yes);
        for (i, enc) in encodings.iter().enumerate() {
            match cache {
                Some(c) => {
                    let k = cache::key(enc.get_ids());
                    match c.get(&k) {
                        Some(v) => out[i] = v,
                        None => misses.push((i, Some(k))),
                    }
                }
                None => misses.push((i, None)),
            }
        }
        if misses.is_empty() {
            return Ok(out);
        }
        let mut order: Vec<usize> = misses.iter().map(|(i, _)| *i).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].get_ids().len()));
        let h = self.layout.pooling_dims;
        let mut guard = self
            .workspace
            .lock()
            .map_err(|_| Error::backend_msg("embed-runtime", "a previous call panicked"))?;
        let ws: &mut Workspace = &mut guard;
        for range in runtime::packed(
            &order,
            |i| encodings[i].get_ids().len(),
            self.max_batch_tokens,
        ) {
            let batch = &order[range];
            let seqs: Vec<&[u32]> = batch.iter().map(|&i| encodings[i].get_ids()).collect();
            if let Some(model) = &self.device_encoder {
                // Padded rows of `width` tokens: each sequence's own tokens come first.
                let (states, width) = model
                    .infer(&seqs)
                    .map_err(crate::train::model::candle("encoding on the device"))?;
                for (r, (&i, seq)) in batch.iter().zip(&seqs).enumerate() {
                    let rows = &states[r * width * h..(r * width + seq.len()) * h];
                    out[i] = pool(rows, h, self.layout.pooling);
                }
                continue;
            }
            let states = self
                .pool
                .install(|| self.encoder.forward(&seqs, &mut *ws, self.threads))?;
            let mut row = 0;
            for (&i, seq) in batch.iter().zip(&seqs) {
                let rows = &states[row * h..(row + seq.len()) * h];
                out[i] = pool(rows, h, self.layout.pooling);
                row += seq.len();
            }
        }
        if let Some(c) = cache {
            let items: Vec<(cache::Key, &[f32])> = misses
                .iter()
                .filter_map(|(i, k)| k.map(|k| (k, out[*i].as_slice())))
                .collect();
            c.insert(&items)?;
        }
        Ok(out)
    }

    /// How many pooled vectors the cache holds (0 without one).
    fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, PooledCache::len)
    }
}

fn pool(rows: &[f32], h: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => rows[..h].to_vec(),
        Pooling::Mean => {
            let mut v = vec![0.0; h];
            let n = rows.len() / h;
            for row in rows.chunks_exact(h) {
                v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            v.iter_mut().for_each(|a| *a /= n.max(1) as f32);
            v
        }
        Pooling::Max => {
            let mut v = vec![f32::NEG_INFINITY; h];
            for row in rows.chunks_exact(h) {
                v.iter_mut().zip(row).for_each(|(a, b)| *a = a.max(*b));
            }
            v
        }
    }
}

#[async_trait]
impl EmbeddingModel for SentenceEmbedder {
    fn model_id(&self) -> &str {
        &self.inner.model_id
    }

    fn dims(&self) -> usize {
        self.inner.layout.dims
    }

    fn max_input_tokens(&self) -> usize {
        self.inner.max_len
    }

    fn normalized(&self) -> bool {
        self.inner.layout.normalize
    }

    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        let inner = Arc::clone(&self.inner);
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            inner.embed(&refs, &inner.document_prefix, Output::Final, Cached::Yes)
        })
        .await
        .map_err(|e| Error::backend("embed-runtime", "embedding task failed", e))?
    }

    async fn embed_query(&self, text: &str) -> Result<Embedding> {
        let inner = Arc::clone(&self.inner);
        let text = text.to_string();
        tokio::task::spawn_blocking(move || {
            let mut v = inner.embed(&[&text], &inner.query_prefix, Output::Final, Cached::No)?;
            v.pop()
                .ok_or_else(|| Error::backend_msg("embed-runtime", "no vector returned"))
        })
        .await
        .map_err(|e| Error::backend("embed-runtime", "embedding task failed", e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes() {
        // Three tokens of width 2.
        let rows = [1.0, -2.0, 3.0, 0.0, -1.0, 5.0];
        assert_eq!(pool(&rows, 2, Pooling::Cls), vec![1.0, -2.0]);
        assert_eq!(pool(&rows, 2, Pooling::Mean), vec![1.0, 1.0]);
        assert_eq!(pool(&rows, 2, Pooling::Max), vec![3.0, 5.0]);
    }

    /// The GPU's encoder (the trainer's padded model on candle's composed ops), run here on
    /// the CPU in its place, gives the packed CPU encoder's vectors: texts of different
    /// lengths padded together, over several batches, mean and CLS pooling.
    #[test]
    fn the_device_encoder_gives_the_cpu_encoders_vectors() {
        let texts = [
            "short",
            "",
            "a somewhat longer sentence about file descriptors and pipes",
            "数据库 索引",
            "one two three four five six seven eight nine ten eleven twelve thirteen",
        ];
        for name in ["tiny-xlmr", "tiny-gte-new"] {
            let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name);
            let options = || EmbedderOptions {
                device: DeviceChoice::Cpu,
                max_batch_tokens: 16,
                ..Default::default()
            };
            let cpu = SentenceEmbedder::load_with(&dir, options()).unwrap();
            let mut gpu_path = SentenceEmbedder::load_with(&dir, options()).unwrap();
            let inner = Arc::get_mut(&mut gpu_path.inner).unwrap();
            let mut model =
                TrainableBert::load(&inner.layout.transformer_dir, Pooling::Mean).unwrap();
            model.use_portable_ops();
            inner.device_encoder = Some(model);
            let a = cpu.embed_raw(&texts).unwrap();
            let b = gpu_path.embed_raw(&texts).unwrap();
            for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                let d = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "{name} text {i}: max |Δ| {d}");
            }
        }
    }

    #[test]
    fn int8_on_a_gpu_is_refused_and_auto_stays_on_the_cpu() {
        let dir =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-xlmr");
        let options = |device| EmbedderOptions {
            device,
            quantize: Quantization::Int8,
            ..Default::default()
        };
        let err = SentenceEmbedder::load_with(&dir, options(DeviceChoice::Cuda(0))).unwrap_err();
        assert!(err.to_string().contains("int8 is a CPU path"), "{err}");
        let auto = SentenceEmbedder::load_with(&dir, options(DeviceChoice::Auto)).unwrap();
        assert!(auto.inner.device_encoder.is_none());
    }
}
