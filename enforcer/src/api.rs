//! Local HTTP+JSON API on a unix socket (root-only by default): `enforcer status`,
//! `enforcer policy apply` and friends are clients of it. Versioned under `/v1`.
//!
//! | method | path              | body                | answer                      |
//! |--------|-------------------|---------------------|-----------------------------|
//! | GET    | /v1/status        |                     | [`Status`]                  |
//! | POST   | /v1/policy/apply  | `{"path": "FILE"}`  | [`ApplyAnswer`] or error    |
//! | POST   | /v1/reload        |                     | [`ApplyAnswer`] or error    |
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::{
    agent::{AgentError, Shared, lock},
    dataplane::ApplyReport,
    status::Status,
};

#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyAnswer {
    pub file: String,
    pub report: ApplyReport,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorAnswer { error: self.1 })).into_response()
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        let code = match e {
            AgentError::Inventory(_) | AgentError::Policy(_) | AgentError::Compile(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

/// Binds the control socket with mode 0600. A live socket means another agent of
/// the same instance: refuse. A dead one is left over from a crash: replace it.
pub async fn bind(path: &Path) -> Result<UnixListener, AgentError> {
    let sock_err = |source| AgentError::Socket {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(AgentError::AlreadyRunning { path: path.into() });
        }
        std::fs::remove_file(path).map_err(sock_err)?;
    }
    let listener = UnixListener::bind(path).map_err(sock_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(sock_err)?;
    Ok(listener)
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/policy/apply", post(apply))
        .route("/v1/reload", post(reload))
        .with_state(shared)
}

pub async fn serve(listener: UnixListener, shared: Shared) {
    if let Err(e) = axum::serve(listener, router(shared)).await {
        tracing::error!(error = %e, "API server stopped");
    }
}

async fn status(State(s): State<Shared>) -> Result<Json<Status>, ApiError> {
    tokio::task::spawn_blocking(move || lock(&s).status())
        .await
        .map(Json)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn apply(
    State(s): State<Shared>,
    body: Result<Json<ApplyRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ApplyAnswer>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if !req.path.is_absolute() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("path {} must be absolute", req.path.display()),
        ));
    }
    run_reload(s, Some(req.path), "api_apply").await
}

async fn reload(State(s): State<Shared>) -> Result<Json<ApplyAnswer>, ApiError> {
    run_reload(s, None, "api_reload").await
}

async fn run_reload(
    s: Shared,
    path: Option<PathBuf>,
    why: &'static str,
) -> Result<Json<ApplyAnswer>, ApiError> {
    let res = tokio::task::spawn_blocking(move || {
        let mut a = lock(&s);
        let report = a.reload(path.as_deref(), why)?;
        Ok::<_, AgentError>(ApplyAnswer {
            file: a.status().policy.file,
            report,
        })
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(res?))
}

/// The client side, used by the CLI.
pub mod client {
    use std::path::{Path, PathBuf};

    use http_body_util::{BodyExt as _, Full};
    use hyper::{Method, Request, body::Bytes};
    use hyper_util::rt::TokioIo;
    use serde::{Serialize, de::DeserializeOwned};

    #[derive(Debug, thiserror::Error)]
    pub enum ClientError {
        #[error(
            "the enforcer agent is not running (cannot connect to {path}: {source}); \
             start it with `enforcer agent`, or pass the right --instance/--socket"
        )]
        NotRunning {
            path: PathBuf,
            #[source]
            source: std::io::Error,
        },
        #[error("talking to the agent at {path}: {message}")]
        Transport { path: PathBuf, message: String },
        #[error("{0}")]
        Refused(String),
        #[error("the agent answered something this CLI does not understand: {0}")]
        Decode(String),
    }

    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        socket: &Path,
        method: Method,
        path: &str,
        body: Option<&Req>,
    ) -> Result<Resp, ClientError> {
        let transport = |message: String| ClientError::Transport {
            path: socket.into(),
            message,
        };
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| ClientError::NotRunning {
                path: socket.into(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| transport(e.to_string()))?,
            None => Vec::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "enforcer")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let msg = serde_json::from_slice::<super::ErrorAnswer>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused(msg));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
