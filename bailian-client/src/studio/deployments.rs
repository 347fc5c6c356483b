//! Deployments: create, get, list (every page), scale, delete.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Envelope, ModelStudio, path_segment};
use rag_core::Result;

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
struct DeploymentPage {
    #[serde(default)]
    deployments: Vec<DeploymentInfo>,
    #[serde(default)]
    total: usize,
}

impl ModelStudio {
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
}
