//! Local HTTP+JSON API on a unix socket (root-only by default): `enforcer status`,
//! `enforcer policy apply` and friends are clients of it. Versioned under `/v1`.
//!
//! | method | path              | body                | answer                      |
//! |--------|-------------------|---------------------|-----------------------------|
//! | GET    | /v1/status        |                     | [`Status`]                  |
//! | POST   | /v1/policy/apply  | `{"path": "FILE"}`  | [`ApplyAnswer`] or error    |
//! | POST   | /v1/reload        |                     | [`ApplyAnswer`] or error    |
//! | GET    | /v1/graph         | query: [`GraphQuery`] | [`GraphView`]             |
//! | GET    | /v1/flows         | query: [`FlowsQuery`] | JSON lines of [`FlowRecord`]; `follow=true` streams |
//! | GET    | /v1/alerts        | query: `AlertsQuery`  | JSON lines of `Alert`; `follow=true` streams |
//! | GET    | /v1/baseline      |                     | `BaselineStatus` (also `/export`, POST `/reset`) |
//!
//! The `/v1/alerts` and `/v1/baseline` routes live in `crate::baseline::api`.
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::{
    agent::{AgentError, Shared, lock},
    dataplane::ApplyReport,
    flows::FlowFilter,
    graph::{EdgeVerdict, GraphView},
    status::Status,
};

/// Query of `/v1/graph`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphQuery {
    /// Only edges touching this node (workload name or node id).
    pub workload: Option<String>,
    /// Only edges with an endpoint carrying this label, `key=value`.
    pub label: Option<String>,
    /// `allowed`, `denied` or `mixed`; `denied` also matches `mixed`.
    pub verdict: Option<String>,
    /// Only edges seen within this many seconds.
    pub since_secs: Option<u64>,
}

/// Query of `/v1/flows`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FlowsQuery {
    /// Source: workload name, node id or IP address.
    pub from: Option<String>,
    pub to: Option<String>,
    pub port: Option<u16>,
    /// `allowed`, `dropped` or `audit`.
    pub verdict: Option<String>,
    /// Either side.
    pub workload: Option<String>,
    /// Most recent records to return first (default 100).
    pub limit: Option<usize>,
    /// Keep the response open and stream new records as they come.
    #[serde(default)]
    pub follow: bool,
}

impl FlowsQuery {
    // (serde's flatten cannot carry numbers through a query string, hence the copy)
    pub fn filter(&self) -> FlowFilter {
        FlowFilter {
            from: self.from.clone(),
            to: self.to.clone(),
            port: self.port,
            verdict: self.verdict.clone(),
            workload: self.workload.clone(),
        }
    }
}

/// Applies a [`GraphQuery`] to a graph.
pub fn filter_graph(mut g: GraphView, q: &GraphQuery) -> Result<GraphView, String> {
    let label = match &q.label {
        Some(l) => Some(
            l.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("label filter {l:?} must be key=value"))?,
        ),
        None => None,
    };
    let verdict = match q.verdict.as_deref() {
        None => None,
        Some("allowed") => Some(EdgeVerdict::Allowed),
        Some("denied") => Some(EdgeVerdict::Denied),
        Some("mixed") => Some(EdgeVerdict::Mixed),
        Some(v) => return Err(format!("verdict {v:?} must be allowed, denied or mixed")),
    };
    let since = q
        .since_secs
        .and_then(|s| std::time::SystemTime::now().checked_sub(std::time::Duration::from_secs(s)));
    let node_labels: std::collections::HashMap<String, std::collections::BTreeMap<String, String>> =
        g.nodes
            .iter()
            .map(|n| (n.id.clone(), n.labels.clone()))
            .collect();
    let has_label = |id: &str| {
        label.as_ref().is_none_or(|(k, v)| {
            node_labels
                .get(id)
                .is_some_and(|l| l.get(k).is_some_and(|x| x == v))
        })
    };
    g.edges.retain(|e| {
        q.workload
            .as_ref()
            .is_none_or(|w| *w == e.src || *w == e.dst)
            && (has_label(&e.src) || has_label(&e.dst))
            && verdict.is_none_or(|v| {
                e.verdict == v || (v == EdgeVerdict::Denied && e.verdict == EdgeVerdict::Mixed)
            })
            && since
                .is_none_or(|t| humantime::parse_rfc3339(&e.last_seen).is_ok_and(|seen| seen >= t))
    });
    let used: std::collections::HashSet<&str> = g
        .edges
        .iter()
        .flat_map(|e| [e.src.as_str(), e.dst.as_str()])
        .collect();
    let any_filter =
        q.workload.is_some() || q.label.is_some() || q.verdict.is_some() || q.since_secs.is_some();
    if any_filter {
        g.nodes.retain(|n| used.contains(n.id.as_str()));
    }
    Ok(g)
}

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
        .route("/v1/graph", get(graph))
        .route("/v1/flows", get(flows))
        .merge(crate::baseline::api::routes())
        .with_state(shared)
}

pub async fn serve(listener: UnixListener, shared: Shared) {
    if let Err(e) = axum::serve(listener, router(shared)).await {
        tracing::error!(error = %e, "API server stopped");
    }
}

async fn graph(
    State(s): State<Shared>,
    q: Result<Query<GraphQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<GraphView>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let g = lock(&s).graph_view();
    filter_graph(g, &q)
        .map(Json)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))
}

/// One JSON line.
fn line<T: Serialize>(r: &T) -> axum::body::Bytes {
    let mut v = serde_json::to_vec(r).unwrap_or_default();
    v.push(b'\n');
    v.into()
}

/// An `application/x-ndjson` answer: `recent` as JSON lines, then, when following,
/// every item from `live` that `matches`, until the client goes away. A follower too
/// slow for the broadcast channel gets a `{"lagged":N}` line instead of the N items
/// it missed.
pub(crate) fn ndjson<T>(
    recent: Vec<T>,
    live: Option<tokio::sync::broadcast::Receiver<T>>,
    matches: impl Fn(&T) -> bool + Send + Sync + 'static,
) -> Result<Response, axum::http::Error>
where
    T: Serialize + Clone + Send + 'static,
{
    use futures_util::StreamExt as _;
    use tokio::sync::broadcast::error::RecvError;
    let head: Vec<Result<axum::body::Bytes, std::io::Error>> =
        recent.iter().map(|r| Ok(line(r))).collect();
    let head = futures_util::stream::iter(head);
    let builder = Response::builder().header("content-type", "application/x-ndjson");
    let Some(rx) = live else {
        return builder.body(Body::from_stream(head));
    };
    let live = futures_util::stream::unfold((rx, matches), |(mut rx, matches)| async move {
        loop {
            match rx.recv().await {
                Ok(r) if matches(&r) => return Some((Ok(line(&r)), (rx, matches))),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let msg = format!("{{\"lagged\":{n}}}\n");
                    return Some((Ok(msg.into()), (rx, matches)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    builder.body(Body::from_stream(head.chain(live)))
}

async fn flows(
    State(s): State<Shared>,
    q: Result<Query<FlowsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = q.filter();
    if let Some(v) = &filter.verdict
        && !["allowed", "dropped", "audit"].contains(&v.as_str())
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("verdict {v:?} must be allowed, dropped or audit"),
        ));
    }
    let limit = q.limit.unwrap_or(100).min(100_000);
    let (recent, rx) = {
        let a = lock(&s);
        let rx = q.follow.then(|| a.subscribe_flows());
        (a.recent_flows(&filter, limit), rx)
    };
    let resp = ndjson(recent, rx, move |r| filter.matches(r));
    resp.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
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
            file: a.policy_file(),
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

    /// GET `path` and hand every line of the (possibly endless) body to `on_line`
    /// until it returns false or the body ends.
    pub async fn stream_lines(
        socket: &Path,
        path: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
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
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", "enforcer")
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            let msg = serde_json::from_slice::<super::ErrorAnswer>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Refused(msg));
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| transport(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                if !on_line(&text) {
                    return Ok(());
                }
            }
        }
        Ok(())
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
