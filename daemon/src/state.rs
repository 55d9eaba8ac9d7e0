//! What the request handlers and the reloader share.
//!
//! The keys served sit in an `ArcSwap`: a verify loads the current `Arc<ServedKeys>` without a lock and
//! keeps using it even if a reload publishes a new one meanwhile. `serve_until` is the max_stale
//! deadline as an atomic, also read without a lock. Only the bookkeeping that `/status` shows sits
//! behind a mutex, touched by the reloader and by admin requests, never by verify.

use crate::access_log::AccessLog;
use crate::change_queue::state::QueueState;
use crate::config::ForwardAuthSettings;
use crate::generation::Newest;
use crate::keyset::ServedKeys;
use crate::keyset::SkippedKey;
use crate::log_writer::DropCounter;
use crate::metrics::Metrics;
use crate::metrics::exposition::Gauges;
use crate::rate_limit::fleet::FleetLimits;
use crate::reload_request::ReloadRequest;
use crate::server::connections::ConnectionTable;
use crate::server::listener_state::ListenerStates;
use arc_swap::ArcSwap;
use heare_auth_store::timestamp::UnixMillis;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::mpsc;

/// Where the set being served came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Store,
    Cache,
}

/// The reloader's record of loads, shown by `/status`.
#[derive(Debug, Clone)]
pub struct LoadStatus {
    pub version: Option<String>,
    pub last_load_at: Option<UnixMillis>,
    pub last_attempt_at: Option<UnixMillis>,
    pub last_error: Option<String>,
    pub stale: bool,
    pub source: Source,
    pub warnings: Vec<String>,
    /// Why the cache could not be written after the last load that tried; `None` once one did.
    pub cache_error: Option<String>,
}

impl LoadStatus {
    /// The record of a successful load from the store at `now`.
    pub fn fresh(version: Option<String>, now: UnixMillis, skipped: &[SkippedKey]) -> Self {
        LoadStatus {
            version,
            last_load_at: Some(now),
            last_attempt_at: Some(now),
            last_error: None,
            stale: false,
            source: Source::Store,
            warnings: skipped.iter().map(ToString::to_string).collect(),
            cache_error: None,
        }
    }
}

/// Who may call the admin endpoints.
#[derive(Debug, Clone)]
pub struct AdminPolicy {
    /// The daemon's own uid: always an admin.
    pub own_uid: u32,
    /// Whether loopback TCP peers are admins.
    pub tcp_from_loopback: bool,
}

/// What the daemon wires into [`Shared`] besides the first set and its record.
pub struct Wiring {
    pub reload_requests: mpsc::Sender<ReloadRequest>,
    pub admin: AdminPolicy,
    pub store: String,
    pub log_drops: Option<DropCounter>,
    pub access_log: AccessLog,
    pub newest: Arc<Newest>,
    pub connections: Arc<ConnectionTable>,
    pub forward_auth: ForwardAuthSettings,
    pub queue: Option<Arc<QueueState>>,
    pub listeners: Arc<ListenerStates>,
    pub fleet: Option<Arc<FleetLimits>>,
}

/// State shared by every connection and the reloader.
pub struct Shared {
    keys: ArcSwap<ServedKeys>,
    serve_until: AtomicI64,
    status: Mutex<LoadStatus>,
    pub reload_requests: mpsc::Sender<ReloadRequest>,
    pub admin: AdminPolicy,
    pub store: String,
    pub started_at: Instant,
    pub log_drops: Option<DropCounter>,
    /// Where every verification's line goes.
    pub access_log: AccessLog,
    /// The rollback guard's record, for `/status`.
    pub newest: Arc<Newest>,
    /// Every listener's connections, for `/metrics`.
    pub connections: Arc<ConnectionTable>,
    /// What the daemon counts about itself.
    pub metrics: Metrics,
    /// How `/auth` reads keys and answers identities.
    pub forward_auth: ForwardAuthSettings,
    /// The notify queue's record, when one is configured.
    pub queue: Option<Arc<QueueState>>,
    /// Every listener's address and state, for `/status` and `/metrics`.
    pub listeners: Arc<ListenerStates>,
    /// The fleet-wide rate-limit backend (Redis), when one is configured.
    pub fleet: Option<Arc<FleetLimits>>,
}

impl Shared {
    pub fn new(keys: Arc<ServedKeys>, status: LoadStatus, wiring: Wiring) -> Self {
        Shared {
            keys: ArcSwap::new(keys),
            serve_until: AtomicI64::new(UnixMillis::MAX),
            status: Mutex::new(status),
            reload_requests: wiring.reload_requests,
            admin: wiring.admin,
            store: wiring.store,
            started_at: Instant::now(),
            log_drops: wiring.log_drops,
            access_log: wiring.access_log,
            newest: wiring.newest,
            connections: wiring.connections,
            metrics: Metrics::default(),
            forward_auth: wiring.forward_auth,
            queue: wiring.queue,
            listeners: wiring.listeners,
            fleet: wiring.fleet,
        }
    }

    /// The gauges `/metrics` reads from other parts of the daemon.
    pub fn gauges(&self) -> Gauges {
        let keys = self.keys();
        Gauges {
            keys: keys.len(),
            change_seq: keys.change_seq().unwrap_or(0),
            stale: self.status().stale,
            connections_open: self.connections.open(),
            connections_evicted: self.connections.evicted(),
            log_lines_dropped: self.log_drops.as_ref().map_or(0, |c| c.dropped_lines()),
            queue: self.queue.as_ref().map(|q| q.counts()),
            listeners: self.listeners.up(),
            rate_limit_backend: self.fleet.as_ref().map(|fleet| fleet.state()),
        }
    }

    /// The set being served, without a lock.
    pub fn keys(&self) -> arc_swap::Guard<Arc<ServedKeys>> {
        self.keys.load()
    }

    /// The set being served, as an `Arc` of its own (for work off the request path).
    pub fn keys_full(&self) -> Arc<ServedKeys> {
        self.keys.load_full()
    }

    /// Publishes a new set and returns the old one; requests already holding the old one finish
    /// with it.
    pub fn publish(&self, keys: Arc<ServedKeys>) -> Arc<ServedKeys> {
        self.keys.swap(keys)
    }

    /// Whether a set that is stale past max_stale must no longer be trusted at `now`.
    pub fn too_stale(&self, now: UnixMillis) -> bool {
        now >= self.serve_until.load(Ordering::Relaxed)
    }

    /// Sets the max_stale deadline (`UnixMillis::MAX` while the set is fresh).
    pub fn set_serve_until(&self, deadline: UnixMillis) {
        self.serve_until.store(deadline, Ordering::Relaxed);
    }

    /// The load bookkeeping. A poisoned lock still holds valid data (plain fields), so it is used.
    pub fn status(&self) -> MutexGuard<'_, LoadStatus> {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
