//! `GET /usage` (admin only): every key of the set served with its verifications and the time of
//! the last one, `[{"key_id", "verifications", "last_verified_at"}]`, and for a rate-limited key
//! its refusals (`"rate_limited"`). Built on a blocking thread:
//! a million keys take a moment to list.

use crate::server::peer::{Peer, check_admin};
use crate::server::response::{self, Body};
use crate::state::Shared;
use crate::usage;
use hyper::{Response, StatusCode};

pub async fn handle(shared: &Shared, peer: Peer) -> Response<Body> {
    if let Err(refusal) = check_admin(peer, &shared.admin) {
        return response::error(StatusCode::FORBIDDEN, refusal.message());
    }
    let set = shared.keys_full();
    let listed = tokio::task::spawn_blocking(move || {
        serde_json::to_vec(&usage::entries(&set)).unwrap_or_default()
    })
    .await;
    match listed {
        Ok(body) => response::json_bytes(StatusCode::OK, body),
        Err(_) => response::error(StatusCode::INTERNAL_SERVER_ERROR, "the listing failed"),
    }
}
