//! Maps method and path to a handler; every miss is a JSON 404 or 405. The `metrics_listen`
//! listener has a router of its own that knows only `/metrics` and `/health`.

use crate::server::Role;
use crate::server::handlers::metrics::Caller;
use crate::server::handlers::{forward_auth, health, metrics, refresh, status, usage, verify};
use crate::server::peer::Peer;
use crate::server::response::{self, Body};
use crate::state::Shared;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;

pub async fn route(
    request: Request<Incoming>,
    shared: &Shared,
    peer: Peer,
    role: Role,
) -> Result<Response<Body>, Infallible> {
    Ok(match role {
        Role::Full => route_full(request, shared, peer).await,
        Role::MetricsOnly => route_metrics(&request, shared),
    })
}

/// The `metrics_listen` listener: `/metrics` without an admin check, `/health`, nothing else.
fn route_metrics(request: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    match (request.uri().path(), request.method()) {
        ("/metrics", &Method::GET) => metrics::handle(shared, Caller::MetricsListener),
        ("/metrics", _) => response::method_not_allowed("GET"),
        ("/health", &Method::GET | &Method::HEAD) => health::handle(shared),
        ("/health", _) => response::method_not_allowed("GET, HEAD"),
        _ => response::error(
            StatusCode::NOT_FOUND,
            "this listener serves only GET /metrics and GET /health",
        ),
    }
}

async fn route_full(request: Request<Incoming>, shared: &Shared, peer: Peer) -> Response<Body> {
    let method = request.method().clone();
    match (request.uri().path(), method) {
        ("/verify", Method::POST) => verify::handle(request, shared, peer).await,
        ("/verify", _) => response::method_not_allowed("POST"),
        ("/refresh", Method::POST) => refresh::handle(shared, peer).await,
        ("/refresh", _) => response::method_not_allowed("POST"),
        ("/health", Method::GET | Method::HEAD) => health::handle(shared),
        ("/health", _) => response::method_not_allowed("GET, HEAD"),
        ("/status", Method::GET) => status::handle(shared, peer),
        ("/status", _) => response::method_not_allowed("GET"),
        ("/metrics", Method::GET) => metrics::handle(shared, Caller::Checked(peer)),
        ("/metrics", _) => response::method_not_allowed("GET"),
        // Envoy's ext_authz appends the original path to its path_prefix (`/auth/orders/7`).
        (path, _) if path == "/auth" || path.starts_with("/auth/") => {
            forward_auth::handle(&request, shared, peer).await
        }
        ("/usage", Method::GET) => usage::handle(shared, peer).await,
        ("/usage", _) => response::method_not_allowed("GET"),
        _ => response::error(
            StatusCode::NOT_FOUND,
            "no such endpoint: use POST /verify, POST /refresh, GET /health, GET /status, GET /metrics, GET /usage or /auth",
        ),
    }
}
