//! `ragloop bailian deploy|status`: seed step 4 from the command line — serve a fine-tuned
//! model on Bailian (Model Studio) and see where its deployments are.
//!
//! Reads `DASHSCOPE_API_KEY`, `DASHSCOPE_REGION` (`beijing` or `singapore`; Model Studio
//! documents deployments for Beijing only), `DASHSCOPE_WORKSPACE_ID` (a key of a non-default
//! workspace) and, for other endpoints, `DASHSCOPE_NATIVE_BASE_URL`. A model given as a store prefix (a fine-tune's
//! output, `oss://bucket/models/llm-ft/`) is resolved through the record the fine-tune wrote
//! there (`bailian-model.json`), which needs the OSS variables of `ragloop cp`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bailian_client::{BailianConfig, BailianDeployer, DeployPlan, ModelStudio, Region};
use clap::{Args, Subcommand};
use rag_core::{DeploySpec, Deployment, DeploymentStatus, ModelDeployer, StoreUri, WaitOptions};
use serde_json::json;

use ragloop::stores::StoreArgs;

/// `ragloop bailian` subcommands.
#[derive(Debug, Subcommand)]
pub enum BailianCommand {
    /// Deploy a fine-tuned model (idempotent: a live deployment of it is reused).
    Deploy(DeployArgs),
    /// One deployment's status, or every deployment's.
    Status {
        /// The deployment id (`deployed_model`); all deployments when left out.
        id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ragloop bailian deploy` flags.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The fine-tuned model id, or the store prefix a fine-tune wrote its record to.
    #[arg(long)]
    pub model: String,
    /// The deployment's display name.
    #[arg(long, default_value = "llm-ft")]
    pub name: String,
    /// Instances of the model: each is its base capacity in resource units (read from
    /// `GET /deployments/models`).
    #[arg(long, default_value_t = 1)]
    pub capacity: u32,
    /// Billing plan: `compute`, `lora`, `mu:<spec>` (`mu:MU1`) or
    /// `ptu:<input tpm>,<output tpm>`.
    #[arg(long, default_value = "compute")]
    pub plan: DeployPlan,
    /// The deployed model id's suffix (at most 8 characters; needed to deploy one model twice).
    #[arg(long)]
    pub suffix: Option<String>,
    /// Wait until the deployment serves (or fails).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub timeout: u64,
    /// Print the request instead of sending it (no key needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Which store holds a store-prefix model.
    #[command(flatten)]
    pub store: StoreArgs,
}

fn region() -> Result<Region> {
    match std::env::var("DASHSCOPE_REGION")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        None => Ok(Region::Beijing),
        Some(r) => Ok(r.parse().context("DASHSCOPE_REGION")?),
    }
}

fn studio() -> Result<ModelStudio> {
    let config = BailianConfig::from_env(region()?).with_context(|| {
        format!(
            "Bailian needs {} (the DashScope API key)",
            BailianConfig::ENV_API_KEY
        )
    })?;
    Ok(ModelStudio::new(config)?)
}

fn status_word(s: &DeploymentStatus) -> String {
    match s {
        DeploymentStatus::Pending => "pending".into(),
        DeploymentStatus::Running => "running".into(),
        DeploymentStatus::Failed { reason } => format!("failed: {reason}"),
        DeploymentStatus::Stopped => "stopped".into(),
    }
}

fn print(d: &Deployment, as_json: bool) -> Result<()> {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "id": d.id,
                "model_name": d.model_name,
                "status": status_word(&d.status),
            }))?
        );
    } else {
        println!("{}  {}  {}", d.id, d.model_name, status_word(&d.status));
    }
    Ok(())
}

/// Runs a `ragloop bailian` command.
pub async fn run(cmd: BailianCommand) -> Result<()> {
    match cmd {
        BailianCommand::Deploy(args) => deploy(args).await,
        BailianCommand::Status { id, json } => {
            let api = studio()?;
            match id {
                Some(id) => {
                    let d = BailianDeployer::new(api, None).status(&id).await?;
                    print(&d, json)
                }
                None => {
                    let all = api.deployments().await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&all)?);
                    } else if all.is_empty() {
                        println!("no deployments");
                    } else {
                        for d in all {
                            println!(
                                "{}  {}  {}  capacity {}/{}",
                                d.deployed_model,
                                d.model_name.as_deref().unwrap_or("-"),
                                d.status,
                                d.ready_capacity.unwrap_or(0),
                                d.capacity.unwrap_or(0)
                            );
                        }
                    }
                    Ok(())
                }
            }
        }
    }
}

async fn deploy(args: DeployArgs) -> Result<()> {
    let spec = DeploySpec {
        model_name: args.name.clone(),
        model_path: args.model.clone(),
        capacity: args.capacity.max(1),
    };
    let prefix = args.model.parse::<StoreUri>().ok();
    if args.dry_run {
        let base = BailianConfig::new(region()?);
        let native =
            std::env::var(BailianConfig::ENV_NATIVE_BASE).unwrap_or_else(|_| base.native_base());
        let model = match &prefix {
            Some(uri) => format!(
                "<finetuned_output from {}{}>",
                uri.as_prefix(),
                bailian_client::MODEL_RECORD
            ),
            None => args.model.clone(),
        };
        let request = bailian_client::CreateDeployment {
            model_name: model,
            name: Some(spec.model_name.clone()),
            suffix: args.suffix.clone(),
            plan: args.plan.clone(),
            capacity: spec.capacity,
        };
        let mut body = request.body()?;
        if args.plan.sized_in_units() || args.plan == DeployPlan::Lora {
            body["capacity"] = json!(format!(
                "<{} × base_capacity of the model, from GET {native}/deployments/models>",
                spec.capacity
            ));
        }
        println!("POST {native}/deployments");
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let store = match &prefix {
        Some(uri) => Some(args.store.open(uri)?),
        None => None,
    };
    let mut deployer = BailianDeployer::new(studio()?, store).with_plan(args.plan.clone());
    if let Some(suffix) = &args.suffix {
        deployer = deployer.with_suffix(suffix.clone());
    }
    let deployer = Arc::new(deployer);
    let mut d = deployer.deploy(&spec).await?;
    if args.wait {
        let wait = WaitOptions {
            interval: Duration::from_secs(2),
            max_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(args.timeout),
        };
        d = rag_core::deploy::wait_until_serving(deployer.as_ref(), d, wait)
            .await
            .with_context(|| {
                format!(
                    "`ragloop bailian status` shows where {} is",
                    spec.model_name
                )
            })?;
    }
    print(&d, args.json)
}
