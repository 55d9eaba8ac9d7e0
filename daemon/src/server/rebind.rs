//! Binding a TCP listener the daemon opens itself (`listen_tcp`, `metrics_listen`) until it
//! succeeds. A port at or above `ip_unprivileged_port_start` can be held by any local user while
//! the daemon is down; that must not stop the daemon or its Unix socket. A failed bind is logged
//! as `listener_bind_failed` (when it is news: the first failure, or a different error), recorded
//! as `failing` in the listener's [`ListenerState`], and retried after a full-jitter backoff
//! capped at [`RETRY_CAP`]; once the port is free the daemon takes it.

use super::listener_state::ListenerState;
use super::listeners;
use crate::schedule;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::watch;

/// The widest retry window: a freed port is taken within this long.
pub const RETRY_CAP: Duration = Duration::from_secs(30);

/// One attempt to bind `address`, recorded in `state`.
pub fn try_bind(address: SocketAddr, state: &ListenerState) -> Option<tokio::net::TcpListener> {
    match bind(address) {
        Ok(listener) => {
            state.set_listening();
            Some(listener)
        }
        Err(error) => {
            failed(address, state, error.to_string());
            None
        }
    }
}

/// Binds `address` after `failures` failed attempts, retrying until it succeeds; `None` when
/// `stopped` turns true first.
pub async fn until_bound(
    address: SocketAddr,
    state: &ListenerState,
    mut failures: u32,
    stopped: &mut watch::Receiver<bool>,
) -> Option<tokio::net::TcpListener> {
    loop {
        let wait = schedule::retry_wait_within(failures, RETRY_CAP);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => return None,
        }
        match bind(address) {
            Ok(listener) => {
                state.set_listening();
                tracing::info!(
                    listener = state.name.name(),
                    address = %address,
                    failed_attempts = failures,
                    "listener_bind_recovered"
                );
                return Some(listener);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                failed(address, state, error.to_string());
            }
        }
    }
}

fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    listeners::bind_tcp(address).and_then(tokio::net::TcpListener::from_std)
}

/// Records a failed bind; logs it as a warning when it is news, else at debug level.
fn failed(address: SocketAddr, state: &ListenerState, error: String) {
    let listener = state.name.name();
    if state.set_failing(error.clone()) {
        tracing::warn!(listener, address = %address, error, "listener_bind_failed");
    } else {
        tracing::debug!(listener, address = %address, error, "listener_bind_failed");
    }
}
