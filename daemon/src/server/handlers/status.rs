//! `GET /status` (admin only): what is served, from where, how fresh, and what last went wrong.

use crate::metrics::VerifyResult;
use crate::server::peer::{Peer, check_admin};
use crate::server::response::{self, Body};
use crate::state::{Shared, Source};
use heare_auth_client::wire::{RateLimitBackendStatus, StatusResponse};
use heare_auth_store::timestamp;
use hyper::{Response, StatusCode};

pub fn handle(shared: &Shared, peer: Peer) -> Response<Body> {
    if let Err(refusal) = check_admin(peer, &shared.admin) {
        return response::error(StatusCode::FORBIDDEN, refusal.message());
    }
    let keys = shared.keys_full();
    let status = shared.status().clone();
    response::json(
        StatusCode::OK,
        &StatusResponse {
            daemon_version: env!("CARGO_PKG_VERSION").to_string(),
            keys_loaded: keys.len(),
            store: shared.store.clone(),
            store_version: status.version,
            last_load_at: status.last_load_at.map(timestamp::format),
            last_attempt_at: status.last_attempt_at.map(timestamp::format),
            last_error: status.last_error,
            stale: status.stale,
            source: match status.source {
                Source::Store => "store",
                Source::Cache => "cache",
            }
            .to_string(),
            load_warnings: status.warnings,
            cache_error: status.cache_error,
            generation_served: shared.newest.newest(),
            change_seq: keys.change_seq(),
            overlay_keys: keys.overlay_len(),
            log_lines_dropped: shared.log_drops.as_ref().map_or(0, |c| c.dropped_lines()),
            uptime_seconds: shared.started_at.elapsed().as_secs(),
            verify_results: verify_results(shared),
            notify: shared.queue.as_ref().map(|q| q.status()),
            listeners: shared.listeners.status(),
            rate_limit_backend: shared.fleet.as_ref().map(|fleet| {
                let state = fleet.state();
                RateLimitBackendStatus {
                    backend: "redis".into(),
                    up: state.up,
                    errors: state.errors,
                    last_error: state.last_error,
                }
            }),
        },
    )
}

/// Verify requests since start, by result.
fn verify_results(shared: &Shared) -> Vec<(String, u64)> {
    let totals = shared.metrics.verify.read();
    VerifyResult::ALL
        .iter()
        .map(|&result| (result.name().to_string(), totals.get(result)))
        .collect()
}
