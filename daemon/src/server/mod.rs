//! Serving HTTP/1.1 on the listeners: accept loops, the connection limit, graceful shutdown.
//!
//! Each listener has its own accept loop; every accepted connection takes a slot in the shared
//! [`connections::ConnectionTable`] (at `max_connections`, the longest-idle connection is closed
//! to make room, so idle clients cannot lock new ones out, and descriptors stay bounded); each
//! connection is served by hyper on its own task, watched against slow and idle clients. On
//! shutdown the loops stop accepting, ask every open connection to finish its in-flight request,
//! and wait a bounded time.

pub mod body;
pub mod connections;
pub mod fd_limit;
pub mod handlers;
pub mod listener_state;
pub mod listeners;
pub mod peer;
pub mod rebind;
pub mod response;
mod router;
pub mod watchdog;

use crate::state::Shared;
use connections::{Admitted, ConnectionTable, PeerAtLimit};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use peer::Peer;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use watchdog::{Activity, Timeouts, Watched};

/// How long shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connection settings shared by every listener.
#[derive(Clone)]
pub struct ConnectionPolicy {
    /// The connection limits, shared by every listener.
    pub connections: Arc<ConnectionTable>,
    /// Slow headers, idle keep-alives and answers nobody reads: when each closes a connection.
    pub timeouts: Timeouts,
}

/// What every request on one connection needs. Each request clones this one per-connection
/// `Arc` (a count only its own connection touches) rather than the daemon-wide `Arc<Shared>`,
/// whose count every worker thread would bump twice per request.
struct RequestContext {
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    peer: Peer,
    role: Role,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every endpoint, admin ones by the peer's rights.
    Full,
    /// `metrics_listen`: `/metrics` and `/health` only.
    MetricsOnly,
}

/// A listener that yields connections with their peer.
pub trait Accept: Send + 'static {
    /// What the listener serves.
    const ROLE: Role = Role::Full;
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Io, Peer)>> + Send;
    fn describe(&self) -> String;
    /// Turns a connection away: one try to send a fixed 503 without waiting, then close.
    fn refuse(io: Self::Io);
}

/// What a peer over its connection limit is told (best effort, never waited for).
const PEER_AT_LIMIT: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 58\r\nconnection: close\r\n\r\n{\"error\":\"too many connections from this peer; try again\"}";

/// The Unix socket: each peer with its kernel credentials, and whether it holds the admin group.
pub struct UnixAcceptor {
    pub listener: tokio::net::UnixListener,
    /// The admin group's gid, resolved once at start (no group database lookup per connection).
    pub admin_gid: Option<u32>,
}

impl Accept for UnixAcceptor {
    type Io = tokio::net::UnixStream;
    async fn accept(&self) -> io::Result<(Self::Io, Peer)> {
        let (stream, _) = self.listener.accept().await?;
        let peer = Peer::of_unix(&stream, self.admin_gid)?;
        Ok((stream, peer))
    }
    fn describe(&self) -> String {
        match self
            .listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        {
            Some(path) => format!("unix:{path}"),
            None => "unix".to_string(),
        }
    }
    fn refuse(io: Self::Io) {
        let _ = io.try_write(PEER_AT_LIMIT);
    }
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Io, Peer)> {
        let (stream, address) = tokio::net::TcpListener::accept(self).await?;
        stream.set_nodelay(true)?;
        Ok((stream, Peer::Tcp(address)))
    }
    fn describe(&self) -> String {
        match self.local_addr() {
            Ok(address) => format!("tcp:{address}"),
            Err(_) => "tcp".to_string(),
        }
    }
    fn refuse(io: Self::Io) {
        let _ = io.try_write(PEER_AT_LIMIT);
    }
}

/// The `metrics_listen` TCP listener: serves only `/metrics` and `/health`.
pub struct MetricsListener(pub tokio::net::TcpListener);

impl Accept for MetricsListener {
    const ROLE: Role = Role::MetricsOnly;
    type Io = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<(Self::Io, Peer)> {
        Accept::accept(&self.0).await
    }
    fn describe(&self) -> String {
        format!("metrics:{}", Accept::describe(&self.0))
    }
    fn refuse(io: Self::Io) {
        <tokio::net::TcpListener as Accept>::refuse(io);
    }
}

/// Accepts and serves connections on `listener` until `shutdown` turns true, then drains.
pub async fn serve<L: Accept>(
    listener: L,
    shared: Arc<Shared>,
    policy: ConnectionPolicy,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = listener.describe();
    tracing::info!(listener = %name, "listening");
    let graceful = GracefulShutdown::new();
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (io, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning, keep serving.
                if let Some(suppressed) = failures.note(Instant::now()) {
                    tracing::warn!(listener = %name, %error, suppressed, "accept_failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let activity = Arc::new(Activity::new());
        let admitted = tokio::select! {
            admitted = policy.connections.admit(activity.clone(), peer.limit_key()) => admitted,
            _ = shutdown.changed() => break,
        };
        match admitted {
            Ok(admitted) => {
                let context = RequestContext {
                    shared: shared.clone(),
                    activity,
                    peer,
                    role: L::ROLE,
                };
                tokio::spawn(serve_connection(
                    io,
                    context,
                    admitted,
                    policy.timeouts,
                    &graceful,
                ));
            }
            Err(refusal) => {
                L::refuse(io);
                warn_refused(peer, refusal, &policy.connections);
            }
        }
    }
    // Close the listening socket before draining: a client connecting now gets "connection
    // refused" at once (or, under socket activation, waits in systemd's copy of the socket for
    // the next instance) instead of hanging in a backlog nobody will accept from.
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!(listener = %name, "shutdown_grace_expired");
        }
    }
}

/// Serves one admitted connection with hyper until it ends, the table asks it to make room, or
/// its watchdog closes it. The connection lives inside this function, so its descriptor is closed
/// before its slot (`admitted`) is given up: descriptors in use never exceed the limit.
fn serve_connection<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: IO,
    context: RequestContext,
    admitted: Admitted,
    timeouts: Timeouts,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let activity = context.activity.clone();
    let io = Watched::new(io, activity.clone());
    let context = Arc::new(context);
    let service = service_fn(move |request| {
        let context = context.clone();
        async move {
            let _in_flight = context.activity.request_started();
            router::route(request, &context.shared, context.peer, context.role).await
        }
    });
    let connection = http1::Builder::new()
        .keep_alive(true)
        // Answers are a few hundred bytes: copying the body behind the head and making one
        // `write` costs less than a `writev` of two pieces.
        .writev(false)
        // Request line and headers beyond 64 KiB are refused (431) instead of hyper's
        // ~400 KiB default; hyper reads no further ahead than this buffer and stops reading
        // while its answers wait to be written, so pipelined requests beyond it wait in the
        // kernel, not in our memory.
        .max_buf_size(body::MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service);
    let connection = graceful.watch(connection);
    async move {
        {
            tokio::pin!(connection);
            let mut ticks = watchdog::tick(timeouts).map(|period| {
                tokio::time::interval_at(tokio::time::Instant::now() + period, period)
            });
            loop {
                tokio::select! {
                    result = &mut connection => {
                        if let Err(error) = result {
                            tracing::debug!(%error, "connection_error");
                        }
                        break;
                    }
                    _ = admitted.tracked().close_requested() => {
                        if admitted.tracked().agree_to_close() {
                            tracing::debug!("connection_closed_for_room");
                            admitted.closed_for_room();
                            break;
                        }
                    }
                    _ = next_tick(&mut ticks) => {
                        if let Some(verdict) = activity.check(timeouts) {
                            tracing::debug!(?verdict, "connection_closed_by_watchdog");
                            break;
                        }
                    }
                }
            }
        }
        drop(admitted);
    }
}

/// One listener's failed accepts, logged as `accept_failed` at most once per
/// [`connections::WARN_EVERY`]: a lasting failure (out of descriptors, `EMFILE`) fails every
/// 50 ms back-off, and would otherwise log twenty lines a second for as long as it lasts.
#[derive(Default)]
struct AcceptFailures {
    last_logged: Option<Instant>,
    /// Failures since the last line, not logged.
    suppressed: u64,
}

impl AcceptFailures {
    /// Counts a failure at `now`: `Some(suppressed)` when it is to be logged, with the number of
    /// failures left unlogged since the previous line; `None` when it is one of those.
    fn note(&mut self, now: Instant) -> Option<u64> {
        let due = self
            .last_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= connections::WARN_EVERY);
        if !due {
            self.suppressed += 1;
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Logs a connection turned away because its peer is at its limit, at most every 10 s.
fn warn_refused(peer: Peer, refusal: PeerAtLimit, table: &ConnectionTable) {
    if table.refusal_warning.due() {
        let fields = peer.log_fields();
        tracing::warn!(
            peer_uid = fields.uid,
            peer_addr = fields.addr.map(tracing::field::display),
            limit = refusal.limit,
            "connection_refused_peer_limit"
        );
    }
}

/// The next watchdog tick, or never when no timeout is configured.
async fn next_tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_logged_once_per_period_with_the_count_left_out() {
        let start = Instant::now();
        let mut failures = AcceptFailures::default();
        assert_eq!(failures.note(start), Some(0));
        // Twenty a second, as the 50 ms back-off fails, for just under a period.
        let back_off = Duration::from_millis(50);
        let mut at = start;
        for _ in 0..199 {
            at += back_off;
            assert_eq!(failures.note(at), None);
        }
        assert_eq!(failures.note(start + connections::WARN_EVERY), Some(199));
        assert_eq!(failures.note(start + connections::WARN_EVERY), None);
        // A failure long after the last: logged at once, with what was left out before it.
        assert_eq!(failures.note(start + 10 * connections::WARN_EVERY), Some(1));
    }
}
