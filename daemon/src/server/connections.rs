//! The connection limit: at most `max_connections` open at once, at most a share of them per
//! peer, and a new client is admitted even when they are all taken, by closing the connection
//! that has been idle — or blocked on an answer its peer does not read — the longest.
//!
//! Stopping `accept` at the limit (the simplest design) lets idle keep-alive connections lock every
//! new client out until the idle timeout frees a slot: 10,000 clients that connect and say nothing
//! would stop all verification for a minute. Instead, like nginx's reusable-connection queue, each
//! open connection is registered here with its [`Activity`]; a connection accepted while the table
//! is full asks the connections that may be closed — idle between requests, or blocked writing an
//! answer (a peer that pipelines requests and never reads) — to close, longest first (a small
//! batch, so a burst of newcomers costs one scan), and takes a slot one of them frees. A connection
//! whose request is being read or handled is never chosen; only when every connection is
//! mid-request does the newcomer wait (a bounded moment: the time to answer), and the accept loop
//! with it, so new clients queue in the kernel's backlog. Descriptors in use stay at
//! `max_connections` plus the one connection waiting to be admitted.
//!
//! One peer — a uid on the Unix socket, an IP address on TCP — holds at most its own limit
//! (`max_connections_per_uid`, `max_connections_per_address`), so one local user cannot take every
//! slot. A peer at its limit makes room among its own connections the same way; when all of them
//! are mid-request, the newcomer is refused at once (it is not made to wait: that would stall the
//! accept loop for everyone else).
//!
//! Closing an idle keep-alive connection is the same event as its idle timeout: an HTTP client
//! must be ready for it (ours reconnect), so this trades nothing a correct client relies on.

use super::watchdog::Activity;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// How long a newcomer waits for a slot before looking again for a connection to close.
const RECHECK: Duration = Duration::from_millis(10);
/// How many connections to close at once when a limit is reached: one scan of the table then
/// admits a burst of newcomers (nginx closes 32 at a time for the same reason); at most 1/16 of the
/// limit, so a small limit loses one connection at a time.
fn batch(capacity: usize) -> usize {
    (capacity / 16).clamp(1, 32)
}

/// At most one warning of each kind per this period.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Who a connection counts against for the per-peer limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A uid on the Unix socket.
    Uid(u32),
    /// An address on TCP.
    Address(IpAddr),
    /// Every TCP connection together (a class, counted besides the address).
    AnyTcp,
}

impl PeerKey {
    /// The class this peer's connections also count against: TCP peers together hold at most
    /// [`Limits::tcp`], so that TCP peers — any local user can bind many loopback addresses —
    /// cannot take the slots the Unix socket's clients need.
    fn class(self) -> Option<PeerKey> {
        match self {
            PeerKey::Address(_) => Some(PeerKey::AnyTcp),
            PeerKey::Uid(_) | PeerKey::AnyTcp => None,
        }
    }
}

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, over every listener.
    pub total: usize,
    /// Connections of one uid on the Unix socket.
    pub per_uid: usize,
    /// Connections of one address on TCP.
    pub per_address: usize,
    /// Connections on TCP, all addresses together.
    pub tcp: usize,
}

impl Limits {
    fn of(&self, peer: PeerKey) -> usize {
        match peer {
            PeerKey::Uid(_) => self.per_uid,
            PeerKey::Address(_) => self.per_address,
            PeerKey::AnyTcp => self.tcp,
        }
    }
}

/// A newcomer refused because its peer already holds its limit, every one mid-request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAtLimit {
    /// The peer's limit.
    pub limit: usize,
}

/// The open connections of every listener, and the slots they hold.
pub struct ConnectionTable {
    limits: Limits,
    permits: Arc<Semaphore>,
    slots: Mutex<Slots>,
    /// Notified whenever a connection gives its slot up.
    freed: Notify,
    evicted: AtomicU64,
    limit_warning: Every,
    /// For the accept loop's warning about refused peers.
    pub refusal_warning: Every,
}

/// A rate limit for a warning: due at most once per [`WARN_EVERY`].
#[derive(Default)]
pub struct Every {
    last: Mutex<Option<Instant>>,
}

impl Every {
    /// Whether the warning may be logged now.
    pub fn due(&self) -> bool {
        let Ok(mut last) = self.last.lock() else {
            return false;
        };
        let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Arc<Tracked>>>,
    free: Vec<usize>,
    per_peer: HashMap<PeerKey, usize>,
}

/// One open connection as the table sees it.
pub struct Tracked {
    activity: Arc<Activity>,
    peer: PeerKey,
    class: Option<PeerKey>,
    close: Notify,
    closing: AtomicBool,
}

impl Tracked {
    /// Resolves when the table asks this connection to close to make room. The connection's task
    /// then calls [`Tracked::agree_to_close`] and closes only if it returns true.
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }

    /// Whether the connection may (still) be closed now — idle, blocked on writing, or a slow
    /// client's; if not (a request arrived meanwhile), the request is withdrawn and the table
    /// picks another connection.
    pub fn agree_to_close(&self) -> bool {
        let evictable =
            self.activity.evictable_since().is_some() || self.activity.slow_since().is_some();
        if !evictable {
            self.closing.store(false, Ordering::Release);
        }
        evictable
    }
}

/// A connection's slot; dropping it (when the connection ends) frees the slot.
pub struct Admitted {
    table: Arc<ConnectionTable>,
    index: usize,
    tracked: Arc<Tracked>,
    permit: Option<OwnedSemaphorePermit>,
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
        // The table stops listing this connection before its permit is released, so a newcomer
        // never sees a freed permit while the table still counts the connection.
        if let Ok(mut slots) = self.table.slots.lock() {
            if let Some(entry) = slots.entries.get_mut(self.index) {
                *entry = None;
                slots.free.push(self.index);
            }
            slots.release(self.tracked.peer);
            if let Some(class) = self.tracked.class {
                slots.release(class);
            }
        }
        drop(self.permit.take());
        self.table.freed.notify_waiters();
    }
}

impl Slots {
    fn count(&self, peer: PeerKey) -> usize {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    fn release(&mut self, peer: PeerKey) {
        if let Some(count) = self.per_peer.get_mut(&peer) {
            *count -= 1;
            if *count == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    fn insert(&mut self, tracked: Arc<Tracked>) -> usize {
        *self.per_peer.entry(tracked.peer).or_insert(0) += 1;
        if let Some(class) = tracked.class {
            *self.per_peer.entry(class).or_insert(0) += 1;
        }
        match self.free.pop() {
            Some(index) => {
                self.entries[index] = Some(tracked);
                index
            }
            None => {
                self.entries.push(Some(tracked));
                self.entries.len() - 1
            }
        }
    }
}

/// What a look for connections to close found.
#[derive(Debug, PartialEq, Eq)]
enum Eviction {
    /// Asked the longest-idle or longest-blocked connections to close.
    Requested,
    /// Connections asked earlier have not answered yet: wait for them, ask no others.
    Pending,
    /// Every connection in scope is mid-request.
    NoneEvictable,
}

/// Which connections a look for room considers.
#[derive(Debug, Clone, Copy)]
enum Scope {
    All,
    Peer(PeerKey),
}

impl Scope {
    fn covers(self, tracked: &Tracked) -> bool {
        match self {
            Scope::All => true,
            Scope::Peer(peer) => tracked.peer == peer || tracked.class == Some(peer),
        }
    }
}

/// What admission decided for one attempt.
enum Attempt {
    Admitted(Admitted),
    /// Wait for a slot to be freed, then try again.
    Wait,
    Refused(PeerAtLimit),
}

impl ConnectionTable {
    pub fn new(limits: Limits) -> Self {
        let total = limits.total.max(1);
        ConnectionTable {
            limits: Limits {
                total,
                per_uid: limits.per_uid.clamp(1, total),
                per_address: limits.per_address.clamp(1, total),
                tcp: limits.tcp.clamp(1, total),
            },
            permits: Arc::new(Semaphore::new(total)),
            slots: Mutex::new(Slots::default()),
            freed: Notify::new(),
            evicted: AtomicU64::new(0),
            limit_warning: Every::default(),
            refusal_warning: Every::default(),
        }
    }

    /// Connections closed so far to admit others.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.limits.total - self.permits.available_permits()
    }

    /// Takes a slot for a connection just accepted from `peer`: a free one, else one freed by
    /// closing connections that may be closed (the peer's own when it is at its limit); waits
    /// only while every connection is mid-request, and refuses a peer at its limit whose
    /// connections all are.
    pub async fn admit(
        self: &Arc<Self>,
        activity: Arc<Activity>,
        peer: PeerKey,
    ) -> Result<Admitted, PeerAtLimit> {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.attempt(&activity, peer) {
                Attempt::Admitted(admitted) => return Ok(admitted),
                Attempt::Refused(refusal) => return Err(refusal),
                Attempt::Wait => {
                    let _ = tokio::time::timeout(RECHECK, freed).await;
                }
            }
        }
    }

    /// One try: a slot if the peer is under its limit and a permit is free; else ask for room
    /// among the peer's own connections (at its limit) or among all (the table is full).
    fn attempt(self: &Arc<Self>, activity: &Arc<Activity>, peer: PeerKey) -> Attempt {
        let Ok(mut slots) = self.slots.lock() else {
            // A poisoned table (a panic while holding it, which its code cannot do): refuse
            // rather than admit without accounting.
            return Attempt::Refused(PeerAtLimit { limit: 0 });
        };
        // The peer's own limit first, then its class's (all of TCP).
        let full = [Some(peer), peer.class()]
            .into_iter()
            .flatten()
            .find(|key| slots.count(*key) >= self.limits.of(*key));
        if full.is_none()
            && let Ok(permit) = self.permits.clone().try_acquire_owned()
        {
            return Attempt::Admitted(self.register(&mut slots, activity, peer, permit));
        }
        let at_peer_limit = full.is_some();
        let limit = full.map_or(self.limits.total, |key| self.limits.of(key));
        let scope = full.map_or(Scope::All, Scope::Peer);
        let eviction = self.request_eviction(&slots, scope);
        let table_full = self.permits.available_permits() == 0;
        if eviction != Eviction::Pending && table_full {
            self.warn_limit_reached(eviction == Eviction::NoneEvictable);
        }
        match eviction {
            Eviction::NoneEvictable if at_peer_limit => Attempt::Refused(PeerAtLimit { limit }),
            _ => Attempt::Wait,
        }
    }

    fn register(
        self: &Arc<Self>,
        slots: &mut Slots,
        activity: &Arc<Activity>,
        peer: PeerKey,
        permit: OwnedSemaphorePermit,
    ) -> Admitted {
        let tracked = Arc::new(Tracked {
            activity: activity.clone(),
            peer,
            class: peer.class(),
            close: Notify::new(),
            closing: AtomicBool::new(false),
        });
        let index = slots.insert(tracked.clone());
        Admitted {
            table: self.clone(),
            index,
            tracked,
            permit: Some(permit),
        }
    }

    /// Asks the connections in `scope` that have been evictable longest (a batch: [`batch`]) to
    /// close — idle or blocked ones, else slow clients' — unless earlier requests are pending.
    fn request_eviction(&self, slots: &Slots, scope: Scope) -> Eviction {
        let mut candidates = Vec::new();
        let mut slow = Vec::new();
        for tracked in slots.entries.iter().flatten().filter(|t| scope.covers(t)) {
            if tracked.closing.load(Ordering::Acquire) {
                return Eviction::Pending;
            }
            if let Some(since) = tracked.activity.evictable_since() {
                candidates.push((since, tracked));
            } else if let Some(since) = tracked.activity.slow_since() {
                slow.push((since, tracked));
            }
        }
        if candidates.is_empty() {
            candidates = slow;
        }
        let limit = match scope {
            Scope::All => self.limits.total,
            Scope::Peer(peer) => self.limits.of(peer),
        };
        let count = batch(limit).min(candidates.len());
        if count == 0 {
            return Eviction::NoneEvictable;
        }
        if candidates.len() > count {
            candidates.select_nth_unstable_by_key(count - 1, |(since, _)| *since);
            candidates.truncate(count);
        }
        for (_, tracked) in candidates {
            tracked.closing.store(true, Ordering::Release);
            tracked.close.notify_one();
        }
        Eviction::Requested
    }

    /// `connection_limit_reached`, at most every 10 s; `all_busy` when no connection could be
    /// closed (newcomers wait in the kernel's backlog).
    fn warn_limit_reached(&self, all_busy: bool) {
        if self.limit_warning.due() {
            tracing::warn!(
                max_connections = self.limits.total,
                closed_idle_total = self.evicted(),
                all_busy,
                "connection_limit_reached"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::watchdog::SLOW;
    use std::task::Poll;

    const ROOT: PeerKey = PeerKey::Uid(0);

    fn limits(total: usize, per_peer: usize) -> Limits {
        Limits {
            total,
            per_uid: per_peer,
            per_address: per_peer,
            tcp: total,
        }
    }

    #[tokio::test]
    async fn full_table_closes_the_longest_idle_connection_never_a_busy_one() {
        let table = Arc::new(ConnectionTable::new(limits(2, 2)));
        let first = Arc::new(Activity::new());
        let second = Arc::new(Activity::new());
        let a = table.admit(first.clone(), PeerKey::Uid(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = table.admit(second.clone(), PeerKey::Uid(2)).await.unwrap();
        assert_eq!(table.open(), 2);

        // The first connection is mid-request: the second (idle) is the one asked to close.
        let serving = first.request_started();
        let newcomer = tokio::spawn({
            let table = table.clone();
            async move {
                table
                    .admit(Arc::new(Activity::new()), PeerKey::Uid(3))
                    .await
                    .unwrap()
            }
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
            async move {
                table
                    .admit(Arc::new(Activity::new()), PeerKey::Uid(4))
                    .await
                    .unwrap()
            }
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
        let table = Arc::new(ConnectionTable::new(limits(2, 2)));
        let first = Arc::new(Activity::new());
        let a = table.admit(first.clone(), ROOT).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b = table.admit(Arc::new(Activity::new()), ROOT).await.unwrap();
        let newcomer = tokio::spawn({
            let table = table.clone();
            async move { table.admit(Arc::new(Activity::new()), ROOT).await.unwrap() }
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

    #[tokio::test]
    async fn connections_blocked_on_writing_are_closed_longest_blocked_first() {
        let table = Arc::new(ConnectionTable::new(limits(2, 2)));
        let (first, second) = (Arc::new(Activity::new()), Arc::new(Activity::new()));
        let a = table.admit(first.clone(), ROOT).await.unwrap();
        let b = table.admit(second.clone(), ROOT).await.unwrap();
        // Both peers pipeline and never read: their answers block, b's first.
        second.wrote::<usize>(&Poll::Pending);
        tokio::time::sleep(Duration::from_millis(5)).await;
        first.wrote::<usize>(&Poll::Pending);
        assert!(!first.is_idle() && !second.is_idle());
        let newcomer = tokio::spawn({
            let table = table.clone();
            async move { table.admit(Arc::new(Activity::new()), ROOT).await }
        });
        b.tracked().close_requested().await;
        assert!(b.tracked().agree_to_close());
        drop(b);
        assert!(newcomer.await.unwrap().is_ok());
        assert!(
            !a.tracked().closing.load(Ordering::Acquire),
            "a was blocked for less long"
        );
    }

    #[tokio::test]
    async fn a_peer_at_its_limit_makes_room_among_its_own_or_is_refused() {
        let table = Arc::new(ConnectionTable::new(limits(4, 2)));
        let alice = PeerKey::Uid(1000);
        let busy = Arc::new(Activity::new());
        let _a1 = table.admit(busy.clone(), alice).await.unwrap();
        let _serving = busy.request_started();
        let a2 = table.admit(Arc::new(Activity::new()), alice).await.unwrap();
        let bob = table
            .admit(Arc::new(Activity::new()), PeerKey::Uid(1001))
            .await;
        assert!(
            bob.is_ok(),
            "another peer is not limited by alice's connections"
        );

        // Alice's third: her own idle connection makes room, bob's is not touched.
        let third = tokio::spawn({
            let table = table.clone();
            async move { table.admit(Arc::new(Activity::new()), alice).await }
        });
        a2.tracked().close_requested().await;
        assert!(a2.tracked().agree_to_close());
        drop(a2);
        let a3 = third.await.unwrap().unwrap();
        let _busy_too = a3.tracked.activity.request_started();
        assert!(
            !bob.as_ref()
                .unwrap()
                .tracked()
                .closing
                .load(Ordering::Acquire)
        );

        // Both of alice's connections mid-request: refused at once, not queued.
        let refused = table.admit(Arc::new(Activity::new()), alice).await;
        assert_eq!(refused.err(), Some(PeerAtLimit { limit: 2 }));
        assert_eq!(table.open(), 3);
    }

    #[tokio::test]
    async fn tcp_peers_together_leave_room_for_the_unix_socket() {
        let table = Arc::new(ConnectionTable::new(Limits {
            total: 4,
            per_uid: 4,
            per_address: 4,
            tcp: 2,
        }));
        let address = |n: u8| PeerKey::Address(IpAddr::from([192, 0, 2, n]));
        let busy = |table: &Arc<ConnectionTable>, peer| {
            let table = table.clone();
            async move {
                let activity = Arc::new(Activity::new());
                let admitted = table.admit(activity.clone(), peer).await;
                std::mem::forget(activity.request_started());
                admitted
            }
        };
        let _a = busy(&table, address(1)).await.unwrap();
        let _b = busy(&table, address(2)).await.unwrap();
        let refused = table.admit(Arc::new(Activity::new()), address(3)).await;
        assert_eq!(
            refused.err(),
            Some(PeerAtLimit { limit: 2 }),
            "TCP's share is full"
        );
        let unix = table
            .admit(Arc::new(Activity::new()), PeerKey::Uid(1000))
            .await;
        assert!(unix.is_ok(), "the Unix socket still has room");
    }

    #[tokio::test]
    async fn at_a_full_table_a_slow_clients_connection_makes_room() {
        let table = Arc::new(ConnectionTable::new(limits(1, 1)));
        let slow = Arc::new(Activity::new());
        let a = table.admit(slow.clone(), PeerKey::Uid(1)).await.unwrap();
        // Its request (a body that trickles) has been in service for over a second.
        let _serving = slow.request_started();
        tokio::time::sleep(SLOW + Duration::from_millis(100)).await;
        let newcomer = tokio::spawn({
            let table = table.clone();
            async move {
                table
                    .admit(Arc::new(Activity::new()), PeerKey::Uid(2))
                    .await
            }
        });
        a.tracked().close_requested().await;
        assert!(
            a.tracked().agree_to_close(),
            "a slow client's connection may close"
        );
        drop(a);
        assert!(newcomer.await.unwrap().is_ok());
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
