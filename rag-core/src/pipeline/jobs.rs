//! Stages 2 and 3 (and stage 5 as jobs): a job runs unless its output is complete, an
//! interrupted run's job is waited for rather than submitted again, and a failure carries the
//! job's reason and the end of its log.

use serde::Serialize;

use super::Pipeline;
use crate::error::{Error, Result};
use crate::stage::Stage;
use crate::training::{
    JOB_RECORD, JobId, JobRecord, JobSpec, JobStatus, SUCCESS_MARKER, WaitOptions,
};
use crate::uri::StoreUri;

/// How often a running job's log is read for [`Progress::note`](crate::stage::Progress::note).
const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`Pipeline::run_job`] did.
#[derive(Debug, Clone, Serialize)]
pub struct JobOutcome {
    /// The job's id, when one was submitted.
    pub job_id: Option<JobId>,
    /// Whether the output was complete already and no job ran.
    pub skipped: bool,
    /// Whether the job was one an earlier, interrupted run had submitted (found through
    /// [`JOB_RECORD`](crate::training::JOB_RECORD)) rather than a new one.
    pub reattached: bool,
    /// The job's output prefix.
    pub output: String,
}

impl Pipeline {
    /// Stages 2 and 3: runs a training job unless its output is complete already; waits for it
    /// and fails with the job's reason (and the end of its log) if it does not succeed.
    pub async fn run_job(
        &self,
        stage: Stage,
        spec: &JobSpec,
        wait: WaitOptions,
    ) -> Result<JobOutcome> {
        let marker = spec.output.as_prefix().join(SUCCESS_MARKER)?;
        let output = spec.output.as_prefix().to_string();
        if self.store.exists(&marker).await? {
            self.progress
                .end(stage, &format!("{output} is complete; not run again"));
            return Ok(JobOutcome {
                job_id: None,
                skipped: true,
                reattached: false,
                output,
            });
        }
        self.progress.begin(stage, None);
        let trainer = self.trainer()?;
        let record = spec.output.as_prefix().join(JOB_RECORD)?;
        let (id, reattached) = match self.unfinished_job(&record, &marker).await? {
            Some(id) => {
                tracing::info!(%stage, job = %id, "waiting for the job an earlier run submitted");
                (id, true)
            }
            None => {
                let id = trainer.submit(spec).await?;
                tracing::info!(%stage, job = %id, "job submitted");
                let body = serde_json::to_vec(&JobRecord {
                    job_id: id.0.clone(),
                    name: spec.name.clone(),
                })
                .map_err(|e| Error::backend("pipeline", "encode the job record", e))?;
                self.store.put(&record, body.into()).await?;
                (id, false)
            }
        };
        let status = {
            let waiting = std::pin::pin!(trainer.wait(&id, wait));
            let following = std::pin::pin!(self.follow_log(stage, &id));
            match futures::future::select(waiting, following).await {
                futures::future::Either::Left((status, _)) => status?,
                futures::future::Either::Right(((), waiting)) => waiting.await?,
            }
        };
        match status {
            JobStatus::Succeeded => {}
            JobStatus::Failed { reason } => {
                return Err(self.job_error(spec, &id, format!("failed: {reason}")).await);
            }
            other => {
                return Err(self
                    .job_error(spec, &id, format!("ended as {other:?}"))
                    .await);
            }
        }
        if !self.store.exists(&marker).await? {
            let what = format!("succeeded but wrote no {SUCCESS_MARKER} to {output}");
            return Err(self.job_error(spec, &id, what).await);
        }
        self.progress
            .end(stage, &format!("job {id} succeeded; output in {output}"));
        Ok(JobOutcome {
            job_id: Some(id),
            skipped: false,
            reattached,
            output,
        })
    }

    /// Passes the newest line of the job's log to the progress every few seconds while it
    /// runs, so a long job shows life (a job off a terminal prints its own progress lines).
    /// Never returns; a log that cannot be read is skipped.
    async fn follow_log(&self, stage: Stage, id: &JobId) {
        let Ok(trainer) = self.trainer() else {
            return std::future::pending().await;
        };
        let mut last = String::new();
        loop {
            tokio::time::sleep(LOG_EVERY).await;
            let Ok(log) = trainer.logs(id).await else {
                continue;
            };
            let newest = log.lines().rev().map(str::trim).find(|l| !l.is_empty());
            if let Some(line) = newest
                && line != last
            {
                self.progress.note(stage, line);
                last = line.to_string();
            }
        }
    }

    /// Several jobs of one stage at once (stage 5 as N embedding workers), each through
    /// [`run_job`](Self::run_job): complete outputs are skipped, an interrupted run's jobs are
    /// waited for. Every job runs to its end; if any failed, the error names each of them.
    pub async fn run_jobs(
        &self,
        stage: Stage,
        specs: &[JobSpec],
        wait: WaitOptions,
    ) -> Result<Vec<JobOutcome>> {
        let runs = specs.iter().map(|spec| self.run_job(stage, spec, wait));
        let results = futures::future::join_all(runs).await;
        let mut outcomes = Vec::new();
        let mut failed = Vec::new();
        for (spec, result) in specs.iter().zip(results) {
            match result {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => failed.push(format!("{}: {e}", spec.name)),
            }
        }
        if failed.is_empty() {
            Ok(outcomes)
        } else {
            Err(Error::backend_msg(
                "training",
                format!(
                    "{} of {} jobs failed (running again resumes them): {}",
                    failed.len(),
                    specs.len(),
                    failed.join("; ")
                ),
            ))
        }
    }

    /// The job recorded at `record` if the backend still has it queued or running, or it has
    /// just succeeded and its `marker` is there now. A failed, stopped or unknown job, one that
    /// succeeded but whose output was since removed, or an unreadable record means a new job.
    async fn unfinished_job(&self, record: &StoreUri, marker: &StoreUri) -> Result<Option<JobId>> {
        let bytes = match self.store.get_bytes(record).await {
            Ok(bytes) => bytes,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(rec) = serde_json::from_slice::<JobRecord>(&bytes) else {
            tracing::warn!(%record, "unreadable job record; submitting a new job");
            return Ok(None);
        };
        let id = JobId(rec.job_id);
        match self.trainer()?.status(&id).await {
            Ok(JobStatus::Queued | JobStatus::Running) => Ok(Some(id)),
            Ok(JobStatus::Succeeded) if self.store.exists(marker).await? => Ok(Some(id)),
            Ok(status) => {
                tracing::info!(job = %id, ?status, "the recorded job did not finish; submitting a new one");
                Ok(None)
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A job failure with the end of the job's log, so that the reason is visible at once.
    async fn job_error(&self, spec: &JobSpec, id: &JobId, what: String) -> Error {
        let log = match self.trainer() {
            Ok(trainer) => trainer.logs(id).await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        Error::backend_msg(
            "training",
            format!("job {} ({id}) {what}; log ends:\n{tail}", spec.name),
        )
    }
}
