//! The connection limit: at most `max_connections` open at once, and a new client is admitted
//! even when they are all taken, by closing the connection that has been idle the longest.
//!
//! Stopping `accept` at the limit (the simplest design) lets idle keep-alive connections lock every
//! new client out until the idle timeout frees a slot: 10,000 clients that connect and say nothing
//! would stop all verification for a minute. Instead, like nginx's reusable-connection queue, each
//! open connection is registered here with its [`Activity`]; a connection accepted while the table
//! is full asks the longest-idle ones (nothing being served, no request arriving, no answer still
//! being written; a small batch, so a burst of newcomers costs one scan) to close, and takes a
//! slot one of them frees. A connection in the middle of a request is never
//! chosen; only when every connection is mid-request does the newcomer wait (a bounded moment: the
//! time to answer), and the accept loop with it, so new clients queue in the kernel's backlog.
//! Descriptors in use stay at `max_connections` plus the one connection waiting to be admitted.
//!
//! Closing an idle keep-alive connection is the same event as its idle timeout: an HTTP client
//! must be ready for it (ours reconnect), so this trades nothing a correct client relies on.

use super::watchdog::Activity;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a newcomer waits for a slot before looking again for an idle connection to close.
const RECHECK: Duration = Duration::from_millis(10);
/// How many idle connections to close at once when the table is full: one scan of the table then
/// admits a burst of newcomers (nginx closes 32 at a time for the same reason); at most 1/16 of the
/// limit, so a small limit loses one connection at a time.
fn batch(capacity: usize) -> usize {
    (capacity / 16).clamp(1, 32)
}

/// At most one `connection_limit_reached` warning per this period.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The open connections of every listener, and the slots they hold.
pub struct ConnectionTable {
    capacity: usize,
    permits: Arc<Semaphore>,
    slots: Mutex<Slots>,
    evicted: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Arc<Tracked>>>,
    free: Vec<usize>,
}

/// One open connection as the table sees it.
pub struct Tracked {
    activity: Arc<Activity>,
    close: Notify,
    closing: AtomicBool,
}

impl Tracked {
    /// Resolves when the table asks this connection to close to make room. The connection's task
    /// then calls [`Tracked::agree_to_close`] and closes only if it returns true.
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }

    /// Whether the connection is (still) idle and so may close now; if not, the request is
    /// withdrawn and the table picks another connection.
    pub fn agree_to_close(&self) -> bool {
        let idle = self.activity.is_idle();
        if !idle {
            self.closing.store(false, Ordering::Release);
        }
        idle
    }
}

/// A connection's slot; dropping it (when the connection ends) frees the slot.
pub struct Admitted {
    table: Arc<ConnectionTable>,
    index: usize,
    tracked: Arc<Tracked>,
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    pub fn tracked(&self) -> &Tracked {
        &self.tracked
    }

    /// Records that this connection was closed to admit others.
    pub fn closed_for_room(&self) {
        self.table.evicted.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // Runs before `_permit` is released, so a newcomer never sees a freed permit while the
        // table still lists this connection.
        if let Ok(mut slots) = self.table.slots.lock()
            && let Some(entry) = slots.entries.get_mut(self.index)
        {
            *entry = None;
            slots.free.push(self.index);
        }
    }
}

/// What a look for an idle connection found.
#[derive(Debug, PartialEq, Eq)]
enum Eviction {
    /// Asked the longest-idle connections to close.
    Requested,
    /// Connections asked earlier have not answered yet: wait for them, ask no others.
    Pending,
    /// Every connection is mid-request.
    NoneIdle,
}

impl ConnectionTable {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ConnectionTable {
            capacity,
            permits: Arc::new(Semaphore::new(capacity)),
            slots: Mutex::new(Slots::default()),
            evicted: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    /// The limit in force.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Connections closed so far to admit others.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Takes a slot for a connection just accepted: a free one, else one freed by closing the
    /// longest-idle connections; waits only while every connection is mid-request.
    pub async fn admit(self: &Arc<Self>, activity: Arc<Activity>) -> Admitted {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return self.register(activity, permit);
            }
            if self.request_eviction() == Eviction::Requested {
                self.warn_limit_reached();
            }
            if let Ok(Ok(permit)) =
                tokio::time::timeout(RECHECK, self.permits.clone().acquire_owned()).await
            {
                return self.register(activity, permit);
            }
        }
    }

    fn register(
        self: &Arc<Self>,
        activity: Arc<Activity>,
        permit: OwnedSemaphorePermit,
    ) -> Admitted {
        let tracked = Arc::new(Tracked {
            activity,
            close: Notify::new(),
            closing: AtomicBool::new(false),
        });
        let index = match self.slots.lock() {
            Ok(mut slots) => match slots.free.pop() {
                Some(index) => {
                    slots.entries[index] = Some(tracked.clone());
                    index
                }
                None => {
                    slots.entries.push(Some(tracked.clone()));
                    slots.entries.len() - 1
                }
            },
            // A poisoned table (a panic while holding it, which its code cannot do) only loses
            // eviction for this connection; the slot accounting is the semaphore's.
            Err(_) => usize::MAX,
        };
        Admitted {
            table: self.clone(),
            index,
            tracked,
            _permit: permit,
        }
    }

    /// Asks the longest-idle connections (a batch: [`batch`]) to close, unless earlier requests
    /// are still pending.
    fn request_eviction(&self) -> Eviction {
        let Ok(slots) = self.slots.lock() else {
            return Eviction::NoneIdle;
        };
        let mut idle = Vec::new();
        for tracked in slots.entries.iter().flatten() {
            if tracked.closing.load(Ordering::Acquire) {
                return Eviction::Pending;
            }
            if tracked.activity.is_idle() {
                idle.push((tracked.activity.last_activity(), tracked));
            }
        }
        let count = batch(self.capacity).min(idle.len());
        if count == 0 {
            return Eviction::NoneIdle;
        }
        if idle.len() > count {
            idle.select_nth_unstable_by_key(count - 1, |(since, _)| *since);
            idle.truncate(count);
        }
        for (_, tracked) in idle {
            tracked.closing.store(true, Ordering::Release);
            tracked.close.notify_one();
        }
        Eviction::Requested
    }

    fn warn_limit_reached(&self) {
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                max_connections = self.capacity,
                closed_idle_total = self.evicted(),
                "connection_limit_reached"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn full_table_closes_the_longest_idle_connection_never_a_busy_one() {
        let table = Arc::new(ConnectionTable::new(2));
        let first = Arc::new(Activity::new());
        let second = Arc::new(Activity::new());
        let a = table.admit(first.clone()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = table.admit(second.clone()).await;
        assert_eq!(table.open(), 2);

        // The first connection is mid-request: the second (idle) is the one asked to close.
        let serving = first.request_started();
        let newcomer = tokio::spawn({
            let table = table.clone();
            async move { table.admit(Arc::new(Activity::new())).await }
        });
        b.tracked().close_requested().await;
        assert!(b.tracked().agree_to_close());
        b.closed_for_room();
        drop(b);
        let c = newcomer.await.unwrap();
        assert_eq!(table.open(), 2);
        assert_eq!(table.evicted(), 1);

        // Both busy: the next newcomer waits until one finishes and becomes idle.
        let _c_serving = c.tracked.activity.request_started();
        let waiting = tokio::spawn({
            let table = table.clone();
            async move { table.admit(Arc::new(Activity::new())).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no idle connection: wait");
        drop(serving);
        a.tracked().close_requested().await;
        assert!(a.tracked().agree_to_close());
        drop(a);
        let _d = waiting.await.unwrap();
        assert_eq!(table.open(), 2);
    }

    #[tokio::test]
    async fn a_connection_that_became_busy_refuses_and_another_is_asked() {
        let table = Arc::new(ConnectionTable::new(2));
        let first = Arc::new(Activity::new());
        let a = table.admit(first.clone()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = table.admit(Arc::new(Activity::new())).await;
        let newcomer = tokio::spawn({
            let table = table.clone();
            async move { table.admit(Arc::new(Activity::new())).await }
        });
        a.tracked().close_requested().await;
        let _busy = first.request_started();
        assert!(!a.tracked().agree_to_close(), "a request arrived meanwhile");
        b.tracked().close_requested().await;
        assert!(b.tracked().agree_to_close());
        drop(b);
        let _c = newcomer.await.unwrap();
        drop(a);
        assert_eq!(table.open(), 1);
    }

    #[test]
    fn batches_are_small_and_never_empty() {
        assert_eq!(batch(1), 1);
        assert_eq!(batch(2), 1);
        assert_eq!(batch(448), 28);
        assert_eq!(batch(1024), 32);
        assert_eq!(batch(100_000), 32);
    }
}
