use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::deploy::{DeploySpec, Deployment, DeploymentStatus, ModelDeployer};
use crate::error::{Error, Result};
use crate::store::ObjectStore;
use crate::uri::StoreUri;

/// A local [`ModelDeployer`]: a registry file (`deployments.json`) mapping model names to model
/// paths in the store. A deployment is `Running` once its path is checked to hold files; the
/// local [`crate::local::ExtractiveChat`] then serves under that name. There is no local LLM
/// runtime, so a deployed path is recorded, not loaded.
#[derive(Debug)]
pub struct LocalDeployer {
    registry: PathBuf,
    store: Arc<dyn ObjectStore>,
    lock: Mutex<()>,
}

impl LocalDeployer {
    /// A deployer keeping its registry at `registry` and checking paths in `store`.
    pub fn new(registry: impl Into<PathBuf>, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            registry: registry.into(),
            store,
            lock: Mutex::new(()),
        }
    }

    async fn load(&self) -> Result<BTreeMap<String, (String, Deployment)>> {
        match tokio::fs::read(&self.registry).await {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::invalid(format!("{}: {e}", self.registry.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn save(&self, reg: &BTreeMap<String, (String, Deployment)>) -> Result<()> {
        let failed = |e| Error::io(e, format!("writing {}", self.registry.display()));
        if let Some(dir) = self.registry.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(failed)?;
        }
        let json = serde_json::to_vec_pretty(reg)
            .map_err(|e| Error::backend("local-deploy", "encode registry", e))?;
        let tmp = self.registry.with_extension("tmp");
        tokio::fs::write(&tmp, json).await.map_err(failed)?;
        tokio::fs::rename(&tmp, &self.registry)
            .await
            .map_err(failed)?;
        Ok(())
    }
}

#[async_trait]
impl ModelDeployer for LocalDeployer {
    async fn deploy(&self, spec: &DeploySpec) -> Result<Deployment> {
        if spec.model_name.trim().is_empty() {
            return Err(Error::invalid("model name is empty"));
        }
        let _guard = self.lock.lock().await;
        let mut reg = self.load().await?;
        if let Some((path, dep)) = reg.get(&spec.model_name) {
            if *path == spec.model_path {
                return Ok(dep.clone());
            }
            return Err(Error::AlreadyExists {
                what: format!(
                    "deployment {:?} of another model path ({path})",
                    spec.model_name
                ),
            });
        }
        let uri: StoreUri = spec.model_path.parse()?;
        let mut files = self.store.list(&uri.as_prefix());
        if futures::StreamExt::next(&mut files)
            .await
            .transpose()?
            .is_none()
        {
            return Err(Error::not_found(format!("model files under {uri}")));
        }
        let dep = Deployment {
            id: format!("local-{}", spec.model_name),
            model_name: spec.model_name.clone(),
            status: DeploymentStatus::Running,
        };
        reg.insert(
            spec.model_name.clone(),
            (spec.model_path.clone(), dep.clone()),
        );
        self.save(&reg).await?;
        Ok(dep)
    }

    async fn status(&self, id: &str) -> Result<Deployment> {
        self.load()
            .await?
            .into_values()
            .map(|(_, d)| d)
            .find(|d| d.id == id)
            .ok_or_else(|| Error::not_found(format!("deployment {id}")))
    }

    async fn undeploy(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let mut reg = self.load().await?;
        let name = reg
            .iter()
            .find(|(_, (_, d))| d.id == id)
            .map(|(n, _)| n.clone())
            .ok_or_else(|| Error::not_found(format!("deployment {id}")))?;
        reg.remove(&name);
        self.save(&reg).await
    }
}
