//! Closing connections that hold a slot without using it: slow clients, idle keep-alives, and
//! clients that never read their answers.
//!
//! hyper's own `header_read_timeout` arms a timer for every request, which on a 2-core host cost
//! ~15–20% of verify throughput. This watchdog keeps the same guarantees with one timer per
//! connection that ticks a few times per timeout: the connection's reads, writes and the service
//! record activity in atomics, and on each tick the watchdog closes the connection when a request
//! has been arriving for longer than `header_read_timeout` without its headers completing
//! (slowloris), when no request has started for `idle_timeout`, or when an answer has made no
//! write progress for `write_timeout` (a peer that pipelines requests and never reads: its answers
//! fill the socket buffers). A request being handled is never interrupted by the first two. The
//! same record tells the connection limit ([`super::connections`]) which connections may be closed
//! to admit a new client: those idle between requests, and those blocked on writing.

use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Milliseconds since the first call (a process-wide monotonic base), never 0.
///
/// Read several times per request (bytes arriving, a request starting and ending, writes), so
/// it reads the kernel's coarse monotonic clock: a memory read in the vDSO, no time-stamp
/// counter, to the kernel's tick (1–4 ms), which is finer than any timeout it serves. The
/// precise clock cost 1.5% of the daemon's CPU under load (perf, cpu-clock, `__vdso_clock_gettime`).
fn now_ms() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    let now = coarse_ms();
    now.saturating_sub(*BASE.get_or_init(|| now)) + 1
}

/// `CLOCK_MONOTONIC_COARSE` in milliseconds (0 if it could not be read, which Linux never does).
fn coarse_ms() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_MONOTONIC_COARSE).map_or(0, |now| {
        (now.tv_sec() as u64) * 1000 + (now.tv_nsec() as u64) / 1_000_000
    })
}

/// What a connection has been doing, shared by its I/O wrapper, its service and its watchdog.
#[derive(Default)]
pub struct Activity {
    /// When bytes of a not-yet-parsed request first arrived; 0 when none are pending.
    partial_since: AtomicU64,
    /// When the connection last started or finished a request (or was opened).
    last_activity: AtomicU64,
    in_flight: AtomicU32,
    /// When the request being served started.
    in_flight_since: AtomicU64,
    /// Since when a write to the peer has been unable to make progress (an answer is still on its
    /// way out); 0 while writes go through.
    write_blocked_since: AtomicU64,
}

/// How long a request may be arriving or in service before, at a full table, its connection
/// counts as a slow client's.
pub const SLOW: Duration = Duration::from_secs(1);

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    SlowHeaders,
    Idle,
    WriteStalled,
}

/// The connection's timeouts; `None` disables one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's headers must arrive within this.
    pub header_read: Option<Duration>,
    /// A connection with no request for this long is closed.
    pub idle: Option<Duration>,
    /// An answer that makes no write progress for this long closes the connection.
    pub write: Option<Duration>,
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
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 {
            self.in_flight_since.store(now_ms(), Ordering::Relaxed);
        }
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
            && self.write_blocked_since.load(Ordering::Relaxed) == 0
    }

    /// Whether the connection may be closed to make room, and since when it has been so (smaller
    /// is longer ago): idle between requests (since its last request), or blocked on writing an
    /// answer its peer does not read (since the block began). Never while a request is handled.
    pub fn evictable_since(&self) -> Option<u64> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != 0 {
            return Some(blocked);
        }
        self.is_idle().then(|| self.last_activity())
    }

    /// Since when the connection's request has been arriving or in service, when that is longer
    /// than [`SLOW`] ago: a slow client (verify answers take microseconds), which the connection
    /// limit may close to admit a newcomer once no idle or blocked connection is left.
    pub fn slow_since(&self) -> Option<u64> {
        let since = if self.in_flight.load(Ordering::Relaxed) > 0 {
            self.in_flight_since.load(Ordering::Relaxed)
        } else {
            self.partial_since.load(Ordering::Relaxed)
        };
        (since != 0 && now_ms().saturating_sub(since) >= SLOW.as_millis() as u64).then_some(since)
    }

    /// When the connection last started or finished a request (or was opened), in the
    /// process-wide milliseconds of this module: smaller is longer ago.
    pub fn last_activity(&self) -> u64 {
        self.last_activity.load(Ordering::Relaxed)
    }

    /// Records a write's outcome: a write that cannot proceed starts (or continues) a block; one
    /// that went through ends it. Only a block costs a clock read.
    pub(super) fn wrote<T>(&self, result: &Poll<std::io::Result<T>>) {
        let since = self.write_blocked_since.load(Ordering::Relaxed);
        match (result.is_pending(), since) {
            (true, 0) => self.write_blocked_since.store(now_ms(), Ordering::Relaxed),
            (false, since) if since != 0 => self.write_blocked_since.store(0, Ordering::Relaxed),
            _ => {}
        }
    }

    /// Whether the connection should be closed now.
    pub fn check(&self, timeouts: Timeouts) -> Option<Verdict> {
        let now = now_ms();
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if blocked != 0
            && let Some(limit) = timeouts.write
            && now.saturating_sub(blocked) >= limit.as_millis() as u64
        {
            return Some(Verdict::WriteStalled);
        }
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let partial = self.partial_since.load(Ordering::Relaxed);
        if partial != 0 {
            let limit = timeouts.header_read?.as_millis() as u64;
            return (now.saturating_sub(partial) >= limit).then_some(Verdict::SlowHeaders);
        }
        let limit = timeouts.idle?.as_millis() as u64;
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

/// How often the watchdog looks: a quarter of the shortest timeout, at least 50 ms.
pub fn tick(timeouts: Timeouts) -> Option<Duration> {
    let shortest = [timeouts.header_read, timeouts.idle, timeouts.write]
        .into_iter()
        .flatten()
        .min()?;
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
        let minute = Some(Duration::from_secs(60));
        let timeouts = |header_read, idle| Timeouts {
            header_read,
            idle,
            write: None,
        };
        assert_eq!(activity.check(timeouts(None, zero)), Some(Verdict::Idle));
        assert_eq!(activity.check(timeouts(None, minute)), None);
        activity.bytes_arrived();
        assert_eq!(
            activity.check(timeouts(zero, None)),
            Some(Verdict::SlowHeaders)
        );
        let guard = activity.request_started();
        assert_eq!(
            activity.check(timeouts(zero, zero)),
            None,
            "never while serving"
        );
        drop(guard);
        assert_eq!(activity.check(timeouts(minute, minute)), None);
        let tick_of = |header_read, idle, write| {
            tick(Timeouts {
                header_read,
                idle,
                write,
            })
        };
        assert_eq!(
            tick_of(Some(Duration::from_secs(10)), minute, None),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            tick_of(None, minute, Some(Duration::from_secs(2))),
            Some(Duration::from_millis(500))
        );
        assert_eq!(tick_of(None, None, None), None);
    }

    #[test]
    fn a_write_blocked_too_long_is_stalled_even_mid_request() {
        let activity = Activity::new();
        let stall = Timeouts {
            write: Some(Duration::ZERO),
            ..Timeouts::default()
        };
        assert_eq!(activity.check(stall), None, "nothing written yet");
        let _serving = activity.request_started();
        activity.wrote::<usize>(&Poll::Pending);
        assert_eq!(activity.check(stall), Some(Verdict::WriteStalled));
        activity.wrote(&Poll::Ready(Ok(1usize)));
        assert_eq!(activity.check(stall), None, "progress ends the block");
    }

    #[test]
    fn idle_only_between_requests() {
        let activity = Activity::new();
        assert!(activity.is_idle(), "opened, nothing sent yet");
        activity.bytes_arrived();
        assert!(!activity.is_idle(), "a request is arriving");
        assert_eq!(activity.evictable_since(), None, "a request is being read");
        let guard = activity.request_started();
        assert!(!activity.is_idle(), "a request is being served");
        assert_eq!(activity.evictable_since(), None);
        drop(guard);
        assert!(activity.is_idle());
        assert!(activity.evictable_since().is_some());
        activity.wrote::<usize>(&Poll::Pending);
        assert!(!activity.is_idle(), "the answer is still being written");
        let blocked = activity
            .evictable_since()
            .expect("blocked on writing: evictable");
        std::thread::sleep(Duration::from_millis(5));
        activity.wrote::<usize>(&Poll::Pending);
        assert_eq!(
            activity.evictable_since(),
            Some(blocked),
            "blocked since the first"
        );
        activity.wrote(&Poll::Ready(Ok(10usize)));
        assert!(activity.is_idle());
    }
}
