//! `ragloop pai …`: PAI-DLC jobs from the command line, with the seed's `pai submit` flags.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use pai_client::{DlcDefaults, PaiBackend, PaiClient, PaiConfig};
use rag_core::StoreUri;
use rag_core::training::{Framework, JobId, JobKind, JobSpec, TrainingBackend};

/// `ragloop pai` subcommands.
#[derive(Debug, Subcommand)]
pub enum PaiCommand {
    /// Submit a training job (`--dry-run` prints the signed request instead of sending it).
    Submit(Box<SubmitArgs>),
    /// Print a job's status.
    Status {
        /// The job id (`dlc…`).
        job_id: String,
        /// Print `{"job_id", "status"}` as JSON, the status as `rag_core::JobStatus`
        /// serialises it: `{"state": "running"}`, `{"state": "failed", "reason": "…"}`, ….
        #[arg(long)]
        json: bool,
    },
    /// Print a job's log; `--follow` streams it until the job ends.
    Logs {
        /// The job id.
        job_id: String,
        /// Keep printing new lines until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Stop a job.
    Stop {
        /// The job id.
        job_id: String,
    },
}

/// Frameworks as the seed names them.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FrameworkArg {
    /// PyTorch (DLC PyTorchJob).
    Pytorch,
    /// DeepSpeed (launched under DLC PyTorchJob).
    Deepspeed,
}

/// `ragloop pai submit` flags: the seed's `pai submit` plus the container settings.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// PAI workspace id (defaults to PAI_WORKSPACE_ID).
    #[arg(long, env = "PAI_WORKSPACE_ID")]
    pub workspace: String,
    /// Job name.
    #[arg(long)]
    pub job_name: String,
    /// Framework.
    #[arg(long, value_enum, default_value = "pytorch")]
    pub framework: FrameworkArg,
    /// The training script (`train_emb.py` runs as `python train_emb.py`), or a whole command.
    #[arg(long)]
    pub script: String,
    /// Input data (`oss://bucket/raw-docs/`); passed as `--data` and mounted.
    #[arg(long)]
    pub data: StoreUri,
    /// Output prefix (`oss://bucket/models/emb-v1/`); passed as `--output`.
    #[arg(long)]
    pub output: StoreUri,
    /// The model to fine-tune from (`qwen-7b`); passed as `--base-model`.
    #[arg(long)]
    pub base_model: Option<String>,
    /// Container image with the script.
    #[arg(long, env = "PAI_IMAGE")]
    pub image: String,
    /// ECS instance type (public resources).
    #[arg(long, default_value = "ecs.gn7i-c8g1.2xlarge")]
    pub ecs_spec: String,
    /// Resource quota id (instead of public resources).
    #[arg(long)]
    pub resource_id: Option<String>,
    /// Number of workers.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Region (defaults to PAI_REGION).
    #[arg(long, env = "PAI_REGION", default_value = "cn-hangzhou")]
    pub region: String,
    /// Another DLC endpoint (tests, VPC endpoints).
    #[arg(long, env = "PAI_DLC_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Print the signed CreateJob request and exit without sending it.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait for the job to end, streaming its log.
    #[arg(long)]
    pub wait: bool,
}

fn backend(
    region: &str,
    workspace: &str,
    endpoint: Option<&str>,
    defaults: DlcDefaults,
) -> Result<PaiBackend> {
    let mut config =
        PaiConfig::new(region, workspace)?.with_credentials(rag_core::AccessKey::from_env()?);
    if let Some(e) = endpoint {
        config = config.with_endpoint(e);
    }
    Ok(PaiBackend::new(PaiClient::new(config)?, defaults))
}

fn env_backend() -> Result<PaiBackend> {
    let var = |n: &str| std::env::var(n).with_context(|| format!("{n} is not set"));
    let endpoint = std::env::var("PAI_DLC_ENDPOINT").ok();
    backend(
        &var("PAI_REGION")?,
        &var("PAI_WORKSPACE_ID")?,
        endpoint.as_deref(),
        DlcDefaults {
            image: String::new(),
            resource_id: None,
            ecs_spec: String::new(),
            oss_region: String::new(),
            mounts: Vec::new(),
        },
    )
}

/// The job spec `submit` sends.
pub fn job_spec(args: &SubmitArgs) -> JobSpec {
    let mut command: Vec<String> = if args.script.ends_with(".py") {
        vec!["python".into(), args.script.clone()]
    } else {
        args.script.split_whitespace().map(String::from).collect()
    };
    command.extend([
        "--data".into(),
        args.data.to_string(),
        "--output".into(),
        args.output.to_string(),
    ]);
    if let Some(base) = &args.base_model {
        command.extend(["--base-model".into(), base.clone()]);
    }
    let kind = match args.framework {
        FrameworkArg::Pytorch => JobKind::EmbeddingFineTune,
        FrameworkArg::Deepspeed => JobKind::LlmFineTune,
    };
    let mut spec = JobSpec::new(&args.job_name, kind, command, args.output.clone())
        .with_input("data", args.data.clone());
    spec.framework = match args.framework {
        FrameworkArg::Pytorch => Framework::PyTorch,
        FrameworkArg::Deepspeed => Framework::DeepSpeed,
    };
    spec.base_model = args.base_model.clone();
    spec.resources.workers = args.workers;
    spec
}

/// Runs a `ragloop pai` command.
pub async fn run(cmd: PaiCommand) -> Result<()> {
    match cmd {
        PaiCommand::Submit(args) => submit(*args).await,
        PaiCommand::Status { job_id, json } => {
            let status = env_backend()?.status(&JobId(job_id.clone())).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"job_id": job_id, "status": status})
                );
            } else {
                println!("{job_id}: {status:?}");
            }
            Ok(())
        }
        PaiCommand::Logs { job_id, follow } => {
            let b = env_backend()?;
            let id = JobId(job_id);
            if follow {
                let status = b
                    .follow_logs(&id, Duration::from_secs(5), |l| println!("{l}"))
                    .await?;
                println!("{id}: {status:?}");
            } else {
                print!("{}", b.logs(&id).await?);
            }
            Ok(())
        }
        PaiCommand::Stop { job_id } => {
            env_backend()?.stop(&JobId(job_id.clone())).await?;
            println!("{job_id}: stop requested");
            Ok(())
        }
    }
}

async fn submit(args: SubmitArgs) -> Result<()> {
    let defaults = DlcDefaults {
        image: args.image.clone(),
        resource_id: args.resource_id.clone(),
        ecs_spec: args.ecs_spec.clone(),
        oss_region: args.region.clone(),
        mounts: Vec::new(),
    };
    let b = backend(
        &args.region,
        &args.workspace,
        args.endpoint.as_deref(),
        defaults,
    )?;
    let spec = job_spec(&args);
    if args.dry_run {
        let body = serde_json::to_value(b.create_request(&spec)?)?;
        let signed =
            b.client()
                .sign_request("CreateJob", "POST", "/api/v1/jobs", &[], Some(&body))?;
        println!("{} {}", signed.method, signed.url);
        for (k, v) in signed.redacted_headers() {
            println!("{k}: {v}");
        }
        println!("\n{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let id = b.submit(&spec).await?;
    println!("submitted {id}");
    if args.wait {
        let status = b
            .follow_logs(&id, Duration::from_secs(10), |l| println!("{l}"))
            .await?;
        println!("{id}: {status:?}");
        if status != rag_core::JobStatus::Succeeded {
            bail!("job {id} did not succeed: {status:?}");
        }
    }
    Ok(())
}
