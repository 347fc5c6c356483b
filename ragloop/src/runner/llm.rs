//! Stages 3 and 4 (fine-tune the LLM, deploy it) and stage 3's dataset.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rag_core::{DeploySpec, Progress, Stage, StoreUri, WaitOptions};

use super::{Runner, StageLine, wait_options};
use crate::config::{LlmBackend, LlmFineTuneBackend, Which};

impl Runner {
    /// Stage 3: fine-tunes the LLM on `qa-pairs/`; returns the output prefix.
    pub async fn fine_tune_llm(
        &self,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Option<StoreUri>)> {
        let t = Instant::now();
        self.lock_work_dir()?;
        let (Some(mut spec), Some(trainer)) = (
            self.backends.plan.llm_fine_tune(),
            &self.backends.llm_trainer,
        ) else {
            let why = "skipped: no [llm_fine_tune] backend configured".to_string();
            progress.end(Stage::FineTuneLlm, &why);
            return Ok((StageLine::new(Stage::FineTuneLlm, why, t, 0), None));
        };
        let store = &self.backends.store;
        let data = self.layout.qa_pairs();
        let train = data.join("train.jsonl")?;
        if store.exists(&train).await? {
            // The dataset `ragloop qa-pairs` wrote. Bailian uploads files: its train and
            // validation files, not the manifest beside them. PAI and local jobs get the
            // directory (DLC mounts prefixes), with both files in it.
            if self.config().llm_fine_tune.backend == LlmFineTuneBackend::Bailian {
                spec.inputs.insert("data".into(), train);
                let validation = data.join("validation.jsonl")?;
                if store.exists(&validation).await? {
                    spec.inputs.insert("validation".into(), validation);
                }
            }
        } else if store.list_page(&data, None, 1).await?.objects.is_empty() {
            return Err(anyhow::Error::new(rag_core::Error::not_found(format!(
                "stage 3: no training data under {data}: build it with `ragloop qa-pairs`, or put \
                 chat-format JSONL there (one {{\"messages\": [...]}} per line)"
            ))));
        }
        let job = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_trainer(trainer.clone())
            .run_job(Stage::FineTuneLlm, &spec, wait_options())
            .await?;
        Ok((
            StageLine::new(
                Stage::FineTuneLlm,
                match &job.job_id {
                    Some(id) => format!(
                        "job {id} fine-tuned {} → {}",
                        spec.base_model.as_deref().unwrap_or("?"),
                        spec.output
                    ),
                    None => format!("{} already fine-tuned", spec.output),
                },
                t,
                0,
            ),
            Some(spec.output.clone()),
        ))
    }

    /// Stage 4: deploys the fine-tuned model (or `deploy.model_path`); returns the name
    /// clients call.
    pub async fn deploy(
        &self,
        fine_tuned: Option<&StoreUri>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, Option<String>)> {
        let t = Instant::now();
        self.lock_work_dir()?;
        let d = &self.config().deploy;
        let model_path = d.model_path.clone().or(fine_tuned.map(|u| u.to_string()));
        let (Some(deployer), Some(model_path)) = (&self.backends.deployer, model_path) else {
            let why = "skipped: no [deploy] backend configured".to_string();
            progress.end(Stage::Deploy, &why);
            return Ok((StageLine::new(Stage::Deploy, why, t, 0), None));
        };
        let spec = DeploySpec {
            model_name: d.model_name.clone().unwrap_or_else(|| {
                self.config()
                    .llm_fine_tune
                    .name
                    .clone()
                    .unwrap_or_else(|| "llm-ft".into())
            }),
            model_path,
            capacity: d.capacity.unwrap_or(1),
        };
        let wait = WaitOptions {
            interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(15),
            timeout: Duration::from_secs(d.timeout_secs.unwrap_or(3600)),
        };
        let deployment = self
            .pipeline(&self.index_name(Which::Served), progress)
            .with_deployer(deployer.clone())
            .deploy(&spec, wait)
            .await?;
        Ok((
            StageLine::new(
                Stage::Deploy,
                format!(
                    "{} serves {} as {}",
                    deployment.id, spec.model_path, deployment.model_name
                ),
                t,
                0,
            ),
            // The compatible API calls a deployment by its id (`deployed_model`).
            Some(deployment.id),
        ))
    }

    /// Stage 3's dataset: grounded question/answer pairs from the chunks of `raw-docs/`,
    /// written to `qa-pairs/` (train, validation, manifest) with `[llm]` writing questions and
    /// answers (the extractive model answers questions templated from titles).
    ///
    /// With `user_pairs` (a JSONL file of `{"question", "answer", "chunk_id" | "context"}`),
    /// those are checked and written instead, and no LLM is called.
    pub async fn build_qa_pairs(
        &self,
        mut options: rag_core::qa::QaOptions,
        user_pairs: Option<&Path>,
        progress: Arc<dyn Progress>,
    ) -> Result<(StageLine, rag_core::qa::Manifest)> {
        let t = Instant::now();
        self.lock_work_dir()?;
        if self.config().llm.backend == LlmBackend::Extractive {
            options.questions = rag_core::qa::QuestionSource::Headings;
        }
        let chat = self.backends.chat(None)?;
        let pipeline = self.pipeline(&self.index_name(Which::Served), progress);
        let loaded = pipeline.load_documents().await?;
        if loaded.documents.is_empty() {
            bail!(
                "no documents under {}: ingest first",
                self.layout.raw_docs()
            );
        }
        let chunks = pipeline.chunk_all(&loaded);
        let (pairs, mut dropped, usage, generator) = match user_pairs {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the pairs in {}", path.display()))?;
                let (pairs, dropped) = rag_core::qa::user_pairs(&text, &chunks);
                (
                    pairs,
                    dropped,
                    rag_core::Usage::default(),
                    "user".to_string(),
                )
            }
            None => {
                let (p, d, u) = rag_core::qa::generate(chat.as_ref(), &chunks, &options).await?;
                (p, d, u, chat.model_id().to_string())
            }
        };
        let mut dataset = rag_core::qa::validate(pairs, &options);
        dropped.append(&mut dataset.dropped);
        dataset.dropped = dropped;
        dataset.usage = usage;
        let manifest = rag_core::qa::write_dataset(
            self.backends.store.as_ref(),
            &self.layout.qa_pairs(),
            &dataset,
            &rag_core::qa::corpus_hash(&chunks),
            &generator,
        )
        .await?;
        Ok((
            StageLine::new(
                Stage::FineTuneLlm,
                format!(
                    "{} train + {} validation examples → {}; dropped {:?}",
                    manifest.train,
                    manifest.validation,
                    self.layout.qa_pairs(),
                    manifest.dropped
                ),
                t,
                u64::from(usage.total_tokens),
            ),
            manifest,
        ))
    }
}
