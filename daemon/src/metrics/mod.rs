//! What the daemon counts about itself, read by `/metrics` ([`exposition`]) and by the stats push
//! (`crate::stats`).
//!
//! Counting happens where the decision is made and never takes a lock: verify results and
//! handler times in per-thread shards ([`verify_counts`]), the rarer events (reloads, refreshes,
//! health checks) in plain atomics. Readers add everything up off the request path. Gauges that
//! other parts already keep (keys served, connections open, log lines dropped, staleness) are read
//! from them at scrape time instead of being copied here.

pub mod exposition;
pub mod histogram;
pub mod verify_counts;

use histogram::{Histogram, HistogramTotals, RELOAD_BOUNDS};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;
pub use verify_counts::{VerifyCounts, VerifyResult, VerifyTotals};

/// What started a reload: the `trigger` label of `heare_auth_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    Start,
    Signal,
    Http,
    Poll,
    Retry,
    Notify,
    Watch,
    /// The change log could not be followed (a missing, invalid or inapplicable change).
    ChangeGap,
    /// The overlay of applied changes passed its bound and was folded into a new base.
    Fold,
    /// A snapshot change told daemons to load the key object.
    Snapshot,
}

impl ReloadTrigger {
    pub const ALL: [ReloadTrigger; 10] = [
        ReloadTrigger::Start,
        ReloadTrigger::Signal,
        ReloadTrigger::Http,
        ReloadTrigger::Poll,
        ReloadTrigger::Retry,
        ReloadTrigger::Notify,
        ReloadTrigger::Watch,
        ReloadTrigger::ChangeGap,
        ReloadTrigger::Fold,
        ReloadTrigger::Snapshot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReloadTrigger::Start => "start",
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::Http => "http",
            ReloadTrigger::Poll => "poll",
            ReloadTrigger::Retry => "retry",
            ReloadTrigger::Notify => "notify",
            ReloadTrigger::Watch => "watch",
            ReloadTrigger::ChangeGap => "change_gap",
            ReloadTrigger::Fold => "fold",
            ReloadTrigger::Snapshot => "snapshot",
        }
    }
}

/// How a reload ended: the `result` label of `heare_auth_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
    /// The store said the object had not changed (a poll's 304).
    Unchanged,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 3] = [
        ReloadResult::Success,
        ReloadResult::Failure,
        ReloadResult::Unchanged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
            ReloadResult::Unchanged => "unchanged",
        }
    }
}

/// How a `POST /refresh` ended, for the stats push's `refresh.*` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshResult {
    Success,
    Failed,
    /// The caller is not an admin.
    Rejected,
}

/// Counts of `POST /refresh` calls by result.
#[derive(Default)]
pub struct RefreshCounts {
    pub success: AtomicU64,
    pub failed: AtomicU64,
    pub rejected: AtomicU64,
}

/// Every count the daemon keeps about itself.
pub struct Metrics {
    pub verify: VerifyCounts,
    /// `[trigger][result]`, in the order of the `ALL` arrays.
    reloads: [[AtomicU64; 3]; ReloadTrigger::ALL.len()],
    reload_duration: Histogram<{ RELOAD_BOUNDS.len() }>,
    /// Unix milliseconds of the last successful load; 0 before the first.
    last_reload_success_ms: AtomicI64,
    pub refreshes: RefreshCounts,
    refresh_duration: Histogram<{ RELOAD_BOUNDS.len() }>,
    pub health_requests: AtomicU64,
    /// Stats flushes that did not reach the collector (dropped).
    pub stats_flushes_failed: AtomicU64,
    /// Change objects applied from the change log.
    pub changes_applied: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            verify: VerifyCounts::default(),
            reloads: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            reload_duration: Histogram::new(&RELOAD_BOUNDS),
            last_reload_success_ms: AtomicI64::new(0),
            refreshes: RefreshCounts::default(),
            refresh_duration: Histogram::new(&RELOAD_BOUNDS),
            health_requests: AtomicU64::new(0),
            stats_flushes_failed: AtomicU64::new(0),
            changes_applied: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts a reload (the first load included) that took `elapsed`, ending at `now_ms`.
    pub fn record_reload(
        &self,
        trigger: ReloadTrigger,
        result: ReloadResult,
        elapsed: Duration,
        now_ms: i64,
    ) {
        self.reloads[trigger as usize][result as usize].fetch_add(1, Ordering::Relaxed);
        self.reload_duration.record(elapsed);
        if result != ReloadResult::Failure {
            self.last_reload_success_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    pub fn reloads(&self, trigger: ReloadTrigger, result: ReloadResult) -> u64 {
        self.reloads[trigger as usize][result as usize].load(Ordering::Relaxed)
    }

    pub fn reload_duration(&self) -> HistogramTotals {
        self.reload_duration.read()
    }

    /// Unix milliseconds of the last load the store confirmed; `None` before the first.
    pub fn last_reload_success_ms(&self) -> Option<i64> {
        let ms = self.last_reload_success_ms.load(Ordering::Relaxed);
        (ms > 0).then_some(ms)
    }

    pub fn record_refresh(&self, result: RefreshResult, elapsed: Duration) {
        let counter = match result {
            RefreshResult::Success => &self.refreshes.success,
            RefreshResult::Failed => &self.refreshes.failed,
            RefreshResult::Rejected => &self.refreshes.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.refresh_duration.record(elapsed);
    }

    pub fn refresh_duration(&self) -> HistogramTotals {
        self.refresh_duration.read()
    }
}
