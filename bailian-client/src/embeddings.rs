//! [`EmbeddingClient`]: OpenAI-compatible embeddings (`POST {base}/embeddings`) as an
//! [`EmbeddingModel`] — DashScope's text-embedding-v3/v4 (with `dimensions`), or any
//! OpenAI-compatible server.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};

use rag_core::embedding::{Embedding, EmbeddingModel, normalize};
use rag_core::{Error, Result};
use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use crate::config::BailianConfig;
use crate::http::Http;

/// How an [`EmbeddingClient`] batches and truncates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingOptions {
    /// Output dimension, sent as `dimensions` (text-embedding-v3/v4: 64 … 2048; v4 default
    /// 1024). `None` sends nothing and takes the server's default, which must equal `dims`.
    pub send_dimensions: bool,
    /// Texts per request (DashScope's limit for text-embedding-v3/v4 is 10).
    pub max_batch: usize,
    /// Each text is cut to this many characters before sending — a conservative stand-in for
    /// the per-text token limit (8,192 tokens for v3/v4), which the client cannot count.
    pub max_input_chars: usize,
    /// The per-text token limit reported by [`EmbeddingModel::max_input_tokens`].
    pub max_input_tokens: usize,
}

impl Default for EmbeddingOptions {
    fn default() -> Self {
        Self {
            send_dimensions: true,
            max_batch: 10,
            max_input_chars: 6000,
            max_input_tokens: 8192,
        }
    }
}

/// An embedding model behind an OpenAI-compatible endpoint. Vectors are L2-normalised by the
/// client, so [`EmbeddingModel::normalized`] holds whatever the server returns.
#[derive(Debug, Clone)]
pub struct EmbeddingClient {
    http: Http,
    model: String,
    dims: usize,
    options: EmbeddingOptions,
    id: String,
}

#[derive(Deserialize)]
struct EmbeddingList {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
    index: usize,
}

impl EmbeddingClient {
    /// A client for `model` (`text-embedding-v4`) returning `dims`-long vectors.
    pub fn new(
        config: BailianConfig,
        model: impl Into<String>,
        dims: usize,
        options: EmbeddingOptions,
    ) -> Result<Self> {
        if dims == 0 || options.max_batch == 0 || options.max_input_chars == 0 {
            return Err(Error::invalid(
                "dims, max_batch and max_input_chars must be positive",
            ));
        }
        let model = model.into();
        let id = rag_core::uri::safe_segment(&format!("{model}-d{dims}"), '-');
        Ok(Self {
            http: Http::new(config)?,
            model,
            dims,
            options,
            id,
        })
    }

    /// The request body for one batch.
    pub fn body(&self, texts: &[String]) -> serde_json::Value {
        let input: Vec<String> = texts.iter().map(|t| self.prepare(t)).collect();
        let mut body = serde_json::Map::new();
        body.insert("model".into(), json!(self.model));
        body.insert("input".into(), json!(input));
        body.insert("encoding_format".into(), json!("float"));
        if self.options.send_dimensions {
            body.insert("dimensions".into(), json!(self.dims));
        }
        serde_json::Value::Object(body)
    }

    /// Truncates to `max_input_chars`; an empty text becomes one space (servers reject empty
    /// inputs, the trait promises a vector for every text).
    fn prepare(&self, text: &str) -> String {
        let cut: String = text.chars().take(self.options.max_input_chars).collect();
        if cut.trim().is_empty() {
            " ".into()
        } else {
            cut
        }
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        let url = format!("{}/embeddings", self.http.config.api_base());
        let body = self.body(texts);
        let list: EmbeddingList = self
            .http
            .json(Method::POST, &url, Some(&body), "embeddings")
            .await?;
        if list.data.len() != texts.len() {
            return Err(Error::backend_msg(
                "dashscope",
                format!(
                    "embeddings: {} vectors for {} texts",
                    list.data.len(),
                    texts.len()
                ),
            ));
        }
        let mut out: Vec<Option<Embedding>> = vec![None; texts.len()];
        for item in list.data {
            if item.embedding.len() != self.dims {
                return Err(Error::DimensionMismatch {
                    expected: self.dims,
                    actual: item.embedding.len(),
                });
            }
            let slot = out.get_mut(item.index).ok_or_else(|| {
                Error::backend_msg(
                    "dashscope",
                    format!("embeddings: index {} out of range", item.index),
                )
            })?;
            let mut v = item.embedding;
            normalize(&mut v);
            *slot = Some(v);
        }
        out.into_iter()
            .map(|v| {
                v.ok_or_else(|| Error::backend_msg("dashscope", "embeddings: an index is missing"))
            })
            .collect()
    }
}

#[async_trait]
impl EmbeddingModel for EmbeddingClient {
    fn model_id(&self) -> &str {
        &self.id
    }

    fn dims(&self) -> usize {
        self.dims
    }

    fn max_input_tokens(&self) -> usize {
        self.options.max_input_tokens
    }

    fn normalized(&self) -> bool {
        true
    }

    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Embedding>> {
        let calls: Vec<_> = texts
            .chunks(self.options.max_batch)
            .map(|batch| self.embed_batch(batch))
            .collect();
        let batches: Vec<Vec<Embedding>> = futures::stream::iter(calls)
            .buffered(self.http.config.embed_concurrency.max(1))
            .try_collect()
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    async fn embed_query(&self, text: &str) -> Result<Embedding> {
        let mut v = self.embed_batch(&[text.to_string()]).await?;
        v.pop()
            .ok_or_else(|| Error::backend_msg("dashscope", "embeddings: no vector"))
    }
}
