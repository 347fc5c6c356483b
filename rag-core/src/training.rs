//! [`TrainingBackend`]: runs training jobs (seed steps 2 and 3: `pai submit …`), and the
//! contract of a job's output prefix: the job writes [`SUCCESS_MARKER`] last, and the driver
//! that submitted it writes [`JOB_RECORD`] right away (see `Pipeline::run_job`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::uri::StoreUri;

/// What a job trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Fine-tune (or fit) an embedding model on the raw documents.
    EmbeddingFineTune,
    /// Fine-tune a generative LLM on question/answer pairs.
    LlmFineTune,
    /// Any other command (batch embedding, data preparation …).
    Script,
}

/// The framework a job runs under (PAI-DLC picks its job type from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framework {
    /// PyTorch (DLC `PyTorchJob`).
    PyTorch,
    /// DeepSpeed (DLC `DeepSpeedJob`).
    DeepSpeed,
    /// A plain command with no framework launcher.
    Native,
    /// Anything else, by the backend's name for it.
    Other(String),
}

/// Compute asked for by a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// Number of workers (processes/pods).
    pub workers: u32,
    /// CPU cores per worker.
    pub cpus: f32,
    /// Memory per worker in GiB.
    pub memory_gib: f32,
    /// GPUs per worker.
    pub gpus: u32,
    /// A backend-specific instance type (e.g. `ecs.gn7i-c8g1.2xlarge`), when chosen by name.
    pub instance_type: Option<String>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            workers: 1,
            cpus: 1.0,
            memory_gib: 2.0,
            gpus: 0,
            instance_type: None,
        }
    }
}

/// A training job to submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Display name (`emb-train`, `llm-ft`).
    pub name: String,
    /// What it trains.
    pub kind: JobKind,
    /// The framework launcher.
    pub framework: Framework,
    /// The command each worker runs (program and arguments). Locally a process; on PAI-DLC the
    /// container's user command.
    pub command: Vec<String>,
    /// Named inputs (`data` → `oss://bucket/raw-docs/`).
    pub inputs: BTreeMap<String, StoreUri>,
    /// Where the job writes its result (`oss://bucket/models/emb-v1/`).
    pub output: StoreUri,
    /// The model to start from, when fine-tuning (`qwen-7b`, a model directory URI …).
    pub base_model: Option<String>,
    /// Hyper-parameters, passed to the job as `RAGLOOP_HP_<NAME>` variables.
    pub hyper_parameters: BTreeMap<String, String>,
    /// Extra environment for the job.
    pub env: BTreeMap<String, String>,
    /// Compute asked for.
    pub resources: Resources,
}

impl JobSpec {
    /// A spec with the given name, kind, command and output, and defaults elsewhere.
    pub fn new(
        name: impl Into<String>,
        kind: JobKind,
        command: Vec<String>,
        output: StoreUri,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            framework: Framework::Native,
            command,
            inputs: BTreeMap::new(),
            output,
            base_model: None,
            hyper_parameters: BTreeMap::new(),
            env: BTreeMap::new(),
            resources: Resources::default(),
        }
    }

    /// Adds a named input.
    pub fn with_input(mut self, name: impl Into<String>, uri: StoreUri) -> Self {
        self.inputs.insert(name.into(), uri);
        self
    }

    /// Sets the model to start from (given to the job as `RAGLOOP_BASE_MODEL`).
    pub fn with_base_model(mut self, base_model: impl Into<String>) -> Self {
        self.base_model = Some(base_model.into());
        self
    }

    /// Adds a hyper-parameter.
    pub fn with_hyper_parameter(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.hyper_parameters.insert(name.into(), value.to_string());
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// The environment every backend gives the job's process, so that one trainer runs the
    /// same way locally and in the cloud: `RAGLOOP_JOB_NAME`, `RAGLOOP_OUTPUT`,
    /// `RAGLOOP_BASE_MODEL` (when set), `RAGLOOP_INPUT_<NAME>` per input and
    /// `RAGLOOP_HP_<NAME>` per hyper-parameter (names upper-cased, other characters as `_`),
    /// then the spec's own `env`, which wins.
    pub fn job_environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("RAGLOOP_JOB_NAME".to_string(), self.name.clone());
        env.insert("RAGLOOP_OUTPUT".to_string(), self.output.to_string());
        if let Some(base) = &self.base_model {
            env.insert("RAGLOOP_BASE_MODEL".to_string(), base.clone());
        }
        for (name, uri) in &self.inputs {
            env.insert(format!("RAGLOOP_INPUT_{}", env_name(name)), uri.to_string());
        }
        for (name, value) in &self.hyper_parameters {
            env.insert(format!("RAGLOOP_HP_{}", env_name(name)), value.clone());
        }
        env.extend(self.env.clone());
        env
    }

    /// Checks what every backend needs: a name, a command, valid hyper-parameter names.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::invalid("job name is empty"));
        }
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            return Err(Error::invalid(format!(
                "job {:?} has no command",
                self.name
            )));
        }
        if let Some(bad) = self
            .hyper_parameters
            .keys()
            .find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(Error::invalid(format!(
                "hyper-parameter name {bad:?} must be ASCII letters, digits and '_'"
            )));
        }
        Ok(())
    }
}

/// `name` as an environment variable suffix: ASCII letters and digits upper-cased, the rest `_`.
pub fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A job's identifier, as the backend assigned it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    /// Accepted, waiting for resources.
    Queued,
    /// Running.
    Running,
    /// Finished successfully; its output is complete.
    Succeeded,
    /// Finished unsuccessfully.
    Failed {
        /// Why, in the backend's words (exit status, vendor reason).
        reason: String,
    },
    /// Stopped on request.
    Stopped,
}

impl JobStatus {
    /// Whether the job will not change state any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed { .. } | Self::Stopped)
    }
}

/// How [`TrainingBackend::wait`] polls.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    /// First poll interval; it doubles up to `max_interval`.
    pub interval: Duration,
    /// Longest poll interval.
    pub max_interval: Duration,
    /// Give up after this long with [`Error::Timeout`] (the job keeps running).
    pub timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(24 * 3600),
        }
    }
}

/// A place that runs training jobs: local processes here, PAI-DLC in `pai-client`,
/// Bailian fine-tunes in `bailian-client`.
#[async_trait]
pub trait TrainingBackend: Send + Sync {
    /// Submits a job; returns at once with its id.
    async fn submit(&self, spec: &JobSpec) -> Result<JobId>;

    /// The job's current status, or [`Error::NotFound`] for an unknown id.
    async fn status(&self, id: &JobId) -> Result<JobStatus>;

    /// The job's log so far (stdout and stderr of its workers).
    async fn logs(&self, id: &JobId) -> Result<String>;

    /// Asks the job to stop. Stopping a finished job is not an error.
    async fn stop(&self, id: &JobId) -> Result<()>;

    /// Polls until the job ends, with backing-off intervals; [`Error::Timeout`] past
    /// `opts.timeout`. Transient status errors (rate limits, 5xx) are retried while time remains.
    async fn wait(&self, id: &JobId, opts: WaitOptions) -> Result<JobStatus> {
        let start = Instant::now();
        let mut interval = opts.interval;
        loop {
            match self.status(id).await {
                Ok(status) if status.is_terminal() => return Ok(status),
                Ok(_) => {}
                Err(e) if e.is_retryable() => {
                    tracing::warn!(job = %id, error = %e, "status poll failed; retrying");
                    if let Some(wait) = e.retry_after() {
                        interval = interval.max(wait);
                    }
                }
                Err(e) => return Err(e),
            }
            let elapsed = start.elapsed();
            if elapsed >= opts.timeout {
                return Err(Error::Timeout {
                    what: format!("job {id}"),
                    after: elapsed,
                });
            }
            tokio::time::sleep(interval.min(opts.timeout - elapsed)).await;
            interval = (interval * 2).min(opts.max_interval);
        }
    }
}

/// The object a job writes last into its output prefix to say the output is complete
/// (the Hadoop/Spark convention). A job whose output holds it is not run again.
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// The object a driver writes into a job's output prefix right after submitting it: a
/// [`JobRecord`] as JSON. A driver that dies while the job runs (cloud jobs outlive it) finds
/// the record when it is run again and waits for that job instead of submitting a second one
/// to the same output.
pub const JOB_RECORD: &str = "_JOB";

/// The content of [`JOB_RECORD`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The backend's id of the job.
    pub job_id: String,
    /// The job's name ([`JobSpec::name`]).
    pub name: String,
}
