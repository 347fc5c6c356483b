//! The native Model Studio APIs under `…/api/v1` that the seed's steps 3 and 4 need: file
//! upload, fine-tune jobs (create, get, logs, cancel), deployments (create, get, list, scale,
//! delete) and the model-import call. Every answer is `{"request_id", "output" | "data"}`;
//! errors are the native `{"code", "message", "request_id"}` (see [`crate::ApiError`]).

use std::collections::BTreeMap;

use rag_core::{Error, Result};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::BailianConfig;
use crate::http::{Http, Payload};

/// The native API client (cheap to clone).
#[derive(Debug, Clone)]
pub struct ModelStudio {
    http: Http,
}

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
    /// The job's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
}

/// A deployment as the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DeploymentInfo {
    /// The deployed model's id (what chat requests name).
    pub deployed_model: String,
    /// PENDING, DEPLOYING, RUNNING, UPDATING, FAILED, DELETING, STOPPED …
    pub status: String,
    /// The model deployed.
    #[serde(default)]
    pub model_name: Option<String>,
    /// Capacity asked for.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Capacity serving.
    #[serde(default)]
    pub ready_capacity: Option<u32>,
}

#[derive(Deserialize)]
struct Envelope<T> {
    output: T,
}

#[derive(Deserialize)]
struct DeploymentPage {
    #[serde(default)]
    deployments: Vec<DeploymentInfo>,
    #[serde(default)]
    total: usize,
}

#[derive(Deserialize)]
struct Uploaded {
    data: UploadedData,
}

#[derive(Deserialize)]
struct UploadedData {
    #[serde(default)]
    uploaded_files: Vec<UploadedFile>,
    #[serde(default)]
    failed_uploads: Vec<Value>,
}

#[derive(Deserialize)]
struct UploadedFile {
    file_id: String,
}

#[derive(Deserialize)]
struct LogPage {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    logs: Vec<String>,
}

fn path_segment(id: &str) -> Result<&str> {
    if id.is_empty() || id.contains(['/', '?', '#']) {
        return Err(Error::invalid(format!("{id:?} is not a valid id")));
    }
    Ok(id)
}

impl ModelStudio {
    /// A client of the native API of `config`'s region.
    pub fn new(config: BailianConfig) -> Result<Self> {
        if config.api_key().is_none() {
            return Err(Error::Auth {
                message: format!(
                    "Model Studio needs an API key ({})",
                    BailianConfig::ENV_API_KEY
                ),
            });
        }
        Ok(Self {
            http: Http::new(config)?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.http.config.native_base())
    }

    /// Uploads a training file (`POST /files`); returns its file id.
    pub async fn upload_file(
        &self,
        name: &str,
        bytes: Vec<u8>,
        description: &str,
    ) -> Result<String> {
        let (name, description) = (name.to_string(), description.to_string());
        let form = move || {
            let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.clone());
            reqwest::multipart::Form::new()
                .part("files", part)
                .text("descriptions", description.clone())
        };
        let up: Uploaded = self
            .http
            .json(
                Method::POST,
                &self.url("files"),
                Payload::Form(&form),
                "upload file",
            )
            .await?;
        if let Some(failed) = up.data.failed_uploads.first() {
            return Err(Error::InvalidInput {
                message: format!("upload file: refused: {failed}"),
            });
        }
        up.data
            .uploaded_files
            .into_iter()
            .next()
            .map(|f| f.file_id)
            .ok_or_else(|| Error::backend_msg("dashscope", "upload file: no file id in the answer"))
    }

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
                "create fine-tune",
            )
            .await?;
        Ok(e.output)
    }

    /// A fine-tune job (`GET /fine-tunes/{id}`).
    pub async fn fine_tune(&self, id: &str) -> Result<FineTuneJob> {
        let url = self.url(&format!("fine-tunes/{}", path_segment(id)?));
        let e: Envelope<FineTuneJob> = self
            .http
            .json(Method::GET, &url, None, "get fine-tune")
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
            .json(Method::GET, &url, None, "fine-tune logs")
            .await?;
        Ok((e.output.total, e.output.logs))
    }

    /// Cancels a fine-tune job (`POST /fine-tunes/{id}/cancel`).
    pub async fn cancel_fine_tune(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("fine-tunes/{}/cancel", path_segment(id)?));
        let _: Value = self
            .http
            .json(Method::POST, &url, None, "cancel fine-tune")
            .await?;
        Ok(())
    }

    /// Deploys `model_name` with `capacity` units (`POST /deployments`).
    pub async fn create_deployment(
        &self,
        model_name: &str,
        capacity: u32,
        suffix: Option<&str>,
    ) -> Result<DeploymentInfo> {
        let mut body = json!({"model_name": model_name, "capacity": capacity});
        if let Some(s) = suffix {
            body["suffix"] = json!(s);
        }
        let e: Envelope<DeploymentInfo> = self
            .http
            .json(
                Method::POST,
                &self.url("deployments"),
                Some(&body),
                "create deployment",
            )
            .await?;
        Ok(e.output)
    }

    /// A deployment (`GET /deployments/{deployed_model}`).
    pub async fn deployment(&self, id: &str) -> Result<DeploymentInfo> {
        let url = self.url(&format!("deployments/{}", path_segment(id)?));
        let e: Envelope<DeploymentInfo> = self
            .http
            .json(Method::GET, &url, None, "get deployment")
            .await?;
        Ok(e.output)
    }

    /// Every deployment (`GET /deployments`, all pages).
    pub async fn deployments(&self) -> Result<Vec<DeploymentInfo>> {
        let mut all = Vec::new();
        for page in 1.. {
            let url = self.url(&format!("deployments?page_no={page}&page_size=100"));
            let e: Envelope<DeploymentPage> = self
                .http
                .json(Method::GET, &url, None, "list deployments")
                .await?;
            let n = e.output.deployments.len();
            all.extend(e.output.deployments);
            if n == 0 || all.len() >= e.output.total {
                break;
            }
        }
        Ok(all)
    }

    /// Changes a deployment's capacity (`PUT /deployments/{deployed_model}/scale`).
    pub async fn scale_deployment(&self, id: &str, capacity: u32) -> Result<DeploymentInfo> {
        let url = self.url(&format!("deployments/{}/scale", path_segment(id)?));
        let body = json!({"capacity": capacity});
        let e: Envelope<DeploymentInfo> = self
            .http
            .json(Method::PUT, &url, Some(&body), "scale deployment")
            .await?;
        Ok(e.output)
    }

    /// Deletes a deployment (`DELETE /deployments/{deployed_model}`).
    pub async fn delete_deployment(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("deployments/{}", path_segment(id)?));
        let _: Value = self
            .http
            .json(Method::DELETE, &url, None, "delete deployment")
            .await?;
        Ok(())
    }

    /// The seed's step 4 call: `POST /models` with `{"model_name", "model_path"}`, registering
    /// model weights in OSS under a name. Returns the answer's `output`.
    pub async fn import_model(&self, model_name: &str, model_path: &str) -> Result<Value> {
        let body = json!({"model_name": model_name, "model_path": model_path});
        let v: Value = self
            .http
            .json(
                Method::POST,
                &self.url("models"),
                Some(&body),
                "import model",
            )
            .await?;
        Ok(v.get("output").cloned().unwrap_or(v))
    }
}
