//! The baseline's part of the control API (merged into `crate::api::router`):
//!
//! | method | path                  | answer                                              |
//! |--------|-----------------------|-----------------------------------------------------|
//! | GET    | /v1/alerts            | JSON lines of [`Alert`]; query [`AlertsQuery`]; `follow=true` streams |
//! | GET    | /v1/baseline          | [`BaselineStatus`] (`enabled: false` when off)     |
//! | GET    | /v1/baseline/export   | [`BaselineFile`]: everything learnt                 |
//! | POST   | /v1/baseline/reset    | [`BaselineStatus`] after forgetting everything      |
//! | POST   | /v1/baseline/save     | [`BaselineStatus`] after writing the file now       |
use axum::{
    Json, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::{alert::AlertFilter, monitor::BaselineStatus, store::BaselineFile};
use crate::{
    agent::{Shared, lock},
    api::ErrorAnswer,
};

/// Query of `/v1/alerts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlertsQuery {
    /// `firing` or `resolved`.
    pub state: Option<String>,
    /// `new_edge`, `new_port`, `spike`, `silence`, `fan_out` or `deny_burst`.
    pub kind: Option<String>,
    /// Involves this workload or node.
    pub workload: Option<String>,
    /// Most recent alerts to return first (default 100).
    pub limit: Option<usize>,
    /// Keep the response open and stream every alert transition as it happens.
    #[serde(default)]
    pub follow: bool,
}

impl AlertsQuery {
    pub fn filter(&self) -> AlertFilter {
        AlertFilter {
            state: self.state.clone(),
            kind: self.kind.clone(),
            workload: self.workload.clone(),
        }
    }
}

/// An error answer, `{"error": "..."}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorAnswer { error: self.1 })).into_response()
    }
}

fn error(code: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(code, msg.into())
}

const DISABLED: &str = "the baseline is disabled on this agent (baseline.enabled: false)";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/v1/alerts", get(alerts))
        .route("/v1/baseline", get(status))
        .route("/v1/baseline/export", get(export))
        .route("/v1/baseline/reset", post(reset))
        .route("/v1/baseline/save", post(save))
}

async fn alerts(
    State(s): State<Shared>,
    q: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(q) = match q {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    let filter = q.filter();
    if let Err(e) = filter.check() {
        return error(StatusCode::BAD_REQUEST, e).into_response();
    }
    let limit = q.limit.unwrap_or(100).min(100_000);
    let (recent, rx) = {
        let a = lock(&s);
        let Some(m) = a.baseline() else {
            return error(StatusCode::CONFLICT, DISABLED).into_response();
        };
        (m.alerts(&filter, limit), q.follow.then(|| m.subscribe()))
    };
    let resp = crate::api::ndjson(recent, rx, move |a| filter.matches(a));
    resp.unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

async fn status(State(s): State<Shared>) -> Json<BaselineStatus> {
    let a = lock(&s);
    Json(a.baseline().map(|m| m.status()).unwrap_or_default())
}

async fn export(State(s): State<Shared>) -> Result<Json<BaselineFile>, ApiError> {
    let a = lock(&s);
    a.baseline()
        .map(|m| Json(m.export()))
        .ok_or_else(|| error(StatusCode::CONFLICT, DISABLED))
}

async fn reset(State(s): State<Shared>) -> Result<Json<BaselineStatus>, ApiError> {
    with_monitor(s, |m| m.reset()).await
}

async fn save(State(s): State<Shared>) -> Result<Json<BaselineStatus>, ApiError> {
    with_monitor(s, |m| m.save()).await
}

async fn with_monitor(
    s: Shared,
    f: impl FnOnce(&mut super::Monitor) + Send + 'static,
) -> Result<Json<BaselineStatus>, ApiError> {
    let res = tokio::task::spawn_blocking(move || {
        let mut a = lock(&s);
        a.baseline_mut().map(|m| {
            f(m);
            m.status()
        })
    })
    .await
    .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    res.map(Json)
        .ok_or_else(|| error(StatusCode::CONFLICT, DISABLED))
}
