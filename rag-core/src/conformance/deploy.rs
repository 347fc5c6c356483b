//! [`ModelDeployer`] conformance.

use crate::deploy::{DeploySpec, DeploymentStatus, ModelDeployer};
use crate::error::Error;

/// Runs every check. `model_path` must hold a deployable model on this deployer's side;
/// `missing_path` must not.
pub async fn run_all(deployer: &dyn ModelDeployer, model_path: &str, missing_path: &str) {
    let spec = DeploySpec {
        model_name: "conformance-llm".into(),
        model_path: model_path.into(),
        capacity: 1,
    };
    let dep = deployer.deploy(&spec).await.expect("deploy");
    assert_eq!(dep.model_name, spec.model_name);
    let again = deployer
        .deploy(&spec)
        .await
        .expect("deploying the same spec again");
    assert_eq!(again.id, dep.id, "deploy is idempotent");
    let status = deployer.status(&dep.id).await.expect("status");
    assert!(
        matches!(
            status.status,
            DeploymentStatus::Pending | DeploymentStatus::Running
        ),
        "a fresh deployment is pending or running: {status:?}"
    );
    deployer.undeploy(&dep.id).await.expect("undeploy");
    assert!(matches!(
        deployer.status(&dep.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        deployer.undeploy(&dep.id).await,
        Err(Error::NotFound { .. })
    ));

    let missing = DeploySpec {
        model_path: missing_path.into(),
        ..spec
    };
    assert!(
        matches!(deployer.deploy(&missing).await, Err(Error::NotFound { .. })),
        "deploying a path with no model is NotFound"
    );
    let unnamed = DeploySpec {
        model_name: " ".into(),
        ..missing
    };
    assert!(matches!(
        deployer.deploy(&unnamed).await,
        Err(Error::InvalidInput { .. })
    ));
}
