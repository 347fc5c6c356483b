//! Deployments: the deployable models and their base capacity, create (with a billing plan),
//! get, list (every page), scale, delete.
//!
//! Wire format: Model Studio's deployment API reference
//! (<https://help.aliyun.com/zh/model-studio/model-deployment-api>, Beijing region only).
//! `GET /deployments/models` lists what can be deployed with each model's `base_capacity`, the
//! smallest number of resource units it runs on; `POST /deployments` takes `model_name`,
//! `capacity` (a multiple of that base), an optional `plan` (none: billed by compute units;
//! `lora`: by tokens, capacity required but ignored; `mu`: model units of a `deploy_spec`;
//! `ptu`: provisioned throughput, `ptu_capacity {input_tpm, output_tpm}` instead of a
//! capacity), an optional display `name` and an optional `suffix` (at most 8 characters,
//! needed to deploy one model twice).

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Envelope, ModelStudio, path_segment};
use rag_core::{Error, Result};

/// The longest deployment `suffix` the service takes.
pub const MAX_SUFFIX_CHARS: usize = 8;

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
    /// Resource units asked for.
    #[serde(default)]
    pub capacity: Option<u32>,
    /// Resource units serving.
    #[serde(default)]
    pub ready_capacity: Option<u32>,
    /// The smallest number of units the model runs on.
    #[serde(default)]
    pub base_capacity: Option<u32>,
    /// The billing plan (`mu`, `lora`, `ptu` …; absent for compute units).
    #[serde(default)]
    pub plan: Option<String>,
}

/// A model `GET /deployments/models` lists as deployable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct DeployableModel {
    /// Its id.
    pub model_name: String,
    /// The smallest number of resource units it runs on; a deployment's capacity is a
    /// multiple of it. (The reference's table calls it a string, its examples send numbers:
    /// both are read.)
    #[serde(deserialize_with = "number_or_string")]
    pub base_capacity: u32,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("base_capacity {n}"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("base_capacity {s:?}"))),
        other => Err(serde::de::Error::custom(format!("base_capacity {other}"))),
    }
}

/// How a deployment is billed and sized (`plan` of `POST /deployments`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum DeployPlan {
    /// No `plan`: billed by the hour of compute units; `capacity` units, a multiple of the
    /// model's base capacity (the body older clients sent).
    #[default]
    Compute,
    /// `"plan": "lora"`: billed by tokens (models fine-tuned with `efficient_sft`); the
    /// service requires a capacity but ignores it.
    Lora,
    /// `"plan": "mu"`: model units of `deploy_spec` (`MU1` …), `capacity` of them.
    ModelUnits {
        /// The model-unit specification.
        deploy_spec: String,
    },
    /// `"plan": "ptu"`: provisioned throughput, no capacity.
    Ptu {
        /// Input tokens per minute.
        input_tpm: u64,
        /// Output tokens per minute.
        output_tpm: u64,
    },
}

impl DeployPlan {
    /// Whether the deployment's size is resource units that must be a multiple of the
    /// model's base capacity.
    pub fn sized_in_units(&self) -> bool {
        matches!(self, Self::Compute | Self::ModelUnits { .. })
    }
}

impl std::str::FromStr for DeployPlan {
    type Err = Error;

    /// `compute`, `lora`, `mu:<deploy_spec>` (`mu:MU1`) or `ptu:<input_tpm>,<output_tpm>`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = || {
            Error::invalid(format!(
                "deployment plan {s:?}: use compute, lora, mu:<spec> (mu:MU1) or ptu:<input tpm>,<output tpm>"
            ))
        };
        match s.split_once(':') {
            None if s == "compute" => Ok(Self::Compute),
            None if s == "lora" => Ok(Self::Lora),
            Some(("mu", spec)) if !spec.trim().is_empty() => Ok(Self::ModelUnits {
                deploy_spec: spec.trim().to_string(),
            }),
            Some(("ptu", tpm)) => {
                let (i, o) = tpm.split_once(',').ok_or_else(bad)?;
                Ok(Self::Ptu {
                    input_tpm: i.trim().parse().map_err(|_| bad())?,
                    output_tpm: o.trim().parse().map_err(|_| bad())?,
                })
            }
            _ => Err(bad()),
        }
    }
}

/// A deployment to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateDeployment {
    /// The model to deploy (a fine-tune's `finetuned_output`).
    pub model_name: String,
    /// The name shown in the console.
    pub name: Option<String>,
    /// The deployed model id's suffix (≤ [`MAX_SUFFIX_CHARS`]).
    pub suffix: Option<String>,
    /// Billing and sizing.
    pub plan: DeployPlan,
    /// Resource units (ignored by PTU plans).
    pub capacity: u32,
}

impl CreateDeployment {
    /// The request body, after checking what the service would refuse.
    pub fn body(&self) -> Result<Value> {
        if self.model_name.trim().is_empty() {
            return Err(Error::invalid("a deployment needs a model_name"));
        }
        let mut body = json!({"model_name": self.model_name});
        match &self.plan {
            DeployPlan::Compute => body["capacity"] = json!(self.capacity),
            DeployPlan::Lora => {
                body["plan"] = json!("lora");
                body["capacity"] = json!(self.capacity.max(1));
            }
            DeployPlan::ModelUnits { deploy_spec } => {
                body["plan"] = json!("mu");
                body["deploy_spec"] = json!(deploy_spec);
                body["capacity"] = json!(self.capacity);
            }
            DeployPlan::Ptu {
                input_tpm,
                output_tpm,
            } => {
                body["plan"] = json!("ptu");
                body["ptu_capacity"] = json!({"input_tpm": input_tpm, "output_tpm": output_tpm});
            }
        }
        if let Some(name) = self.name.as_deref().filter(|n| !n.trim().is_empty()) {
            body["name"] = json!(name);
        }
        if let Some(suffix) = self.suffix.as_deref().filter(|s| !s.is_empty()) {
            if suffix.chars().count() > MAX_SUFFIX_CHARS {
                return Err(Error::invalid(format!(
                    "deployment suffix {suffix:?} is longer than the {MAX_SUFFIX_CHARS} characters Model Studio takes"
                )));
            }
            body["suffix"] = json!(suffix);
        }
        Ok(body)
    }
}

/// One page of a listing: its items (under `models` or `deployments`) and the total.
#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new", alias = "models", alias = "deployments")]
    items: Vec<T>,
    #[serde(default)]
    total: usize,
}

impl ModelStudio {
    /// Every model this workspace can deploy, with its base capacity
    /// (`GET /deployments/models`, all pages).
    pub async fn deployable_models(&self) -> Result<Vec<DeployableModel>> {
        self.all_pages("deployments/models", "list deployable models")
            .await
    }

    /// Every item of a paged listing at `path` (100 a page, until `total` or an empty page).
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<Vec<T>> {
        let mut all = Vec::new();
        for page in 1.. {
            let url = self.url(&format!("{path}?page_no={page}&page_size=100"));
            let e: Envelope<Page<T>> = self
                .http
                .json(Method::GET, &url, None, &self.what(what))
                .await?;
            let n = e.output.items.len();
            all.extend(e.output.items);
            if n == 0 || all.len() >= e.output.total {
                break;
            }
        }
        Ok(all)
    }

    /// Creates a deployment (`POST /deployments`).
    pub async fn create_deployment(&self, d: &CreateDeployment) -> Result<DeploymentInfo> {
        let body = d.body()?;
        let e: Envelope<DeploymentInfo> = self
            .http
            .json(
                Method::POST,
                &self.url("deployments"),
                Some(&body),
                &self.what("create deployment"),
            )
            .await?;
        Ok(e.output)
    }

    /// A deployment (`GET /deployments/{deployed_model}`).
    pub async fn deployment(&self, id: &str) -> Result<DeploymentInfo> {
        let url = self.url(&format!("deployments/{}", path_segment(id)?));
        let e: Envelope<DeploymentInfo> = self
            .http
            .json(Method::GET, &url, None, &self.what("get deployment"))
            .await?;
        Ok(e.output)
    }

    /// Every deployment (`GET /deployments`, all pages).
    pub async fn deployments(&self) -> Result<Vec<DeploymentInfo>> {
        self.all_pages("deployments", "list deployments").await
    }

    /// Changes a deployment's capacity in resource units
    /// (`PUT /deployments/{deployed_model}/scale`).
    pub async fn scale_deployment(&self, id: &str, capacity: u32) -> Result<DeploymentInfo> {
        let url = self.url(&format!("deployments/{}/scale", path_segment(id)?));
        let body = json!({"capacity": capacity});
        let e: Envelope<DeploymentInfo> = self
            .http
            .json(
                Method::PUT,
                &url,
                Some(&body),
                &self.what("scale deployment"),
            )
            .await?;
        Ok(e.output)
    }

    /// Deletes a deployment (`DELETE /deployments/{deployed_model}`).
    pub async fn delete_deployment(&self, id: &str) -> Result<()> {
        let url = self.url(&format!("deployments/{}", path_segment(id)?));
        let _: Value = self
            .http
            .json(Method::DELETE, &url, None, &self.what("delete deployment"))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(plan: DeployPlan) -> CreateDeployment {
        CreateDeployment {
            model_name: "qwen3-8b-ft-202511132025-0260".into(),
            name: Some("qwen3-8b-ft".into()),
            suffix: None,
            plan,
            capacity: 4,
        }
    }

    #[test]
    fn each_plan_is_the_documented_body() {
        let m = "qwen3-8b-ft-202511132025-0260";
        assert_eq!(
            create(DeployPlan::Compute).body().unwrap(),
            json!({"model_name": m, "name": "qwen3-8b-ft", "capacity": 4})
        );
        assert_eq!(
            create(DeployPlan::Lora).body().unwrap(),
            json!({"model_name": m, "name": "qwen3-8b-ft", "plan": "lora", "capacity": 4})
        );
        assert_eq!(
            create("mu:MU1".parse().unwrap()).body().unwrap(),
            json!({"model_name": m, "name": "qwen3-8b-ft", "plan": "mu", "deploy_spec": "MU1", "capacity": 4})
        );
        assert_eq!(
            create("ptu:10000,1000".parse().unwrap()).body().unwrap(),
            json!({"model_name": m, "name": "qwen3-8b-ft", "plan": "ptu", "ptu_capacity": {"input_tpm": 10000, "output_tpm": 1000}})
        );
    }

    #[test]
    fn bad_plans_and_long_suffixes_are_refused_before_sending() {
        for bad in ["", "mu", "mu:", "ptu:1", "ptu:a,b", "dtu", "cu"] {
            assert!(bad.parse::<DeployPlan>().is_err(), "{bad}");
        }
        let mut d = create(DeployPlan::Compute);
        d.suffix = Some("custom-llm-v1".into());
        let err = d.body().unwrap_err().to_string();
        assert!(err.contains("8 characters"), "{err}");
        d.suffix = Some("v1".into());
        assert_eq!(d.body().unwrap()["suffix"], "v1");
    }

    #[test]
    fn base_capacity_reads_as_number_or_string() {
        let m: DeployableModel =
            serde_json::from_value(json!({"model_name": "emo", "base_capacity": 8})).unwrap();
        assert_eq!(m.base_capacity, 8);
        let m: DeployableModel =
            serde_json::from_value(json!({"model_name": "emo", "base_capacity": "2"})).unwrap();
        assert_eq!(m.base_capacity, 2);
        assert!(
            serde_json::from_value::<DeployableModel>(
                json!({"model_name": "emo", "base_capacity": -1})
            )
            .is_err()
        );
    }
}
