//! PAI-DLC job resources: CreateJob, GetJob, ListJobs, StopJob, GetPodLogs
//! (API 2020-12-03, ROA; field names as in the API reference,
//! <https://www.alibabacloud.com/help/en/pai/developer-reference/api-pai-dlc-2020-12-03-createjob>).

use std::collections::BTreeMap;

use rag_core::Result;
use serde::{Deserialize, Serialize};

use crate::client::PaiClient;
use crate::signing::percent_encode;

/// Compute of one node type when no ECS spec is named (values are strings on the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceConfig {
    /// CPU cores (`"8"`).
    #[serde(rename = "CPU", skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory (`"64Gi"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// GPUs (`"1"`).
    #[serde(rename = "GPU", skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// GPU model (`"A100"`).
    #[serde(rename = "GPUType", skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
}

/// One node type of a job (`Worker`, `Master` …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobSpecItem {
    /// Node type.
    #[serde(rename = "Type")]
    pub node_type: String,
    /// Container image.
    pub image: String,
    /// Number of nodes of this type.
    pub pod_count: u32,
    /// ECS instance type (public resources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecs_spec: Option<String>,
    /// CPU/memory/GPU (resource quotas).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_config: Option<ResourceConfig>,
}

/// A data source mounted into the job's containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataSource {
    /// A registered data source's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_source_id: Option<String>,
    /// An OSS URI mounted directly (`oss://bucket.oss-cn-hangzhou-internal.aliyuncs.com/path/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Where it appears in the container.
    pub mount_path: String,
}

/// The CreateJob request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateJobRequest {
    /// Job name (1–256 characters of letters, digits, `_`, `.`, `-`).
    pub display_name: String,
    /// `PyTorchJob`, `TFJob`, `MPIJob`, `XGBoostJob`, `ElasticBatchJob`, `RayJob` …
    pub job_type: String,
    /// Node types.
    pub job_specs: Vec<JobSpecItem>,
    /// The command every node runs.
    pub user_command: String,
    /// Workspace.
    pub workspace_id: String,
    /// Mounted data.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub data_sources: Vec<DataSource>,
    /// Environment variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub envs: BTreeMap<String, String>,
    /// A resource quota id; public resources when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

/// The CreateJob answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateJobResponse {
    /// The new job's id (`dlc1o9k3j1...`).
    pub job_id: String,
    /// Request id, for support tickets.
    #[serde(default)]
    pub request_id: String,
}

/// One pod of a job.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Pod {
    /// Pod id, for GetPodLogs.
    pub pod_id: String,
    /// Node type.
    #[serde(rename = "Type", default)]
    pub node_type: String,
    /// Pod status.
    #[serde(default)]
    pub status: String,
}

/// A job as GetJob and ListJobs describe it (the fields this crate uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Job {
    /// Job id.
    pub job_id: String,
    /// Job name.
    #[serde(default)]
    pub display_name: String,
    /// `Creating`, `Queuing`, `Bidding`, `EnvPreparing`, `SanityChecking`, `Running`,
    /// `Restarting`, `Stopping`, `SucceededReserving`, `FailedReserving`, `Succeeded`, `Failed`,
    /// `Stopped`.
    pub status: String,
    /// Why it is in this state (failures).
    #[serde(default)]
    pub reason_code: String,
    /// A human explanation of the reason.
    #[serde(default)]
    pub reason_message: String,
    /// Its pods (GetJob only).
    #[serde(default)]
    pub pods: Vec<Pod>,
}

/// One page of ListJobs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListJobsResponse {
    /// Jobs of the page.
    #[serde(default)]
    pub jobs: Vec<Job>,
    /// Jobs in all pages.
    #[serde(default)]
    pub total_count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PodLogs {
    #[serde(default)]
    logs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StopJobResponse {
    #[allow(dead_code)]
    #[serde(default)]
    job_id: String,
}

impl PaiClient {
    /// CreateJob: `POST /api/v1/jobs`.
    pub async fn create_job(&self, req: &CreateJobRequest) -> Result<CreateJobResponse> {
        let body =
            serde_json::to_value(req).map_err(|e| rag_core::Error::invalid(e.to_string()))?;
        self.call("CreateJob", "POST", "/api/v1/jobs", &[], Some(&body))
            .await
    }

    /// GetJob: `GET /api/v1/jobs/{JobId}`.
    pub async fn get_job(&self, job_id: &str) -> Result<Job> {
        let path = format!("/api/v1/jobs/{}", percent_encode(job_id, false));
        self.call("GetJob", "GET", &path, &[], None).await
    }

    /// ListJobs: one page (from 1) of the workspace's jobs.
    pub async fn list_jobs(&self, page_number: u32, page_size: u32) -> Result<ListJobsResponse> {
        let query = vec![
            (
                "WorkspaceId".to_string(),
                self.config().workspace_id().to_string(),
            ),
            ("PageNumber".to_string(), page_number.to_string()),
            ("PageSize".to_string(), page_size.to_string()),
        ];
        self.call("ListJobs", "GET", "/api/v1/jobs", &query, None)
            .await
    }

    /// Every job of the workspace, page by page.
    pub async fn list_all_jobs(&self) -> Result<Vec<Job>> {
        let mut out = Vec::new();
        for page in 1.. {
            let resp = self.list_jobs(page, 50).await?;
            let n = resp.jobs.len();
            out.extend(resp.jobs);
            if n == 0 || out.len() as u64 >= resp.total_count {
                break;
            }
        }
        Ok(out)
    }

    /// StopJob: `POST /api/v1/jobs/{JobId}/stop`.
    pub async fn stop_job(&self, job_id: &str) -> Result<()> {
        let path = format!("/api/v1/jobs/{}/stop", percent_encode(job_id, false));
        let _: StopJobResponse = self.call("StopJob", "POST", &path, &[], None).await?;
        Ok(())
    }

    /// GetPodLogs: `GET /api/v1/jobs/{JobId}/pods/{PodId}/logs`, at most `max_lines` lines.
    pub async fn pod_logs(
        &self,
        job_id: &str,
        pod_id: &str,
        max_lines: u32,
    ) -> Result<Vec<String>> {
        let path = format!(
            "/api/v1/jobs/{}/pods/{}/logs",
            percent_encode(job_id, false),
            percent_encode(pod_id, false)
        );
        let query = vec![("MaxLines".to_string(), max_lines.to_string())];
        let logs: PodLogs = self.call("GetPodLogs", "GET", &path, &query, None).await?;
        Ok(logs.logs)
    }
}
