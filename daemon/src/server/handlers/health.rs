//! `GET /health`: `{"status":"ok"}` while the daemon serves, and nothing more (deliberately
//! opaque, as the Python service: it reveals neither key counts nor the store).

use crate::server::response::{self, Body};
use heare_auth_client::wire::HealthResponse;
use hyper::{Response, StatusCode};

pub fn handle() -> Response<Body> {
    response::json(
        StatusCode::OK,
        &HealthResponse {
            status: "ok".to_string(),
        },
    )
}
