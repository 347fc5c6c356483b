//! Fine-tune jobs: create, get, logs (paged), cancel.
//!
//! Wire format: Model Studio's fine-tune API reference
//! (<https://help.aliyun.com/zh/model-studio/model-training-api-reference>, Beijing region
//! only): `POST /fine-tunes` with `model`, `training_file_ids`, `validation_file_ids`,
//! `hyper_parameters` (typed: `n_epochs`, `batch_size` integers, `learning_rate`, `split`,
//! `warmup_ratio` numbers, `lr_scheduler_type` a string …), `training_type` (`sft`,
//! `efficient_sft`, `cpt`, `dpo_full`, `dpo_lora`), `job_name`, `model_name` and
//! `finetuned_output_suffix`; the job comes back in `output`.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Envelope, ModelStudio, path_segment};
use rag_core::{Error, Result};

/// A fine-tune job as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FineTuneJob {
    /// `ft-202410291653-1c7f`.
    pub job_id: String,
    /// PENDING, QUEUING, RUNNING, CANCELING, SUCCEEDED, FAILED or CANCELED.
    pub status: String,
    /// The fine-tuned model's id, once SUCCEEDED.
    #[serde(default)]
    pub finetuned_output: Option<String>,
    /// The model fine-tuned.
    #[serde(default)]
    pub model: Option<String>,
    /// The base model.
    #[serde(default)]
    pub base_model: Option<String>,
    /// Failure code, when FAILED.
    #[serde(default)]
    pub code: Option<String>,
    /// Failure message, when FAILED.
    #[serde(default)]
    pub message: Option<String>,
}

/// A fine-tune job to create.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreateFineTune {
    /// The model to fine-tune (`qwen3-14b`).
    pub model: String,
    /// Uploaded training files.
    pub training_file_ids: Vec<String>,
    /// Uploaded validation files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validation_file_ids: Vec<String>,
    /// `n_epochs`, `batch_size`, `learning_rate` …
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hyper_parameters: BTreeMap<String, Value>,
    /// `sft`, `efficient_sft`, `dpo` …
    pub training_type: String,
    /// The job's name (the service makes one up when left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// A suffix the service puts in the fine-tuned model's id
    /// (`qwen3-14b-<suffix>-ft-202410291653-1c7f`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finetuned_output_suffix: Option<String>,
}

#[derive(Deserialize)]
struct LogPage {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    logs: Vec<String>,
}

impl ModelStudio {
    /// Creates a fine-tune job (`POST /fine-tunes`).
    pub async fn create_fine_tune(&self, job: &CreateFineTune) -> Result<FineTuneJob> {
        let body =
            serde_json::to_value(job).map_err(|e| Error::backend("dashscope", "encoding", e))?;
        let e: Envelope<FineTuneJob> = self
            .http
            .json(
                Method::POST,
                &self.url("fine-tunes"),
                Some(&body),
                &self.what("create fine-tune"),
            )
            .await?;
        Ok(e.output)
    }

    /// A fine-tune job (`GET /fine-tunes/{id}`).
    pub async fn fine_tune(&self, id: &str) -> Result<FineTuneJob> {
        let url = self.url(&format!("fine-tunes/{}", path_segment(id)?));
        let e: Envelope<FineTuneJob> = self
            .http
            .json(Method::GET, &url, None, &self.what("get fine-tune"))
            .await?;
        Ok(e.output)
    }

    /// Up to `lines` log lines from `offset` (`GET /fine-tunes/{id}/logs`), and the total.
    pub async fn fine_tune_logs(
        &self,
        id: &str,
        offset: usize,
        lines: usize,
    ) -> Result<(usize, Vec<String>)> {
        let url = self.url(&format!(
            "fine-tunes/{}/logs?offset={offset}&line={lines}",
            path_segment(id)?
        ));
        let e: Envelope<LogPage> = self
            .http
            .json(Method::GET, &url, None, &self.what("fine-tune logs"))
            .await?;
        Ok((e.output.total, e.output.logs))
    }

    /// Cancels a fine-tune job (`POST /fine-tunes/{id}/cancel`).
    pub async fn cancel_fine_tune(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("fine-tunes/{}/cancel", path_segment(id)?));
        let _: Value = self
            .http
            .json(Method::POST, &url, None, &self.what("cancel fine-tune"))
            .await?;
        Ok(())
    }
}
