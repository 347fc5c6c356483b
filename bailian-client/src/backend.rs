//! Model Studio behind rag-core's traits: fine-tunes as a [`TrainingBackend`] (seed step 3) and
//! deployments as a [`ModelDeployer`] (step 4).
//!
//! Hand-off: a fine-tune's input is the `data` (and optional `validation`) prefix of a
//! [`JobSpec`] in any [`ObjectStore`]; its JSONL files are uploaded and the job created on
//! `spec.base_model`. When the job succeeds the backend writes
//! `<output>/bailian-model.json` (`{"finetuned_output", "job_id", "base_model"}`) and then
//! `<output>/_SUCCESS`, so the pipeline's completion contract holds and the deploy stage can
//! read the fine-tuned model's id from the output prefix ([`BailianDeployer`] accepts either the
//! id or that prefix as `DeploySpec::model_path`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::TryStreamExt;
use rag_core::deploy::{DeploySpec, Deployment, DeploymentStatus, ModelDeployer};
use rag_core::training::{JobId, JobKind, JobSpec, JobStatus, TrainingBackend};
use rag_core::{Error, ObjectStore, Result, StoreUri};
use serde_json::{Value, json};

use crate::studio::{
    CreateDeployment, CreateFineTune, DeployPlan, DeploymentInfo, FineTuneJob, ModelStudio,
};

/// The file a succeeded fine-tune leaves in its output prefix, naming the fine-tuned model.
pub const MODEL_RECORD: &str = "bailian-model.json";

/// Model Studio fine-tunes as a [`TrainingBackend`] (LLM fine-tunes only).
pub struct BailianFineTunes {
    api: ModelStudio,
    store: Arc<dyn ObjectStore>,
    /// Output prefix of each job submitted here, for the success record.
    outputs: Mutex<HashMap<String, StoreUri>>,
}

impl std::fmt::Debug for BailianFineTunes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BailianFineTunes")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl BailianFineTunes {
    /// Fine-tunes through `api`, reading training files from and recording results in `store`.
    pub fn new(api: ModelStudio, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            api,
            store,
            outputs: Mutex::new(HashMap::new()),
        }
    }

    async fn upload_prefix(&self, uri: &StoreUri, what: &str) -> Result<Vec<String>> {
        let mut objects: Vec<_> = self.store.list(uri).try_collect().await?;
        objects.retain(|m| m.uri.file_name().ends_with(".jsonl"));
        objects.sort_by_key(|m| m.uri.to_string());
        if objects.is_empty() {
            return Err(Error::not_found(format!(
                "no .jsonl {what} files under {uri}"
            )));
        }
        let mut ids = Vec::with_capacity(objects.len());
        for m in objects {
            let bytes = self.store.get_bytes(&m.uri).await?;
            let id = self
                .api
                .upload_file(
                    m.uri.file_name(),
                    bytes.to_vec(),
                    &format!("ragloop {what}: {}", m.uri),
                )
                .await?;
            ids.push(id);
        }
        Ok(ids)
    }

    async fn record_success(&self, job: &FineTuneJob) -> Result<()> {
        let output = self
            .outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job.job_id)
            .cloned();
        let Some(output) = output else { return Ok(()) };
        let marker = output.join(rag_core::training::SUCCESS_MARKER)?;
        if self.store.exists(&marker).await? {
            return Ok(());
        }
        let record = json!({
            "finetuned_output": job.finetuned_output,
            "job_id": job.job_id,
            "base_model": job.base_model,
        });
        self.store
            .put(
                &output.join(MODEL_RECORD)?,
                serde_json::to_vec_pretty(&record)
                    .unwrap_or_default()
                    .into(),
            )
            .await?;
        self.store.put(&marker, bytes::Bytes::new()).await?;
        Ok(())
    }
}

/// Hyper-parameters the backend reads itself rather than passing on.
const OWN_KEYS: [&str; 2] = ["training_type", SUFFIX_KEY];
/// The hyper-parameter that becomes the create body's `finetuned_output_suffix`.
pub const SUFFIX_KEY: &str = "finetuned_output_suffix";

/// A hyper-parameter value (a [`JobSpec`] holds strings) typed as the fine-tune reference
/// types it: integers (`n_epochs`, `batch_size`) and other numbers (`learning_rate`
/// `1.6e-5`, `split` `0.8`) as JSON numbers, `true`/`false` as booleans (`freeze_vit`,
/// `data_augmentation`), anything else (`lr_scheduler_type`, `augmentation_ratio`
/// `"0.1,0.05"`) as a string.
fn hp_value(v: &str) -> Value {
    let t = v.trim();
    if let Ok(n) = t.parse::<i64>() {
        return json!(n);
    }
    match t {
        "true" => return json!(true),
        "false" => return json!(false),
        _ => {}
    }
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() => json!(x),
        _ => json!(v),
    }
}

fn map_status(job: &FineTuneJob) -> JobStatus {
    match job.status.as_str() {
        "PENDING" | "QUEUING" => JobStatus::Queued,
        "SUCCEEDED" => JobStatus::Succeeded,
        "FAILED" => JobStatus::Failed {
            reason: match (&job.code, &job.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (None, Some(m)) => m.clone(),
                (Some(c), None) => c.clone(),
                (None, None) => "the fine-tune failed (no reason given)".into(),
            },
        },
        "CANCELED" | "CANCELLED" => JobStatus::Stopped,
        _ => JobStatus::Running,
    }
}

#[async_trait]
impl TrainingBackend for BailianFineTunes {
    async fn submit(&self, spec: &JobSpec) -> Result<JobId> {
        if spec.kind != JobKind::LlmFineTune {
            return Err(Error::invalid(format!(
                "Model Studio runs LLM fine-tunes only, not {:?} jobs",
                spec.kind
            )));
        }
        if spec.name.trim().is_empty() {
            return Err(Error::invalid("the job needs a name"));
        }
        let model = spec
            .base_model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| {
                Error::invalid("a Model Studio fine-tune needs base_model (e.g. qwen3-14b)")
            })?;
        let data = spec
            .inputs
            .get("data")
            .ok_or_else(|| Error::invalid("the job needs a `data` input (the qa-pairs/ prefix)"))?;
        let training_file_ids = self.upload_prefix(data, "training").await?;
        let validation_file_ids = match spec.inputs.get("validation") {
            Some(v) => self.upload_prefix(v, "validation").await?,
            None => Vec::new(),
        };
        let mut hyper_parameters: BTreeMap<String, Value> = spec
            .hyper_parameters
            .iter()
            .filter(|(k, _)| !OWN_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), hp_value(v)))
            .collect();
        hyper_parameters.retain(|_, v| !v.is_null());
        let job = self
            .api
            .create_fine_tune(&CreateFineTune {
                model,
                training_file_ids,
                validation_file_ids,
                hyper_parameters,
                training_type: spec
                    .hyper_parameters
                    .get("training_type")
                    .cloned()
                    .unwrap_or_else(|| "sft".into()),
                job_name: Some(spec.name.clone()),
                finetuned_output_suffix: spec
                    .hyper_parameters
                    .get(SUFFIX_KEY)
                    .filter(|s| !s.trim().is_empty())
                    .cloned(),
            })
            .await?;
        self.outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.job_id.clone(), spec.output.clone());
        Ok(JobId(job.job_id))
    }

    async fn status(&self, id: &JobId) -> Result<JobStatus> {
        let job = self.api.fine_tune(&id.0).await?;
        let status = map_status(&job);
        if status == JobStatus::Succeeded {
            self.record_success(&job).await?;
        }
        Ok(status)
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        let mut lines = Vec::new();
        loop {
            let (total, page) = self.api.fine_tune_logs(&id.0, lines.len(), 1000).await?;
            let n = page.len();
            lines.extend(page);
            if n == 0 || lines.len() >= total {
                break;
            }
        }
        Ok(lines.join("\n"))
    }

    async fn stop(&self, id: &JobId) -> Result<()> {
        let job = self.api.fine_tune(&id.0).await?;
        if map_status(&job).is_terminal() {
            return Ok(());
        }
        self.api.cancel_fine_tune(&id.0).await
    }
}

/// Model Studio deployments as a [`ModelDeployer`].
///
/// `DeploySpec::capacity` counts instances of the model: the deployment asks for that many
/// times the model's base capacity in resource units (read from `GET /deployments/models`,
/// which also tells a model that cannot be deployed — `NotFound` — before anything is
/// created). `DeploySpec::model_name` is the deployment's display `name`; the deployed
/// model's id is the service's (with [`BailianDeployer::with_suffix`]'s suffix when set).
#[derive(Clone)]
pub struct BailianDeployer {
    api: ModelStudio,
    store: Option<Arc<dyn ObjectStore>>,
    plan: DeployPlan,
    suffix: Option<String>,
}

impl std::fmt::Debug for BailianDeployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BailianDeployer")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

fn map_deployment(d: DeploymentInfo) -> Deployment {
    let status = match d.status.as_str() {
        "RUNNING" => DeploymentStatus::Running,
        "FAILED" => DeploymentStatus::Failed {
            reason: format!("deployment {} failed", d.deployed_model),
        },
        "STOPPED" | "DELETING" | "DELETED" => DeploymentStatus::Stopped,
        _ => DeploymentStatus::Pending,
    };
    Deployment {
        id: d.deployed_model,
        model_name: d.model_name.unwrap_or_default(),
        status,
    }
}

impl BailianDeployer {
    /// Deploys through `api`; with a `store`, a `DeploySpec::model_path` that is a store prefix
    /// is resolved through its [`MODEL_RECORD`].
    /// Billed by compute units ([`DeployPlan::Compute`]), no suffix.
    pub fn new(api: ModelStudio, store: Option<Arc<dyn ObjectStore>>) -> Self {
        Self {
            api,
            store,
            plan: DeployPlan::default(),
            suffix: None,
        }
    }

    /// Deploys with this billing plan.
    pub fn with_plan(mut self, plan: DeployPlan) -> Self {
        self.plan = plan;
        self
    }

    /// Gives deployed model ids this suffix (at most 8 characters; needed to deploy one model
    /// a second time).
    pub fn with_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = Some(suffix.into());
        self
    }

    /// The create request for `model` (a resolved model id) and `spec`: the model's base
    /// capacity is read from the deployable models (`NotFound` when it is not there), and the
    /// capacity is `spec.capacity` instances of it.
    pub async fn request(&self, model: &str, spec: &DeploySpec) -> Result<CreateDeployment> {
        let deployable = self.api.deployable_models().await?;
        let base = deployable
            .iter()
            .find(|m| m.model_name == model)
            .map(|m| m.base_capacity.max(1))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "model {model} is not deployable here: GET /deployments/models does not list it (a fine-tune's output appears there once it has succeeded, in the workspace and region that ran it)"
                ))
            })?;
        let instances = spec.capacity.max(1);
        let capacity = instances.checked_mul(base).ok_or_else(|| {
            Error::invalid(format!(
                "{instances} instances × base capacity {base} overflows"
            ))
        })?;
        Ok(CreateDeployment {
            model_name: model.to_string(),
            name: Some(spec.model_name.clone()),
            suffix: self.suffix.clone(),
            plan: self.plan.clone(),
            capacity: if self.plan.sized_in_units() {
                capacity
            } else {
                base
            },
        })
    }

    /// The Model Studio model a spec names: the id itself, or the one recorded under a prefix.
    pub async fn resolve_model(&self, spec: &DeploySpec) -> Result<String> {
        let path = spec.model_path.trim();
        let Ok(uri) = path.parse::<StoreUri>() else {
            return Ok(path.to_string());
        };
        let store = self.store.as_ref().ok_or_else(|| {
            Error::invalid(format!("{uri}: a store is needed to read the model record"))
        })?;
        let record = store
            .get_bytes(&uri.as_prefix().join(MODEL_RECORD)?)
            .await
            .map_err(|e| {
                if e.is_not_found() {
                    Error::not_found(format!(
                        "{uri} holds no {MODEL_RECORD}: no fine-tuned model there"
                    ))
                } else {
                    e
                }
            })?;
        let v: Value = serde_json::from_slice(&record)
            .map_err(|e| Error::invalid(format!("{uri}{MODEL_RECORD}: {e}")))?;
        v["finetuned_output"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::invalid(format!("{uri}{MODEL_RECORD} names no finetuned_output")))
    }
}

#[async_trait]
impl ModelDeployer for BailianDeployer {
    async fn deploy(&self, spec: &DeploySpec) -> Result<Deployment> {
        if spec.model_name.trim().is_empty() {
            return Err(Error::invalid("the deployment needs a name"));
        }
        let model = self.resolve_model(spec).await?;
        // Idempotent: a live deployment of the same model is returned, not duplicated.
        if let Some(existing) = self.api.deployments().await?.into_iter().find(|d| {
            d.model_name.as_deref() == Some(model.as_str())
                && !matches!(
                    d.status.as_str(),
                    "FAILED" | "DELETING" | "DELETED" | "STOPPED"
                )
        }) {
            return Ok(Deployment {
                model_name: spec.model_name.clone(),
                ..map_deployment(existing)
            });
        }
        let request = self.request(&model, spec).await?;
        let created = self.api.create_deployment(&request).await?;
        Ok(Deployment {
            model_name: spec.model_name.clone(),
            ..map_deployment(created)
        })
    }

    async fn status(&self, id: &str) -> Result<Deployment> {
        Ok(map_deployment(self.api.deployment(id).await?))
    }

    async fn undeploy(&self, id: &str) -> Result<()> {
        self.api.delete_deployment(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_parameters_are_typed_as_the_reference_types_them() {
        assert_eq!(hp_value("3"), json!(3));
        assert_eq!(hp_value("1.6e-5"), json!(1.6e-5));
        assert_eq!(hp_value("0.8"), json!(0.8));
        assert_eq!(hp_value("true"), json!(true));
        assert_eq!(hp_value("false"), json!(false));
        assert_eq!(hp_value("linear"), json!("linear"));
        assert_eq!(hp_value("0.1,0.05"), json!("0.1,0.05"));
        assert_eq!(hp_value("nan"), json!("nan"));
        assert_eq!(hp_value("inf"), json!("inf"));
    }
}
