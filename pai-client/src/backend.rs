//! [`PaiBackend`]: rag-core's `TrainingBackend` on PAI-DLC.

use std::collections::BTreeMap;

use async_trait::async_trait;
use rag_core::training::{Framework, JobId, JobSpec, JobStatus, TrainingBackend, env_name};
use rag_core::{Error, Result, Scheme, StoreUri};

use crate::client::PaiClient;
use crate::jobs::{CreateJobRequest, DataSource, Job, JobSpecItem, ResourceConfig};

/// Settings of the jobs this backend creates that a `JobSpec` does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlcDefaults {
    /// The container image (one with the trainer, e.g. the project's own image).
    pub image: String,
    /// A resource quota id; public pay-as-you-go resources when unset.
    pub resource_id: Option<String>,
    /// The ECS instance type used when a job names none and no quota is set.
    pub ecs_spec: String,
    /// OSS region, to mount `oss://bucket/path` inputs over the internal endpoint.
    pub oss_region: String,
    /// Store prefixes every job mounts, and where (`DataSources` with `Uri` and `MountPath`,
    /// beside the job's inputs): e.g. the folder holding the `ragloop` binary an image-free
    /// job runs.
    pub mounts: Vec<(StoreUri, String)>,
}

/// A [`TrainingBackend`] that runs jobs on PAI-DLC.
///
/// A `JobSpec` becomes a CreateJob request: `Framework::PyTorch`, `DeepSpeed` and `Native` run
/// as `PyTorchJob` (DLC launches DeepSpeed under PyTorchJob), `Other(t)` as `t`; the command is
/// the `UserCommand`; workers are `PodCount`; the instance type, or CPU/memory/GPU on a quota,
/// size each worker; inputs are mounted from OSS under `/mnt/data/<name>/`. The job sees the
/// same environment as a local job (`RAGLOOP_OUTPUT`, `RAGLOOP_INPUT_<NAME>`,
/// `RAGLOOP_HP_<NAME>`), so the same trainer command runs locally and on PAI.
#[derive(Debug, Clone)]
pub struct PaiBackend {
    client: PaiClient,
    defaults: DlcDefaults,
}

impl PaiBackend {
    /// A backend over `client` creating jobs with `defaults`.
    pub fn new(client: PaiClient, defaults: DlcDefaults) -> Self {
        Self { client, defaults }
    }

    /// The client.
    pub fn client(&self) -> &PaiClient {
        &self.client
    }

    /// The CreateJob request for `spec` (what `submit` sends; also for `--dry-run`).
    pub fn create_request(&self, spec: &JobSpec) -> Result<CreateJobRequest> {
        spec.validate()?;
        let job_type = match &spec.framework {
            Framework::PyTorch | Framework::DeepSpeed | Framework::Native => {
                "PyTorchJob".to_string()
            }
            Framework::Other(t) => t.clone(),
        };
        let r = &spec.resources;
        let (ecs_spec, resource_config) = match (&r.instance_type, &self.defaults.resource_id) {
            (Some(it), _) => (Some(it.clone()), None),
            (None, Some(_)) => (
                None,
                Some(ResourceConfig {
                    cpu: Some(format!("{}", r.cpus)),
                    memory: Some(format!("{}Gi", r.memory_gib)),
                    gpu: (r.gpus > 0).then(|| r.gpus.to_string()),
                    gpu_type: None,
                }),
            ),
            (None, None) => (Some(self.defaults.ecs_spec.clone()), None),
        };
        let mut data_sources = Vec::new();
        for (uri, path) in &self.defaults.mounts {
            let oss = self.mountable(uri).ok_or_else(|| {
                Error::invalid(format!("{uri}: DLC mounts OSS prefixes only (oss://…)"))
            })?;
            data_sources.push(DataSource {
                data_source_id: None,
                uri: Some(oss),
                mount_path: path.clone(),
            });
        }
        for (name, uri) in &spec.inputs {
            if let Some(oss) = self.mountable(uri) {
                data_sources.push(DataSource {
                    data_source_id: None,
                    uri: Some(oss),
                    mount_path: format!("/mnt/data/{}/", env_name(name).to_lowercase()),
                });
            }
        }
        Ok(CreateJobRequest {
            display_name: spec.name.clone(),
            job_type,
            job_specs: vec![JobSpecItem {
                node_type: "Worker".into(),
                image: self.defaults.image.clone(),
                pod_count: r.workers.max(1),
                ecs_spec,
                resource_config,
            }],
            user_command: shell_join(&spec.command),
            workspace_id: self.client.config().workspace_id().to_string(),
            data_sources,
            envs: spec.job_environment(),
            resource_id: self.defaults.resource_id.clone(),
        })
    }

    /// Streams the job's log: calls `on_line` with each new line (prefixed with its pod) every
    /// `interval`, until the job ends; returns the final status.
    pub async fn follow_logs(
        &self,
        id: &JobId,
        interval: std::time::Duration,
        mut on_line: impl FnMut(&str) + Send,
    ) -> Result<JobStatus> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        loop {
            let job = self.client.get_job(&id.0).await?;
            let status = map_status(&job);
            for pod in &job.pods {
                let lines = self.client.pod_logs(&id.0, &pod.pod_id, 10_000).await?;
                let from = seen.get(&pod.pod_id).copied().unwrap_or(0).min(lines.len());
                for line in &lines[from..] {
                    on_line(&format!("[{}] {line}", pod.pod_id));
                }
                seen.insert(pod.pod_id.clone(), lines.len());
            }
            if status.is_terminal() {
                return Ok(status);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// `oss://bucket/path` as DLC mounts it: the bucket on the region's internal endpoint.
    fn mountable(&self, uri: &StoreUri) -> Option<String> {
        (uri.scheme() == Scheme::Oss).then(|| {
            format!(
                "oss://{}.oss-{}-internal.aliyuncs.com/{}",
                uri.bucket(),
                self.defaults.oss_region,
                uri.key()
            )
        })
    }
}

/// Joins arguments into one POSIX shell command line, quoting where needed.
pub fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A DLC job status as rag-core's.
pub fn map_status(job: &Job) -> JobStatus {
    match job.status.as_str() {
        "Succeeded" => JobStatus::Succeeded,
        "Failed" => JobStatus::Failed {
            reason: match (job.reason_code.as_str(), job.reason_message.as_str()) {
                ("", "") => "failed (PAI gave no reason)".to_string(),
                (code, "") => code.to_string(),
                ("", msg) => msg.to_string(),
                (code, msg) => format!("{code}: {msg}"),
            },
        },
        "Stopped" => JobStatus::Stopped,
        "Creating" | "Queuing" | "Bidding" | "EnvPreparing" | "SanityChecking" => JobStatus::Queued,
        // Running, Restarting, Stopping, SucceededReserving, FailedReserving, and any state
        // added later: not finished yet.
        _ => JobStatus::Running,
    }
}

#[async_trait]
impl TrainingBackend for PaiBackend {
    async fn submit(&self, spec: &JobSpec) -> Result<JobId> {
        let req = self.create_request(spec)?;
        let resp = self.client.create_job(&req).await?;
        tracing::info!(job = %resp.job_id, name = %spec.name, request = %resp.request_id, "PAI-DLC job created");
        Ok(JobId(resp.job_id))
    }

    async fn status(&self, id: &JobId) -> Result<JobStatus> {
        Ok(map_status(&self.client.get_job(&id.0).await?))
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        let job = self.client.get_job(&id.0).await?;
        let mut out = String::new();
        for pod in &job.pods {
            let lines = self.client.pod_logs(&id.0, &pod.pod_id, 2000).await?;
            for line in lines {
                out.push_str(&format!("[{}] {line}\n", pod.pod_id));
            }
        }
        Ok(out)
    }

    async fn stop(&self, id: &JobId) -> Result<()> {
        let job = self.client.get_job(&id.0).await?;
        if map_status(&job).is_terminal() {
            return Ok(());
        }
        match self.client.stop_job(&id.0).await {
            Ok(()) => Ok(()),
            // It may have ended between the two calls.
            Err(Error::InvalidInput { .. })
                if map_status(&self.client.get_job(&id.0).await?).is_terminal() =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_for_the_shell() {
        let cmd = [
            "ragloop",
            "train",
            "--data",
            "oss://b/raw docs/",
            "--name",
            "it's",
        ]
        .map(String::from);
        assert_eq!(
            shell_join(&cmd),
            "ragloop train --data 'oss://b/raw docs/' --name 'it'\\''s'"
        );
    }

    #[test]
    fn statuses_map_with_reasons() {
        let job = |status: &str, code: &str, msg: &str| Job {
            job_id: "j".into(),
            display_name: String::new(),
            status: status.into(),
            reason_code: code.into(),
            reason_message: msg.into(),
            pods: vec![],
        };
        assert_eq!(map_status(&job("Queuing", "", "")), JobStatus::Queued);
        assert_eq!(map_status(&job("EnvPreparing", "", "")), JobStatus::Queued);
        assert_eq!(
            map_status(&job("SucceededReserving", "", "")),
            JobStatus::Running
        );
        assert_eq!(map_status(&job("Succeeded", "", "")), JobStatus::Succeeded);
        assert_eq!(
            map_status(&job("Failed", "JobFailed", "exit code 1")),
            JobStatus::Failed {
                reason: "JobFailed: exit code 1".into()
            }
        );
    }
}
