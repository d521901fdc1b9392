//! The read-only TCP endpoint: `GET /metrics`, `GET /healthz`, `GET /readyz` and nothing
//! else (another path is 404, another method 405). It changes nothing in the agent.
//!
//! | path       | answer                                                                |
//! |------------|-----------------------------------------------------------------------|
//! | `/metrics` | OpenMetrics text if the `Accept` header asks for it (Prometheus does), else Prometheus text 0.0.4 |
//! | `/healthz` | 200 `ok` while the agent's state can be locked within 5 s, else 503   |
//! | `/readyz`  | 200 `ready` once a policy is in force and every workload interface that exists has both programs attached, else 503 with the reason |
use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use super::{Format, Metrics, MetricsAddress, MetricsConfig, MetricsError};
use crate::agent::{Shared, lock};

/// How long `/healthz` waits for the agent's lock before calling the agent stuck.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds the configured address; `Ok(None)` when metrics are `off`. Done before
    /// the agent touches the kernel, so a taken port fails the start cleanly.
    pub async fn bind(cfg: &MetricsConfig) -> Result<Option<Self>, MetricsError> {
        let MetricsAddress::Listen(address) = cfg.address else {
            return Ok(None);
        };
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| MetricsError::Bind { address, source })?;
        Ok(Some(Self {
            listener,
            metrics: Arc::new(Metrics::new(cfg)),
        }))
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// For subsystems adding their collectors before serving (see [`Metrics::add_collector`]).
    pub fn metrics_mut(&mut self) -> Option<&mut Metrics> {
        Arc::get_mut(&mut self.metrics)
    }

    /// Serves until the task is aborted.
    pub async fn serve(self, shared: Shared) {
        let address = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(event = "metrics_listening", address, "serving /metrics");
        if let Err(e) = axum::serve(self.listener, router(shared, self.metrics)).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }
}

#[derive(Clone)]
struct AppState {
    shared: Shared,
    metrics: Arc<Metrics>,
}

/// The routes; axum answers 405 (with `Allow`) for other methods on them, and the
/// fallback 404 for anything else.
fn router(shared: Shared, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: try /metrics\n") })
        .with_state(AppState { shared, metrics })
}

fn text(code: StatusCode, body: String) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn scrape(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let result = tokio::task::spawn_blocking(move || {
        let scrape = super::scrape(&s.shared);
        s.metrics.encode(scrape, format)
    })
    .await;
    match result {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
        Ok(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("collecting metrics: {e}\n"),
        ),
    }
}

async fn healthz(State(s): State<AppState>) -> Response {
    let locked = tokio::task::spawn_blocking(move || drop(lock(&s.shared)));
    match tokio::time::timeout(HEALTH_TIMEOUT, locked).await {
        Ok(Ok(())) => text(StatusCode::OK, "ok\n".into()),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("agent: {e}\n")),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("agent busy for more than {} s\n", HEALTH_TIMEOUT.as_secs()),
        ),
    }
}

async fn readyz(State(s): State<AppState>) -> Response {
    let status = tokio::task::spawn_blocking(move || lock(&s.shared).status()).await;
    let status = match status {
        Ok(st) => st,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("agent: {e}\n")),
    };
    match not_ready(&status) {
        None => text(StatusCode::OK, "ready\n".into()),
        Some(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Why the agent is not ready, if it is not.
fn not_ready(s: &crate::status::Status) -> Option<String> {
    if s.policy.generation == 0 {
        return Some("no policy applied yet".into());
    }
    let unattached: Vec<&str> = s
        .workloads
        .iter()
        .filter(|w| w.ifindex.is_some() && w.attached.len() < 2)
        .map(|w| w.name.as_str())
        .collect();
    if unattached.is_empty() {
        None
    } else {
        Some(format!(
            "programs not attached to the interface of {}",
            unattached.join(", ")
        ))
    }
}
