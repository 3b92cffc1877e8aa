//! HolmesGPT-API: investigates alerts. For each `POST /api/v1/investigations` it asks an LLM
//! (an OpenAI-style chat completions API at `LLM_URL`) for an analysis, answers with it, and
//! writes the outcome to DataStorage as an audit event (`holmesgpt.investigation.completed` /
//! `holmesgpt.investigation.failed`).
//!
//! Investigations live in memory (see [`model`]). Use [`start`] to run in-process.

pub mod api;
pub mod config;
pub mod llm;
pub mod model;

pub use config::Config;

use std::sync::Arc;
use std::time::Duration;
use svc_common::audit::AuditClient;
use svc_common::metrics::Registry;
use svc_common::service::Background;
use tokio_util::task::TaskTracker;

/// A running HolmesGPT-API: [`Running::shutdown`] stops accepting, finishes the
/// investigations in flight and flushes audit events.
pub type Running = svc_common::service::Running;

/// Builds the state and binds the listener. Neither the LLM nor DataStorage need be up:
/// investigations fail until the LLM answers, audit events wait in the buffer, and `/readyz`
/// reports both.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let registry = Registry::new();
    let audit = AuditClient::start(config.audit.clone(), &registry);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
    let llm = llm::Llm::new(&config.llm_url, &config.llm_model, config.llm_timeout)?;
    let state = api::AppState {
        records: Arc::new(model::Records::default()),
        llm,
        audit,
        registry,
        http,
        datastorage_url: config.datastorage_url.clone(),
    };
    // Investigations run inside their requests, which the server finishes on shutdown.
    let background = Background {
        tasks: TaskTracker::new(),
        what: "investigations",
        grace: Duration::ZERO,
    };
    let router = api::router(state.clone());
    let running = Running::bind(
        "holmesgpt-api",
        config.listen_addr,
        router,
        background,
        state.audit,
    )
    .await?;
    tracing::info!(addr = %running.addr(), llm = %config.llm_url, model = %config.llm_model, datastorage = %config.datastorage_url, "holmesgpt-api listening");
    Ok(running)
}

/// Runs until `shutdown` completes, then stops gracefully.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await
}
