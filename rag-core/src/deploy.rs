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

/// Polls `deployer` until `dep` serves (`Running`), backing off from `wait.interval` to
/// `wait.max_interval`. A `Failed` or `Stopped` deployment is an error with the vendor's
/// reason; one still `Pending` after `wait.timeout` is [`Error::Timeout`](crate::Error::Timeout)
/// (it is left as it is: the caller decides whether to undeploy).
pub async fn wait_until_serving(
    deployer: &dyn ModelDeployer,
    mut dep: Deployment,
    wait: crate::training::WaitOptions,
) -> Result<Deployment> {
    let start = std::time::Instant::now();
    let mut interval = wait.interval;
    loop {
        match &dep.status {
            DeploymentStatus::Running => return Ok(dep),
            DeploymentStatus::Failed { reason } => {
                return Err(crate::Error::backend_msg(
                    "deploy",
                    format!("deployment {} failed: {reason}", dep.id),
                ));
            }
            DeploymentStatus::Stopped => {
                return Err(crate::Error::backend_msg(
                    "deploy",
                    format!("deployment {} stopped", dep.id),
                ));
            }
            DeploymentStatus::Pending => {}
        }
        if start.elapsed() >= wait.timeout {
            return Err(crate::Error::Timeout {
                what: format!("deployment {} to serve", dep.id),
                after: start.elapsed(),
            });
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(wait.max_interval);
        dep = deployer.status(&dep.id).await?;
    }
}
