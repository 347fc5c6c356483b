use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::training::{JobId, JobSpec, JobStatus, TrainingBackend};

/// A [`TrainingBackend`] that runs each job's command as a local process.
///
/// Each job gets a directory `work_dir/jobs/<id>/` with `spec.json`, `log` (stdout and stderr)
/// and, once it ends, `status.json`; a later backend on the same directory still answers
/// `status` and `logs` for it. The process sees its inputs and output as environment variables:
/// `RAGLOOP_JOB_NAME`, `RAGLOOP_OUTPUT`, `RAGLOOP_INPUT_<NAME>` and `RAGLOOP_HP_<NAME>` (names
/// upper-cased), plus the spec's own `env` and the backend's [`LocalProcessBackend::with_env`].
#[derive(Debug)]
pub struct LocalProcessBackend {
    work_dir: PathBuf,
    env: BTreeMap<String, String>,
    jobs: Arc<Mutex<HashMap<JobId, Running>>>,
    counter: AtomicU64,
}

#[derive(Debug)]
struct Running {
    status: JobStatus,
    stop: Option<oneshot::Sender<()>>,
}

impl LocalProcessBackend {
    /// A backend keeping job directories under `work_dir/jobs/`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            work_dir: work_dir.into(),
            env: BTreeMap::new(),
            jobs: Arc::default(),
            counter: AtomicU64::new(0),
        }
    }

    /// Sets an environment variable for every job (e.g. where the local store's root is).
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    fn job_dir(&self, id: &JobId) -> Result<PathBuf> {
        if id.0.is_empty() || !id.0.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::not_found(format!("job {id}")));
        }
        Ok(self.work_dir.join("jobs").join(&id.0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Running>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn environment(&self, spec: &JobSpec) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(spec.job_environment());
        env
    }
}

fn write_status(dir: &Path, status: &JobStatus) {
    if let Ok(json) = serde_json::to_vec(status) {
        let tmp = dir.join("status.json.tmp");
        if std::fs::write(&tmp, json).is_ok() {
            let _ = std::fs::rename(tmp, dir.join("status.json"));
        }
    }
}

/// The last non-empty line of the job's log, to make a failure's reason say something.
fn last_log_line(dir: &Path) -> Option<String> {
    let log = std::fs::read(dir.join("log")).ok()?;
    String::from_utf8_lossy(&log)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().chars().take(300).collect())
}

#[async_trait]
impl TrainingBackend for LocalProcessBackend {
    async fn submit(&self, spec: &JobSpec) -> Result<JobId> {
        spec.validate()?;
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = JobId(format!("job-{stamp}-{}-{n}", std::process::id()));
        let dir = self.job_dir(&id)?;
        let in_dir = |e| Error::io(e, format!("starting job {id} in {}", dir.display()));
        tokio::fs::create_dir_all(&dir).await.map_err(in_dir)?;
        let spec_json = serde_json::to_vec_pretty(spec)
            .map_err(|e| Error::backend("local-jobs", "encode spec", e))?;
        tokio::fs::write(dir.join("spec.json"), spec_json)
            .await
            .map_err(in_dir)?;
        let log = std::fs::File::create(dir.join("log")).map_err(in_dir)?;
        let log_err = log.try_clone().map_err(in_dir)?;

        let mut cmd = tokio::process::Command::new(&spec.command[0]);
        cmd.args(&spec.command[1..])
            .envs(self.environment(spec))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let (stop_tx, stop_rx) = oneshot::channel();
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let status = JobStatus::Failed {
                    reason: format!("could not start {:?}: {e}", spec.command[0]),
                };
                write_status(&dir, &status);
                self.lock()
                    .insert(id.clone(), Running { status, stop: None });
                return Ok(id);
            }
        };
        tracing::info!(job = %id, name = %spec.name, "local job started");
        self.lock().insert(
            id.clone(),
            Running {
                status: JobStatus::Running,
                stop: Some(stop_tx),
            },
        );
        let jobs = Arc::clone(&self.jobs);
        let job_id = id.clone();
        tokio::spawn(async move {
            let status = run_to_end(child, stop_rx, &dir).await;
            tracing::info!(job = %job_id, ?status, "local job ended");
            write_status(&dir, &status);
            if let Some(r) = jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&job_id)
            {
                r.status = status;
                r.stop = None;
            }
        });
        Ok(id)
    }

    async fn status(&self, id: &JobId) -> Result<JobStatus> {
        if let Some(r) = self.lock().get(id) {
            return Ok(r.status.clone());
        }
        let dir = self.job_dir(id)?;
        match tokio::fs::read(dir.join("status.json")).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| {
                    Error::corrupt(
                        dir.join("status.json").display().to_string(),
                        format!("job {id}'s status is unreadable ({e}); remove the job's directory to run it again"),
                    )
                }),
            Err(_) if dir.join("spec.json").is_file() => Ok(JobStatus::Failed {
                reason: "the process that supervised this job exited before it ended".into(),
            }),
            Err(_) => Err(Error::not_found(format!("job {id}"))),
        }
    }

    async fn logs(&self, id: &JobId) -> Result<String> {
        let dir = self.job_dir(id)?;
        match tokio::fs::read(dir.join("log")).await {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::not_found(format!("job {id}")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn stop(&self, id: &JobId) -> Result<()> {
        let known = self.lock().get_mut(id).map(|r| r.stop.take());
        let sender = match known {
            Some(sender) => sender,
            None => {
                // Unknown here: fine if it exists on disk (then it has ended).
                self.status(id).await?;
                None
            }
        };
        if let Some(tx) = sender {
            let _ = tx.send(());
        }
        Ok(())
    }
}

async fn run_to_end(
    mut child: tokio::process::Child,
    stop: oneshot::Receiver<()>,
    dir: &Path,
) -> JobStatus {
    tokio::select! {
        exit = child.wait() => match exit {
            Ok(s) if s.success() => JobStatus::Succeeded,
            Ok(s) => JobStatus::Failed {
                reason: match last_log_line(dir) {
                    Some(line) => format!("{s}: {line}"),
                    None => s.to_string(),
                },
            },
            Err(e) => JobStatus::Failed { reason: format!("waiting for the process failed: {e}") },
        },
        Ok(()) = stop => {
            let _ = child.kill().await;
            JobStatus::Stopped
        }
    }
}
