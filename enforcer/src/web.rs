//! The optional web view: a self-contained page that draws the live service graph
//! (`--web-address`, off by default; see docs/webview.md).
//!
//! Read-only and small on purpose. Four routes, `GET` (and `HEAD`) only:
//!
//! | path         | answer                                          |
//! |--------------|-------------------------------------------------|
//! | `/`          | the page (`web/index.html`)                     |
//! | `/app.js`    | the drawing code (`web/app.js`)                 |
//! | `/style.css` | the style sheet (`web/style.css`)               |
//! | `/api/graph` | the agent's [`GraphView`] as JSON               |
//!
//! The assets are compiled into the binary, the page loads nothing from anywhere
//! else (`Content-Security-Policy: default-src 'self'`), and a request whose `Host`
//! is a DNS name other than `localhost` is refused, so a web site cannot read the
//! graph through DNS rebinding even when the page is open in the operator's browser.
use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::{
    agent::{Shared, lock},
    graph::GraphView,
};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// Sent with every answer: nothing but this server's own scripts, styles, images and
/// fetches; no framing, no forms, no `<base>` tricks.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web view: cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where `/api/graph` gets its data: the running agent, or a fixed graph in tests.
pub type GraphSource = Arc<dyn Fn() -> GraphView + Send + Sync>;

/// Binds the web view's TCP listener. Called before the agent starts, so a busy or
/// invalid address fails the start instead of silently leaving the page away.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, WebError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| WebError::Bind { address, source })?;
    tracing::info!(event = "web_view_listening", %address, "web view on http://{address}/");
    if !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "the web view has no authentication and listens on a non-loopback address: \
             anyone who can reach it sees the service graph"
        );
    }
    Ok(listener)
}

/// Serves the web view of `shared`'s graph on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Shared) {
    let source: GraphSource = Arc::new(move || lock(&shared).graph_view());
    if let Err(e) = axum::serve(listener, router(source)).await {
        tracing::error!(error = %e, "web view server stopped");
    }
}

/// The web view's routes. Everything else is 404; other methods are 405.
pub fn router(source: GraphSource) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/graph", get(graph))
        .fallback(not_found)
        .with_state(source)
        .layer(middleware::from_fn(guard))
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // `no-cache`, not `no-store`: after an agent upgrade the browser revalidates and
    // never mixes an old script with a new page.
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn graph(State(source): State<GraphSource>) -> Response {
    // The agent's lock and its map reads block: keep them off the async workers.
    match tokio::task::spawn_blocking(move || source()).await {
        Ok(view) => ([(header::CACHE_CONTROL, "no-store")], Json(view)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "web view: building the graph failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "building the graph failed; see the agent log\n",
            )
                .into_response()
        }
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Refuses foreign `Host` names and adds the security headers to every answer.
async fn guard(req: Request, next: Next) -> Response {
    let mut resp = if host_allowed(req.headers()) {
        next.run(req).await
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "the web view answers only to an IP address or localhost in the Host header\n",
        )
            .into_response()
    };
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// A request must name the server by IP address or as `localhost` (what `ssh -L` and
/// `kubectl port-forward` give): a DNS name could be an attacker's, rebound to us.
/// HTTP/1.0 requests without `Host` cannot come from a browser and are allowed.
fn host_allowed(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = value.to_str() else {
        return false;
    };
    if let Some(rest) = host.strip_prefix('[') {
        // `[v6]:port` or `[v6]`
        return rest
            .split_once(']')
            .is_some_and(|(ip, _port)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let name = host.rsplit_once(':').map_or(host, |(name, _port)| name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests;
