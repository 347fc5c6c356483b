//! Stage 5: `raw-docs/` → chunks → vectors → Parquet shards under `vector-indexes/<model>/`.

use serde::Serialize;

use super::Pipeline;
use crate::chunk::Chunk;
use crate::embed_job::{ShardOptions, embed_corpus};
use crate::embedding::EmbeddingModel;
use crate::error::Result;
use crate::loader::{LoadReport, Skipped};

/// What [`Pipeline::embed`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmbedReport {
    /// The model used.
    pub model_id: String,
    /// Documents read.
    pub documents: usize,
    /// Chunks embedded or found embedded.
    pub chunks: usize,
    /// Shards written now.
    pub shards_written: usize,
    /// Shards already current.
    pub shards_current: usize,
    /// Inputs that were not documents, and why.
    #[serde(skip)]
    pub skipped_inputs: Vec<Skipped>,
    /// Where the shards are.
    pub shards_prefix: String,
}

impl Pipeline {
    /// Reads and parses every object under `raw-docs/` with the options' parsers.
    pub async fn load_documents(&self) -> Result<LoadReport> {
        crate::loader::load_documents_with(
            self.store.as_ref(),
            &self.layout.raw_docs(),
            &self.options.parsers,
        )
        .await
    }

    /// Chunks every document, in order, dropping repeated chunk ids.
    pub fn chunk_all(&self, report: &LoadReport) -> Vec<Chunk> {
        self.options.chunker.chunk_all(&report.documents)
    }

    /// Stage 5: embeds every chunk of `raw-docs/` with `model` into Parquet shards under
    /// `vector-indexes/<model>/`. Shards that are current are kept, so a killed run resumes.
    /// The documents are streamed one file at a time ([`embed_corpus`]): memory holds one
    /// file's documents and one shard, whatever the corpus's size.
    pub async fn embed(&self, model: &dyn EmbeddingModel) -> Result<EmbedReport> {
        let prefix = self.layout.vector_shards(model.model_id());
        let corpus = embed_corpus(
            self.store.as_ref(),
            &self.layout.raw_docs(),
            &self.options.parsers,
            &self.options.chunker,
            self.store.as_ref(),
            model,
            &prefix,
            &ShardOptions {
                shard_rows: self.options.shard_rows,
                batch: self.options.embed_batch,
                ..Default::default()
            },
            self.progress.as_ref(),
        )
        .await?;
        Ok(EmbedReport {
            model_id: model.model_id().to_string(),
            documents: corpus.documents,
            chunks: corpus.chunks,
            shards_written: corpus.shards.written,
            shards_current: corpus.shards.current,
            skipped_inputs: corpus.load.skipped,
            shards_prefix: prefix.to_string(),
        })
    }
}
