//! [`ModelDeployer`]: the seam for seed step 4, serving a fine-tuned model under a name.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A model to deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    /// The name clients will call it by (`custom-llm-v1`).
    pub model_name: String,
    /// Where the fine-tuned weights are (`oss://bucket/models/llm-ft/`), or a vendor's
    /// fine-tuned model id for vendors that deploy those.
    pub model_path: String,
    /// Instances to run.
    pub capacity: u32,
}

/// Where a deployment is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DeploymentStatus {
    /// Being created or scaled.
    Pending,
    /// Serving requests.
    Running,
    /// Could not be brought up.
    Failed {
        /// The vendor's reason.
        reason: String,
    },
    /// Removed or stopped.
    Stopped,
}

/// A deployment as the deployer knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The deployer's id for it.
    pub id: String,
    /// The name to pass as `model` in chat requests.
    pub model_name: String,
    /// Current status.
    pub status: DeploymentStatus,
}

/// Serves fine-tuned models: the local registry here, Bailian deployments in `bailian-client`.
#[async_trait]
pub trait ModelDeployer: Send + Sync {
    /// Starts deploying; returns at once. Deploying a name that is already deployed from the same
    /// path returns the existing deployment (idempotent).
    async fn deploy(&self, spec: &DeploySpec) -> Result<Deployment>;

    /// The deployment's current state, or [`crate::Error::NotFound`].
    async fn status(&self, id: &str) -> Result<Deployment>;

    /// Removes a deployment. Removing a missing one is [`crate::Error::NotFound`].
    async fn undeploy(&self, id: &str) -> Result<()>;
}
