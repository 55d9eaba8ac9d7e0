//! Maps method and path to a handler; every miss is a JSON 404 or 405.

use crate::server::handlers::{health, refresh, status, verify};
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
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let response = match (request.uri().path(), method) {
        ("/verify", Method::POST) => verify::handle(request, shared, peer).await,
        ("/verify", _) => response::method_not_allowed("POST"),
        ("/refresh", Method::POST) => refresh::handle(shared, peer).await,
        ("/refresh", _) => response::method_not_allowed("POST"),
        ("/health", Method::GET | Method::HEAD) => health::handle(),
        ("/health", _) => response::method_not_allowed("GET, HEAD"),
        ("/status", Method::GET) => status::handle(shared, peer),
        ("/status", _) => response::method_not_allowed("GET"),
        _ => response::error(
            StatusCode::NOT_FOUND,
            "no such endpoint: use POST /verify, POST /refresh, GET /health or GET /status",
        ),
    };
    Ok(response)
}
