//! `GET /health`: `{"status":"ok"}` while the daemon serves, and nothing more (deliberately
//! opaque, as the Python service: it reveals neither key counts nor the store).

use crate::server::response::{self, Body};
use crate::state::Shared;
use heare_auth_client::wire::HealthResponse;
use hyper::{Response, StatusCode};
use std::sync::atomic::Ordering;

pub fn handle(shared: &Shared) -> Response<Body> {
    shared
        .metrics
        .health_requests
        .fetch_add(1, Ordering::Relaxed);
    response::json(
        StatusCode::OK,
        &HealthResponse {
            status: "ok".to_string(),
        },
    )
}
