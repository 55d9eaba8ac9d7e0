//! `POST /refresh` (admin only): asks the reloader for a full reload and waits for its outcome.
//! 200 with the new key count, or 500 with the reason while the previous set keeps serving.

use crate::reload_request::{ReloadRequest, Trigger};
use crate::server::peer::{Peer, check_admin};
use crate::server::response::{self, Body};
use crate::state::Shared;
use heare_auth_client::wire::RefreshResponse;
use heare_auth_store::timestamp;
use hyper::{Response, StatusCode};
use tokio::sync::oneshot;

pub async fn handle(shared: &Shared, peer: Peer) -> Response<Body> {
    let (uid, pid, address) = peer.log_fields();
    if let Err(refusal) = check_admin(peer, &shared.admin) {
        tracing::warn!(
            peer_uid = uid,
            peer_pid = pid,
            peer_addr = address,
            "refresh_rejected"
        );
        return response::error(StatusCode::FORBIDDEN, refusal.message());
    }
    let (reply, outcome) = oneshot::channel();
    let request = ReloadRequest {
        trigger: Trigger::Http,
        reply: Some(reply),
    };
    if shared.reload_requests.send(request).await.is_err() {
        return response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        );
    }
    let Ok(outcome) = outcome.await else {
        return response::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        );
    };
    let timestamp = timestamp::format(timestamp::now());
    match outcome {
        Ok(keys_loaded) => response::json(
            StatusCode::OK,
            &RefreshResponse {
                success: true,
                keys_loaded,
                timestamp,
                error: None,
            },
        ),
        Err(error) => response::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &RefreshResponse {
                success: false,
                keys_loaded: shared.keys().len(),
                timestamp,
                error: Some(error.to_string()),
            },
        ),
    }
}
