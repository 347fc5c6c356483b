//! `ragloop serve`: stage 7 over HTTP, on the backends `ragloop run` built (the served index,
//! the embedding model that indexed it, the LLM, the reranker).
//!
//! Routes (described in `openapi.json`, served at `/openapi.json` and checked against this
//! router by `tests/serve.rs`):
//! - `POST /v1/retrieve`, `POST /v1/answer` (optionally streamed as server-sent events) —
//!   [`api`];
//! - `POST /v1/chat/completions`, OpenAI-compatible — [`openai`];
//! - `GET /healthz` (the process answers), `GET /readyz` (the index answers and holds records),
//!   `GET /metrics` (Prometheus text, [`metrics`]), `GET /` (the bundled page).
//!
//! Every `/v1/` request passes, in order: the bearer token (when `RAGLOOP_API_TOKEN` is set;
//! digests compared in constant time), the concurrency limit (`[serve] max_concurrent`, then
//! 503 with `Retry-After`), the time limit (`timeout_secs`, then 504) and the body limit
//! (`max_body_bytes`, then 413). Errors are OpenAI's JSON error body ([`error::ApiError`]) and
//! name the field at fault. CORS is off unless `cors_origins` lists origins. SIGTERM or Ctrl-C
//! stops accepting connections and lets requests in flight finish.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = ragloop::LoopConfig::load(None)?;
//! let runner = ragloop::runner::Runner::connect(config, vec!["ragloop".into()]).await?;
//! let app = ragloop::serve::App::from_runner(&runner).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! ragloop::serve::serve(listener, app, ragloop::serve::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod error;
pub mod metrics;
pub mod openai;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rag_core::pipeline::Pipeline;
use rag_core::{EmbeddingModel, Secret, VectorIndex};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::config::ServeSection;
use crate::runner::Runner;
use error::{ApiError, ErrorKind};
use metrics::Metrics;

/// The environment variable holding the bearer token clients must send.
pub const TOKEN_ENV: &str = "RAGLOOP_API_TOKEN";

/// The OpenAPI description of the routes.
pub const OPENAPI: &str = include_str!("openapi.json");

const PAGE: &str = include_str!("page.html");

/// What the server answers with.
pub struct App {
    /// The query-time pipeline (index, chat model, reranker).
    pub pipeline: Pipeline,
    /// The embedding model the index was built with.
    pub model: Arc<dyn EmbeddingModel>,
    /// The index backend (`/readyz` counts its records).
    pub index: Arc<dyn VectorIndex>,
    /// The chat model's id (the `model` of responses).
    pub chat_model: String,
    /// Limits and address.
    pub limits: ServeSection,
    /// `k` when a request names none (`[index] top_k`).
    pub default_k: usize,
    /// The bearer token (`RAGLOOP_API_TOKEN`); `None`: no authentication.
    pub token: Option<Secret>,
}

impl App {
    /// The app over what `runner`'s configuration serves: the served model and index, the
    /// fusion chosen for it, `[llm]`, `[rerank]`, `[serve]`; the token from
    /// [`TOKEN_ENV`].
    pub async fn from_runner(runner: &Runner) -> Result<Self> {
        runner.load_fusion().await?;
        let served = runner.served_model().await?;
        let pipeline = runner
            .query_pipeline(None, Arc::new(rag_core::LogProgress))
            .await?;
        let chat_model = runner.backends.chat(None)?.model_id().to_string();
        let token = Secret::from_env(TOKEN_ENV);
        Ok(Self {
            pipeline,
            model: served.model,
            index: runner.backends.index.clone(),
            chat_model,
            limits: runner.config().serve.clone(),
            default_k: runner.config().index.top_k,
            token,
        })
    }
}

/// Shared by the handlers.
pub(crate) struct AppState {
    served: Served,
    limits: ServeSection,
    default_k: usize,
    chat_model: String,
    token_digest: Option<[u8; 32]>,
    metrics: Metrics,
    permits: Arc<Semaphore>,
}

struct Served {
    pipeline: Pipeline,
    model: Arc<dyn EmbeddingModel>,
    index: Arc<dyn VectorIndex>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The router: every route, its guards and limits (see the module docs).
pub fn router(app: App) -> Router {
    let limits = app.limits.clone();
    let state = Arc::new(AppState {
        token_digest: app.token.as_ref().map(|t| digest(t.expose())),
        permits: Arc::new(Semaphore::new(limits.max_concurrent)),
        served: Served {
            pipeline: app.pipeline,
            model: app.model,
            index: app.index,
        },
        limits: limits.clone(),
        default_k: app.default_k,
        chat_model: app.chat_model,
        metrics: Metrics::default(),
    });
    let api = Router::new()
        .route("/v1/retrieve", post(api::retrieve))
        .route("/v1/answer", post(api::answer))
        .route("/v1/chat/completions", post(openai::completions))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(limits.max_body_bytes));
    let mut router = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(api)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state);
    if !limits.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = limits
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        router = router.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    router
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing the requests in flight");
}

/// Counts every response by route and status, its latency (to the response head) and error
/// kind.
async fn observe(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let _in_flight = state.metrics.in_flight();
    let mut response = next.run(req).await;
    // axum's own rejections (413 from the body limit) carry no JSON body of ours.
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        && response.extensions().get::<ErrorKind>().is_none()
    {
        response = ApiError::too_large(state.limits.max_body_bytes).into_response();
    }
    state.metrics.request(
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if let Some(kind) = response.extensions().get::<ErrorKind>() {
        state.metrics.error(kind.0);
    }
    response
}

/// The `/v1/` guards: token, concurrency, time limit.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.token_digest {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| digest(t.trim()));
        let ok = given.is_some_and(|g| bool::from(g.ct_eq(expected)));
        if !ok {
            return ApiError::unauthorized().into_response();
        }
    }
    let Ok(_permit) = state.permits.clone().try_acquire_owned() else {
        return ApiError::overloaded(state.limits.max_concurrent).into_response();
    };
    let secs = state.limits.timeout_secs;
    match tokio::time::timeout(Duration::from_secs(secs), next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::timed_out(secs).into_response(),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let name = &state.served.pipeline.options().index_name;
    match state.served.index.count(name).await {
        Ok(n) if n > 0 => Json(serde_json::json!({
            "status": "ready",
            "index": name,
            "records": n,
            "model": state.served.model.model_id(),
            "llm": state.chat_model,
            "reranker": state.served.pipeline.reranker().map(|r| r.model_id()),
        }))
        .into_response(),
        Ok(_) => not_ready(format!(
            "index {name} holds no records: run `ragloop run` first"
        )),
        Err(e) => not_ready(format!("index {name}: {e}")),
    }
}

fn not_ready(why: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "not ready", "reason": why})),
    )
        .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
