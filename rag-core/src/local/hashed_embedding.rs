use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::embedding::{Embedding, EmbeddingModel, normalize};
use crate::error::{Error, Result};
use crate::store::ObjectStore;
use crate::text::words;
use crate::uri::StoreUri;

/// File names of a saved model under its directory.
const CONFIG_FILE: &str = "hashed-embedding.json";
const IDF_FILE: &str = "idf.f32";

/// Settings of a [`HashedEmbedding`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashedEmbeddingConfig {
    /// Output dimension.
    pub dims: usize,
    /// Size of the IDF table (features are hashed into this many weight slots).
    pub idf_slots: usize,
    /// Whether word bigrams are features too (besides words).
    pub bigrams: bool,
    /// Words beyond this many are ignored.
    pub max_words: usize,
}

impl Default for HashedEmbeddingConfig {
    fn default() -> Self {
        Self {
            dims: 768,
            idf_slots: 1 << 18,
            bigrams: false,
            max_words: 8192,
        }
    }
}

/// A cheap, deterministic [`EmbeddingModel`]: signed feature hashing of words (and optionally
/// word bigrams) into `dims` buckets, then L2 normalisation. Passages weigh each feature by
/// `1 + ln tf`; queries by `(1 + ln tf) · idf`, so the inner product weighs each shared term by
/// its IDF once, as BM25 does.
///
/// Untrained, every IDF is 1. [`HashedEmbedding::fit`] learns IDF weights from a corpus — the
/// local pipeline's "train embeddings" job — so queries weigh domain terms (`fcntl`,
/// `setsockopt`) above common ones. IDF on the passage side too would square it, and in a
/// hashed space the passages' rare terms then drown the rest (measured on the man pages:
/// nDCG@10 0.29 against 0.36). Needs no weights to download, so tests run in seconds; the
/// neural model comes with `embed-runtime`.
#[derive(Debug, Clone)]
pub struct HashedEmbedding {
    config: HashedEmbeddingConfig,
    idf: Option<Arc<Vec<f32>>>,
    model_id: String,
}

/// 64-bit FNV-1a, then a SplitMix64 finaliser for well-spread bits. Stable across platforms
/// and releases, unlike `std`'s hasher, because saved IDF tables depend on it.
fn hash_feature(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h = (h ^ 0x1f).wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in p.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl HashedEmbedding {
    /// An untrained model (all IDF weights 1).
    pub fn new(config: HashedEmbeddingConfig) -> Result<Self> {
        if config.dims == 0 || config.idf_slots == 0 {
            return Err(Error::invalid("dims and idf_slots must be positive"));
        }
        if config.dims > crate::index::MAX_DIMS || config.idf_slots > 1 << 26 {
            return Err(Error::invalid(format!(
                "dims {} (at most {}) or idf_slots {} (at most 2^26) is too large",
                config.dims,
                crate::index::MAX_DIMS,
                config.idf_slots
            )));
        }
        let mut model = Self {
            config,
            idf: None,
            model_id: String::new(),
        };
        model.model_id = model.compute_id();
        Ok(model)
    }

    /// The model's settings.
    pub fn config(&self) -> &HashedEmbeddingConfig {
        &self.config
    }

    /// Counts of each feature hash in `text`, in hash order: the vector's sums then add in the
    /// same order in every process, so embeddings are identical bit for bit (a `HashMap`'s
    /// per-process order changed last bits, and re-embedding after a restart rewrote shards).
    fn features(&self, text: &str) -> BTreeMap<u64, f32> {
        let ws: Vec<String> = words(text).take(self.config.max_words).collect();
        let mut tf: BTreeMap<u64, f32> = BTreeMap::new();
        for w in &ws {
            *tf.entry(hash_feature(&[w])).or_default() += 1.0;
        }
        if self.config.bigrams {
            for pair in ws.windows(2) {
                *tf.entry(hash_feature(&[&pair[0], &pair[1]])).or_default() += 1.0;
            }
        }
        tf
    }

    fn idf_slot(&self, h: u64) -> usize {
        (h.rotate_left(29) % self.config.idf_slots as u64) as usize
    }

    /// Embeds a passage synchronously: sublinear term frequencies only.
    pub fn embed(&self, text: &str) -> Embedding {
        self.embed_weighted(text, false)
    }

    /// Embeds a query synchronously: term frequencies times IDF.
    pub fn embed_query_sync(&self, text: &str) -> Embedding {
        self.embed_weighted(text, true)
    }

    fn embed_weighted(&self, text: &str, with_idf: bool) -> Embedding {
        let mut v = vec![0.0f32; self.config.dims];
        for (h, tf) in self.features(text) {
            let idf = match (&self.idf, with_idf) {
                (Some(t), true) => t[self.idf_slot(h)],
                _ => 1.0,
            };
            let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
            v[(h % self.config.dims as u64) as usize] += sign * (1.0 + tf.ln()) * idf;
        }
        normalize(&mut v);
        v
    }

    /// Learns IDF weights from `documents` (smoothed: `ln((1 + n) / (1 + df)) + 1`).
    pub fn fit<'a>(
        config: HashedEmbeddingConfig,
        documents: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self> {
        let base = Self::new(config)?;
        let mut df = vec![0u32; base.config.idf_slots];
        let mut n = 0u32;
        let mut seen = Vec::new();
        for doc in documents {
            n += 1;
            seen.clear();
            seen.extend(base.features(doc).into_keys().map(|h| base.idf_slot(h)));
            seen.sort_unstable();
            seen.dedup();
            for &s in &seen {
                df[s] += 1;
            }
        }
        if n == 0 {
            return Err(Error::invalid("cannot fit IDF weights on an empty corpus"));
        }
        let idf: Vec<f32> = df
            .iter()
            .map(|&d| ((1.0 + n as f32) / (1.0 + d as f32)).ln() + 1.0)
            .collect();
        Ok(base.with_idf(idf))
    }

    fn with_idf(mut self, idf: Vec<f32>) -> Self {
        self.idf = Some(Arc::new(idf));
        self.model_id = self.compute_id();
        self
    }

    /// `hashed-tf[idf]-d<dims>-<hash>`, the hash covering the config and the IDF table, so that
    /// vectors of different models never share an id (and a stale Parquet shard is noticed).
    fn compute_id(&self) -> String {
        let mut h = Sha256::new();
        // The tokeniser's version: CJK runs became bigrams (`text::words`), which changed the
        // vectors of CJK text.
        h.update(b"words-v2");
        h.update(serde_json::to_vec(&self.config).unwrap_or_default());
        if let Some(idf) = &self.idf {
            idf.iter().for_each(|x| h.update(x.to_le_bytes()));
        }
        let kind = if self.idf.is_some() { "tfidf" } else { "tf" };
        format!(
            "hashed-{kind}-d{}-{}",
            self.config.dims,
            &hex::encode(h.finalize())[..12]
        )
    }

    /// Writes the model under `dir` (a prefix): its config and IDF table.
    pub async fn save(&self, store: &dyn ObjectStore, dir: &StoreUri) -> Result<()> {
        let dir = dir.as_prefix();
        let json = serde_json::to_vec_pretty(&self.config)
            .map_err(|e| Error::backend("hashed-embedding", "encode config", e))?;
        if let Some(idf) = &self.idf {
            let bytes: Vec<u8> = idf.iter().flat_map(|x| x.to_le_bytes()).collect();
            store.put(&dir.join(IDF_FILE)?, Bytes::from(bytes)).await?;
        }
        store
            .put(&dir.join(CONFIG_FILE)?, Bytes::from(json))
            .await?;
        Ok(())
    }

    /// Loads a model saved by [`HashedEmbedding::save`].
    pub async fn load(store: &dyn ObjectStore, dir: &StoreUri) -> Result<Self> {
        let dir = dir.as_prefix();
        // Damage is `Corrupt`, so that stage 2 trains the model again instead of advising a
        // rerun that would fail the same way.
        const RETRAIN: &str =
            "remove the model's _SUCCESS (stage 2 of `ragloop run` does) to train it again";
        let config_uri = dir.join(CONFIG_FILE)?;
        let config: HashedEmbeddingConfig =
            serde_json::from_slice(&store.get_bytes(&config_uri).await?)
                .map_err(|e| Error::corrupt(config_uri.to_string(), format!("{e}; {RETRAIN}")))?;
        let model = Self::new(config)?;
        let idf_uri = dir.join(IDF_FILE)?;
        if !store.exists(&idf_uri).await? {
            return Ok(model);
        }
        let raw = store.get_bytes(&idf_uri).await?;
        if raw.len() != model.config.idf_slots * 4 {
            return Err(Error::corrupt(
                idf_uri.to_string(),
                format!(
                    "{} bytes, expected {}; {RETRAIN}",
                    raw.len(),
                    model.config.idf_slots * 4
                ),
            ));
        }
        let idf = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(model.with_idf(idf))
    }
}

/// What [`HashedEmbedding::train_job`] did; also written as `report.json` next to the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HashedTrainingReport {
    /// Documents the IDF weights were fitted on.
    pub documents: usize,
    /// Inputs that were not documents.
    pub skipped_inputs: usize,
    /// The trained model's id.
    pub model_id: String,
    /// Wall time in seconds.
    pub seconds: f64,
}

impl HashedEmbedding {
    /// The training job: fits IDF weights on every document under `data` (read with
    /// `parsers`) and writes the model, a `report.json` and finally the `_SUCCESS` marker under
    /// `output`.
    pub async fn train_job(
        store: &dyn ObjectStore,
        data: &StoreUri,
        output: &StoreUri,
        config: HashedEmbeddingConfig,
        parsers: &crate::parse::Parsers,
    ) -> Result<HashedTrainingReport> {
        let start = std::time::Instant::now();
        let loaded = crate::loader::load_documents_with(store, data, parsers).await?;
        for s in &loaded.skipped {
            tracing::warn!(source = %s.source, reason = %s.reason, "input skipped");
        }
        let texts: Vec<String> = loaded
            .documents
            .iter()
            .map(|d| format!("{}\n{}", d.title, d.text))
            .collect();
        let model = Self::fit(config, texts.iter().map(String::as_str))?;
        model.save(store, output).await?;
        let report = HashedTrainingReport {
            documents: loaded.documents.len(),
            skipped_inputs: loaded.skipped.len(),
            model_id: model.model_id().to_string(),
            seconds: start.elapsed().as_secs_f64(),
        };
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| Error::backend("hashed-embedding", "encode report", e))?;
        let dir = output.as_prefix();
        store
            .put(&dir.join("report.json")?, Bytes::from(json))
            .await?;
        store
            .put(&dir.join(crate::training::SUCCESS_MARKER)?, Bytes::new())
            .await?;
        Ok(report)
    }
}

#[async_trait]
impl EmbeddingModel for HashedEmbedding {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dims(&self) -> usize {
        self.config.dims
    }

    fn max_input_tokens(&self) -> usize {
        self.config.max_words
    }

    fn normalized(&self) -> bool {
        true
    }

    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        Ok(texts.iter().map(|t| self.embed(t)).collect())
    }

    async fn embed_query(&self, text: &str) -> Result<Embedding> {
        Ok(self.embed_query_sync(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedding::cosine;

    /// Found by the kill-and-resume test: summing in a `HashMap`'s order (random per map) gave
    /// last-bit differences, so a resumed run rewrote shards an uninterrupted run would not.
    #[test]
    fn the_same_text_embeds_to_the_same_bits_every_time() {
        let m = HashedEmbedding::new(HashedEmbeddingConfig {
            dims: 16,
            ..Default::default()
        })
        .unwrap();
        // Words repeated 1–5 times: weights 1 + ln tf, whose sums round by order.
        let text: String = (0..300)
            .map(|i| format!("word{} ", (i * 7919) % (1 + i % 5 + i / 5)))
            .collect();
        let first: Vec<u32> = m.embed(&text).iter().map(|x| x.to_bits()).collect();
        for _ in 0..50 {
            let again: Vec<u32> = m.embed(&text).iter().map(|x| x.to_bits()).collect();
            assert_eq!(again, first);
        }
    }

    #[test]
    fn similar_texts_are_closer_than_unrelated_ones() {
        let m = HashedEmbedding::new(HashedEmbeddingConfig::default()).unwrap();
        let a = m.embed("duplicate a file descriptor");
        let b = m.embed("dup duplicates the file descriptor oldfd");
        let c = m.embed("set the system clock time zone");
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.2);
    }

    #[test]
    fn fitting_lowers_the_weight_of_common_words() {
        let corpus = [
            "the file system",
            "the clock",
            "the socket",
            "the descriptor table",
        ];
        let m = HashedEmbedding::fit(HashedEmbeddingConfig::default(), corpus).unwrap();
        let idf = |w: &str| m.idf.as_ref().unwrap()[m.idf_slot(hash_feature(&[w]))];
        assert!(idf("the") < idf("socket"));
        assert!(m.model_id().starts_with("hashed-tfidf-d768-"));
    }

    #[tokio::test]
    async fn saved_models_load_identically() {
        let store = crate::local::InMemoryStore::new();
        let dir: StoreUri = "mem://bkt/models/emb/".parse().unwrap();
        let m = HashedEmbedding::fit(HashedEmbeddingConfig::default(), ["a b", "b c"]).unwrap();
        m.save(&store, &dir).await.unwrap();
        let back = HashedEmbedding::load(&store, &dir).await.unwrap();
        assert_eq!(back.model_id(), m.model_id());
        assert_eq!(back.embed("a c"), m.embed("a c"));
    }

    /// A cut IDF table or a garbled config is damage (`Corrupt`, naming the object and how to
    /// train again), not a usage error advising the rerun that fails the same way.
    #[tokio::test]
    async fn a_damaged_model_is_corrupt_naming_the_file() {
        let store = crate::local::InMemoryStore::new();
        let dir: StoreUri = "mem://bkt/models/emb/".parse().unwrap();
        let m = HashedEmbedding::fit(HashedEmbeddingConfig::default(), ["a b", "b c"]).unwrap();
        m.save(&store, &dir).await.unwrap();
        let idf = dir.join(IDF_FILE).unwrap();
        let full = store.get_bytes(&idf).await.unwrap();
        store.put(&idf, full.slice(..full.len() / 2)).await.unwrap();
        let err = HashedEmbedding::load(&store, &dir).await.unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, reason } if what.ends_with("idf.f32") && reason.contains("train it again")),
            "{err}"
        );
        let config = dir.join(CONFIG_FILE).unwrap();
        store
            .put(&config, Bytes::from_static(b"{\"dims\": "))
            .await
            .unwrap();
        let err = HashedEmbedding::load(&store, &dir).await.unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { what, .. } if what.ends_with(CONFIG_FILE)),
            "{err}"
        );
    }
}
