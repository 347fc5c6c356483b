//! [`TrainingBackend`] conformance.

use std::time::Duration;

use crate::error::Error;
use crate::training::{JobId, JobSpec, JobStatus, TrainingBackend, WaitOptions};

/// Jobs the suite submits; each backend provides ones that behave as named on it.
#[derive(Debug, Clone)]
pub struct TrainingFixtures {
    /// A job that succeeds quickly and logs the line `expected_log`.
    pub succeeding: JobSpec,
    /// The line the succeeding job's log holds.
    pub expected_log: String,
    /// A job that fails quickly; its failure reason contains `expected_reason`.
    pub failing: JobSpec,
    /// Part of the failing job's reason.
    pub expected_reason: String,
    /// A job that runs until stopped (at least a minute).
    pub long_running: JobSpec,
    /// How to wait in this backend (fast polls for local and mocked backends).
    pub wait: WaitOptions,
}

/// Runs every check.
pub async fn run_all(backend: &dyn TrainingBackend, fx: &TrainingFixtures) {
    succeeding_job(backend, fx).await;
    failing_job(backend, fx).await;
    stopping_a_job(backend, fx).await;
    unknown_and_invalid_jobs(backend).await;
}

/// A good job ends `Succeeded` and its log is readable.
pub async fn succeeding_job(backend: &dyn TrainingBackend, fx: &TrainingFixtures) {
    let id = backend.submit(&fx.succeeding).await.expect("submit");
    let status = backend.wait(&id, fx.wait).await.expect("wait");
    assert_eq!(status, JobStatus::Succeeded);
    assert!(backend.status(&id).await.unwrap().is_terminal());
    let logs = backend.logs(&id).await.expect("logs");
    assert!(
        logs.contains(&fx.expected_log),
        "log holds {:?}: {logs:?}",
        fx.expected_log
    );
    backend
        .stop(&id)
        .await
        .expect("stopping a finished job is not an error");
}

/// A bad job ends `Failed` with a reason that says why.
pub async fn failing_job(backend: &dyn TrainingBackend, fx: &TrainingFixtures) {
    let id = backend.submit(&fx.failing).await.expect("submit");
    match backend.wait(&id, fx.wait).await.expect("wait") {
        JobStatus::Failed { reason } => assert!(
            reason.contains(&fx.expected_reason),
            "reason {reason:?} contains {:?}",
            fx.expected_reason
        ),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// A running job can be stopped, and `wait` times out on a job that does not end.
pub async fn stopping_a_job(backend: &dyn TrainingBackend, fx: &TrainingFixtures) {
    let id = backend.submit(&fx.long_running).await.expect("submit");
    let short = WaitOptions {
        timeout: Duration::from_millis(300),
        ..fx.wait
    };
    assert!(matches!(
        backend.wait(&id, short).await,
        Err(Error::Timeout { .. })
    ));
    backend.stop(&id).await.expect("stop");
    assert_eq!(
        backend.wait(&id, fx.wait).await.expect("wait after stop"),
        JobStatus::Stopped
    );
}

/// Unknown ids are `NotFound`; a spec without a command is `InvalidInput`.
pub async fn unknown_and_invalid_jobs(backend: &dyn TrainingBackend) {
    let unknown = JobId("no-such-job-0".into());
    assert!(matches!(
        backend.status(&unknown).await,
        Err(Error::NotFound { .. })
    ));
    let mut bad = JobSpec::new(
        "bad",
        crate::training::JobKind::Script,
        vec![],
        "oss://bucket/out/".parse().unwrap(),
    );
    assert!(matches!(
        backend.submit(&bad).await,
        Err(Error::InvalidInput { .. })
    ));
    bad.command = vec!["true".into()];
    bad.name = " ".into();
    assert!(matches!(
        backend.submit(&bad).await,
        Err(Error::InvalidInput { .. })
    ));
}
