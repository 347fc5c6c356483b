//! The base and served embedding models, stage 5 (here or as jobs) and stage 6.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use futures::TryStreamExt;
use rag_core::embed_job::shard_number;
use rag_core::{EmbeddingModel, Progress, Stage, StoreUri};
use sha2::{Digest, Sha256};

use super::{NamedModel, Runner, StageLine, wait_options};
use crate::config::{ModelKind, Which};

impl Runner {
    /// The model stages 5–7 use: the trained one when stage 2 trains (its output must be
    /// complete), else `embedding.model` itself.
    pub async fn served_model(&self) -> Result<NamedModel> {
        let e = &self.config().embedding;
        let Some(spec) = self.backends.plan.training() else {
            return self.base_model().await;
        };
        let model = self
            .backends
            .embedding_model(&e.model, Some(&spec.output))
            .await?;
        let name = match e.kind() {
            ModelKind::Hashed => "hashed, trained (IDF)".to_string(),
            _ => format!(
                "{} fine-tuned ({})",
                short_name(&e.model),
                spec.hyper_parameters
                    .get("mode")
                    .map_or("adapter", String::as_str)
            ),
        };
        Ok(NamedModel {
            model,
            name,
            location: spec.output.to_string(),
        })
    }

    /// `embedding.model` as named, before any training.
    pub async fn base_model(&self) -> Result<NamedModel> {
        let e = &self.config().embedding;
        let model = self.backends.embedding_model(&e.model, None).await?;
        let trains = self.backends.plan.training().is_some();
        let name = match e.kind() {
            ModelKind::Hashed if trains => "hashed, untrained".to_string(),
            ModelKind::Hashed => "hashed".to_string(),
            _ => short_name(&e.model),
        };
        Ok(NamedModel {
            model,
            name,
            location: e.model.clone(),
        })
    }

    /// Stage 5: chunks and embeds `raw-docs/` with `m` into Parquet shards, here or as jobs.
    pub async fn embed(&self, m: &NamedModel, progress: Arc<dyn Progress>) -> Result<StageLine> {
        self.lock_work_dir()?;
        let t = Instant::now();
        let model = m.model.as_ref();
        let pipeline = self.pipeline(&self.index_name(Which::Served), progress);
        if self.config().embedding.workers == 0 {
            let r = pipeline.embed(model).await?;
            return Ok(StageLine::new(
                Stage::Embed,
                format!(
                    "{} documents → {} chunks → {} shards ({} written) in {} with {}; {} inputs skipped",
                    r.documents,
                    r.chunks,
                    r.shards_written + r.shards_current,
                    r.shards_written,
                    r.shards_prefix,
                    r.model_id,
                    r.skipped_inputs.len()
                ),
                t,
                0,
            )
            .with_details(super::skipped_lines(&r.skipped_inputs)));
        }
        let shards = self.layout.vector_shards(model.model_id());
        let corpus = self.corpus_fingerprint().await?;
        let specs = self
            .backends
            .plan
            .embedding_workers(&m.location, &shards, &corpus);
        let outcomes = pipeline
            .with_trainer(self.backends.jobs.clone())
            .run_jobs(Stage::Embed, &specs, wait_options())
            .await?;
        let written = self.shard_count(&shards).await?;
        if written == 0 {
            bail!("the embedding jobs succeeded but wrote no shards under {shards}");
        }
        let ran = outcomes.iter().filter(|o| !o.skipped).count();
        Ok(StageLine::new(
            Stage::Embed,
            format!(
                "{} jobs embedded the corpus with {} → {written} shards in {shards} ({ran} run, {} \
                 already done)",
                specs.len(),
                model.model_id(),
                specs.len() - ran
            ),
            t,
            0,
        ))
    }

    /// A fingerprint of `raw-docs/` (keys, sizes, ETags): what the stage-5 jobs' completion
    /// markers are keyed by.
    async fn corpus_fingerprint(&self) -> Result<String> {
        let raw = self.layout.raw_docs();
        let objects: Vec<_> = self.backends.store.list(&raw).try_collect().await?;
        let mut h = Sha256::new();
        for o in &objects {
            h.update(o.uri.key().as_bytes());
            h.update(o.size.to_le_bytes());
            h.update(o.e_tag.as_deref().unwrap_or("").as_bytes());
            h.update([0]);
        }
        Ok(hex::encode(&h.finalize()[..8]))
    }

    async fn shard_count(&self, shards: &StoreUri) -> Result<usize> {
        let objects: Vec<_> = self.backends.store.list(shards).try_collect().await?;
        Ok(objects
            .iter()
            .filter(|o| shard_number(o.uri.file_name()).is_some())
            .count())
    }

    /// Stage 6: upserts the shards of `model` into the index of `which` model.
    pub async fn index(
        &self,
        model: &dyn EmbeddingModel,
        which: Which,
        progress: Arc<dyn Progress>,
    ) -> Result<StageLine> {
        let t = Instant::now();
        self.lock_work_dir()?;
        let shards = self.layout.vector_shards(model.model_id());
        if self.shard_count(&shards).await? == 0 {
            bail!(
                "no vector shards under {shards}: embed first (`ragloop run`, or `ragloop embed`)"
            );
        }
        let name = self.index_name(which);
        let pipeline = self
            .pipeline(&name, progress)
            .with_index(self.backends.index.clone());
        let rebuilt = self
            .drop_outdated_index(&pipeline.index_schema(model))
            .await?;
        let r = pipeline.index(model).await?;
        if !r.unreadable.is_empty() {
            bail!(
                "{} vector shards are not readable Parquet (the other shards were indexed; delete \
                 these and run the embed stage again to rewrite them): {:?}",
                r.unreadable.len(),
                r.unreadable
            );
        }
        if !r.failed.is_empty() {
            bail!(
                "{} records could not be indexed ({} were): {:?}",
                r.failed.len(),
                r.written,
                r.failed.iter().take(10).collect::<Vec<_>>()
            );
        }
        Ok(StageLine::new(
            Stage::Index,
            format!(
                "{} records from {} shards written{}; {} in {name}",
                r.written,
                r.shards,
                match r.deleted {
                    0 => String::new(),
                    n => format!(
                        ", {n} stale deleted ({} documents removed, {} changed)",
                        r.documents_removed, r.documents_changed
                    ),
                },
                r.count
            ),
            t,
            0,
        )
        .with_details(rebuilt.into_iter().collect()))
    }

    /// An embedded index (local, HNSW) built with another schema than `wanted` (another
    /// analyzer, metric or metadata fields: an older ragloop, or a changed `[index]`) is
    /// dropped so that this stage builds it again from the shards, which hold every record;
    /// says so. A cluster's index is left alone: creating it then fails, naming the
    /// difference, since others may use it.
    async fn drop_outdated_index(&self, wanted: &rag_core::IndexSchema) -> Result<Option<String>> {
        use crate::config::IndexBackend;
        if !matches!(
            self.config().index.backend,
            IndexBackend::Local | IndexBackend::Hnsw
        ) {
            return Ok(None);
        }
        let index = &self.backends.index;
        let existing = match index.schema(&wanted.name).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Err(why) = existing.is_compatible(wanted) else {
            return Ok(None);
        };
        index.drop_index(&wanted.name).await?;
        let why = match why {
            rag_core::Error::AlreadyExists { what } => what,
            other => other.to_string(),
        };
        let line = format!("{why}: rebuilt from the shards");
        tracing::warn!("{line}");
        Ok(Some(line))
    }
}

/// The last path segment of a model location (`models/all-MiniLM-L6-v2` → `all-MiniLM-L6-v2`).
fn short_name(location: &str) -> String {
    location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(location)
        .to_string()
}
