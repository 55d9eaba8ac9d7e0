//! Closing connections that hold a slot without using it: slow clients and idle keep-alives.
//!
//! hyper's own `header_read_timeout` arms a timer for every request, which on a 2-core host cost
//! ~15–20% of verify throughput. This watchdog keeps the same guarantees with one timer per
//! connection that ticks a few times per timeout: the connection's reads and the service record
//! activity in atomics, and on each tick the watchdog closes the connection when a request has been
//! arriving for longer than `header_read_timeout` without its headers completing (slowloris), or
//! when no request has started for `idle_timeout`. A request being served is never interrupted.
//! The same record tells the connection limit ([`super::connections`]) which connections sit idle
//! between requests and may be closed to admit a new client.

use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Milliseconds since the first call (a process-wide monotonic base), never 0.
fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What a connection has been doing, shared by its I/O wrapper, its service and its watchdog.
#[derive(Default)]
pub struct Activity {
    /// When bytes of a not-yet-parsed request first arrived; 0 when none are pending.
    partial_since: AtomicU64,
    /// When the connection last started or finished a request (or was opened).
    last_activity: AtomicU64,
    in_flight: AtomicU32,
    /// The last write to the peer could not complete (an answer is still on its way out).
    write_blocked: AtomicBool,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    SlowHeaders,
    Idle,
}

impl Activity {
    pub fn new() -> Self {
        let activity = Activity::default();
        activity.last_activity.store(now_ms(), Ordering::Relaxed);
        activity
    }

    fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.partial_since.load(Ordering::Relaxed) == 0
        {
            self.partial_since.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// A request's headers are complete and it is being served; drop the guard when answered.
    pub fn request_started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.partial_since.store(0, Ordering::Relaxed);
        self.last_activity.store(now_ms(), Ordering::Relaxed);
        InFlight(self)
    }

    /// Idle between requests: nothing being served, no request arriving, no answer left to write.
    /// Only the task that polls the connection can change this, so while that task runs, the
    /// answer cannot go stale.
    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.partial_since.load(Ordering::Relaxed) == 0
            && !self.write_blocked.load(Ordering::Relaxed)
    }

    /// When the connection last started or finished a request (or was opened), in the
    /// process-wide milliseconds of this module: smaller is longer ago.
    pub fn last_activity(&self) -> u64 {
        self.last_activity.load(Ordering::Relaxed)
    }

    fn wrote<T>(&self, result: &Poll<std::io::Result<T>>) {
        let blocked = result.is_pending();
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
    }

    /// Whether the connection should be closed now.
    pub fn check(
        &self,
        header_timeout: Option<Duration>,
        idle_timeout: Option<Duration>,
    ) -> Option<Verdict> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = now_ms();
        let partial = self.partial_since.load(Ordering::Relaxed);
        if partial != 0 {
            let limit = header_timeout?.as_millis() as u64;
            return (now.saturating_sub(partial) >= limit).then_some(Verdict::SlowHeaders);
        }
        let limit = idle_timeout?.as_millis() as u64;
        let idle_for = now.saturating_sub(self.last_activity.load(Ordering::Relaxed));
        (idle_for >= limit).then_some(Verdict::Idle)
    }
}

/// Marks a request as answered when dropped.
pub struct InFlight<'a>(&'a Activity);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.last_activity.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often the watchdog looks: a quarter of the shorter timeout, at least 50 ms.
pub fn tick(header_timeout: Option<Duration>, idle_timeout: Option<Duration>) -> Option<Duration> {
    let shortest = match (header_timeout, idle_timeout) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    Some((shortest / 4).max(Duration::from_millis(50)))
}

/// The connection's I/O, reporting arriving bytes to its [`Activity`].
pub struct Watched<IO> {
    io: IO,
    activity: std::sync::Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub fn new(io: IO, activity: std::sync::Arc<Activity>) -> Self {
        Watched { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, bytes);
        self.activity.wrote(&result);
        result
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.activity.wrote(&result);
        result
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.activity.wrote(&result);
        result
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_headers_idle_and_in_flight() {
        let activity = Activity::new();
        let zero = Some(Duration::ZERO);
        assert_eq!(activity.check(None, zero), Some(Verdict::Idle));
        assert_eq!(activity.check(None, Some(Duration::from_secs(60))), None);
        activity.bytes_arrived();
        assert_eq!(activity.check(zero, None), Some(Verdict::SlowHeaders));
        let guard = activity.request_started();
        assert_eq!(activity.check(zero, zero), None, "never while serving");
        drop(guard);
        assert_eq!(
            activity.check(Some(Duration::from_secs(60)), Some(Duration::from_secs(60))),
            None
        );
        assert_eq!(
            tick(Some(Duration::from_secs(10)), Some(Duration::from_secs(60))),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(tick(None, None), None);
    }

    #[test]
    fn idle_only_between_requests() {
        let activity = Activity::new();
        assert!(activity.is_idle(), "opened, nothing sent yet");
        activity.bytes_arrived();
        assert!(!activity.is_idle(), "a request is arriving");
        let guard = activity.request_started();
        assert!(!activity.is_idle(), "a request is being served");
        drop(guard);
        assert!(activity.is_idle());
        activity.wrote::<usize>(&Poll::Pending);
        assert!(!activity.is_idle(), "the answer is still being written");
        activity.wrote(&Poll::Ready(Ok(10usize)));
        assert!(activity.is_idle());
    }
}
