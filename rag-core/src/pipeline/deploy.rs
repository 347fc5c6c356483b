//! Stage 4: deploy a fine-tuned model and wait until it serves.

use super::Pipeline;
use crate::deploy::{DeploySpec, Deployment};
use crate::error::{Error, Result};
use crate::stage::Stage;
use crate::training::WaitOptions;

impl Pipeline {
    /// Stage 4: deploys a fine-tuned model and waits until it serves.
    pub async fn deploy(&self, spec: &DeploySpec, wait: WaitOptions) -> Result<Deployment> {
        let stage = Stage::Deploy;
        let deployer = self.deployer()?;
        self.progress.begin(stage, None);
        let dep = deployer.deploy(spec).await?;
        let id = dep.id.clone();
        let dep = match crate::deploy::wait_until_serving(deployer.as_ref(), dep, wait).await {
            Ok(dep) => dep,
            // Never serving (failed, stopped, or not up in time): undeploy, so that nothing is
            // left half-registered (or billing) behind an error. A failed status call is
            // returned as it is: the deployment may be fine.
            Err(e @ (Error::Timeout { .. } | Error::Backend { .. })) => {
                let cleanup = match deployer.undeploy(&id).await {
                    Ok(()) => format!("deployment {id} was undeployed"),
                    Err(u) => format!("undeploying {id} failed as well: {u}"),
                };
                tracing::warn!(deployment = %id, error = %e, "{cleanup}");
                return Err(match e {
                    Error::Timeout { what, after } => Error::Timeout {
                        what: format!("{what} ({cleanup})"),
                        after,
                    },
                    other => Error::backend_msg("deploy", format!("{other}; {cleanup}")),
                });
            }
            Err(e) => return Err(e),
        };
        self.progress
            .end(stage, &format!("{} serves as {}", dep.id, dep.model_name));
        Ok(dep)
    }
}
