//! `POST /refresh` (admin only): asks the reloader for a full reload and waits for its outcome.
//! 200 with the new key count, or 500 with the reason while the previous set keeps serving.

use crate::metrics::RefreshResult;
use crate::reload_request::{ReloadRequest, Trigger};
use crate::server::peer::{Peer, check_admin};
use crate::server::response::{self, Body};
use crate::state::Shared;
use heare_auth_client::wire::RefreshResponse;
use heare_auth_store::timestamp;
use hyper::{Response, StatusCode};
use std::time::Instant;
use tokio::sync::oneshot;

/// Answers a refresh and counts it (requests, success, failed, rejected, duration).
pub async fn handle(shared: &Shared, peer: Peer) -> Response<Body> {
    let started = Instant::now();
    let (answer, result) = refresh(shared, peer).await;
    shared.metrics.record_refresh(result, started.elapsed());
    answer
}

async fn refresh(shared: &Shared, peer: Peer) -> (Response<Body>, RefreshResult) {
    if let Err(refusal) = check_admin(peer, &shared.admin) {
        let fields = peer.log_fields();
        tracing::warn!(
            peer_uid = fields.uid,
            peer_pid = fields.pid,
            peer_addr = fields.addr.map(tracing::field::display),
            "refresh_rejected"
        );
        let answer = response::error(StatusCode::FORBIDDEN, refusal.message());
        return (answer, RefreshResult::Rejected);
    }
    let (reply, outcome) = oneshot::channel();
    let request = ReloadRequest {
        trigger: Trigger::Http,
        reply: Some(reply),
    };
    let shutting_down = || {
        let answer = response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        );
        (answer, RefreshResult::Failed)
    };
    if shared.reload_requests.send(request).await.is_err() {
        return shutting_down();
    }
    let Ok(outcome) = outcome.await else {
        return shutting_down();
    };
    let timestamp = timestamp::format(timestamp::now());
    match outcome {
        Ok(keys_loaded) => (
            response::json(
                StatusCode::OK,
                &RefreshResponse {
                    success: true,
                    keys_loaded,
                    timestamp,
                    error: None,
                },
            ),
            RefreshResult::Success,
        ),
        Err(error) => (
            response::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &RefreshResponse {
                    success: false,
                    keys_loaded: shared.keys().len(),
                    timestamp,
                    error: Some(error.to_string()),
                },
            ),
            RefreshResult::Failed,
        ),
    }
}
