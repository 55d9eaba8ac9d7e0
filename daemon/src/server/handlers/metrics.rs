//! `GET /metrics`: the Prometheus exposition ([`crate::metrics::exposition`]). On the Unix socket
//! and `listen_tcp` an admin call; on the dedicated `metrics_listen` listener open to whoever
//! can connect, since that listener is opted into for exactly this (and serves nothing else but
//! `/health`).

use crate::metrics::exposition;
use crate::server::peer::{Peer, check_admin};
use crate::server::response::{self, Body};
use crate::state::Shared;
use hyper::{Response, StatusCode};

/// Who is asking: an admin check first, or the metrics listener's peer.
pub enum Caller {
    Checked(Peer),
    MetricsListener,
}

pub fn handle(shared: &Shared, caller: Caller) -> Response<Body> {
    if let Caller::Checked(peer) = caller
        && let Err(refusal) = check_admin(peer, &shared.admin)
    {
        return response::error(StatusCode::FORBIDDEN, refusal.message());
    }
    let text = exposition::render(&shared.metrics, &shared.gauges());
    response::text(exposition::CONTENT_TYPE, text)
}
