//! `ragloop serve`: the HTTP API and the page over what `ragloop run` built
//! (`ragloop::serve`).

use anyhow::{Context, Result};

use super::LoopArgs;

/// Arguments of `ragloop serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to listen [config: serve.addr; default: 127.0.0.1:8080].
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    common: LoopArgs,
}

/// Serves until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<()> {
    let runner = args.common.connect().await?;
    let addr = match args.addr {
        Some(a) => a,
        None => runner.config().serve.addr.parse().context("serve.addr")?,
    };
    let app = ragloop::serve::App::from_runner(&runner).await?;
    let auth = if app.token.is_some() {
        "bearer token required"
    } else {
        "no authentication (set RAGLOOP_API_TOKEN to require a token)"
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    eprintln!(
        "ragloop serve: http://{} ({auth}); POST /v1/retrieve, /v1/answer, /v1/chat/completions; GET /, /healthz, /readyz, /metrics, /openapi.json",
        listener.local_addr().unwrap_or(addr)
    );
    ragloop::serve::serve(listener, app, ragloop::serve::shutdown_signal()).await
}
