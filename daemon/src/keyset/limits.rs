//! Per-key rate limits of one key set: which keys are limited, by what, and each limited key's
//! GCRA state, indexed by the key's position as the usage counters are.
//!
//! A key is limited by its own `rate_limit` (from the key file) or, without one, by the
//! configured `[rate_limit] default` ([`set_default`], set once at start, before any set is
//! loaded, so that every set — loaded whole, from the cache, or an overlay of changes — sees the
//! same default). A set with no limited key holds no state at all, and a verify of it pays one
//! branch. With a default every key is limited, and the state is a slot per key.
//!
//! The state of a limited key is its theoretical arrival time (GCRA: a token bucket without a
//! timer), nanoseconds on the daemon's monotonic clock ([`clock`]), moved on by one compare and
//! swap per accepted request: no lock, and no request is accepted twice for the same room. A
//! reload carries the state into the new set by key id ([`Limits::state`], [`Limits::absorb`]),
//! as usage is carried. A restart starts every key with a full bucket.

use heare_auth_store::rate_limit::RateLimit;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static DEFAULT: OnceLock<RateLimit> = OnceLock::new();
static FLEET: OnceLock<()> = OnceLock::new();

/// Sets the limit of keys without their own; the first call wins. Called once at start.
pub fn set_default(limit: RateLimit) {
    let _ = DEFAULT.set(limit);
}

/// Says that the fleet backend decides limited keys' requests, so every set keeps a place per
/// cell for its refusals ([`Limits::remember_refusal`]); the local backend pays nothing for it.
/// Called once at start, before any set is loaded.
pub fn set_fleet() {
    let _ = FLEET.set(());
}

/// Nanoseconds on the monotonic clock since its first reading in this process, plus one (so that
/// a state of 0 means "never used").
pub fn clock() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

const SECOND: u64 = 1_000_000_000;

/// One limited key's state. 24 bytes.
#[derive(Debug, Default)]
struct Cell {
    /// The theoretical arrival time of the next request; 0 for a full bucket.
    tat: AtomicU64,
    /// Requests refused.
    refused: AtomicU64,
    /// When a refusal of this key was last logged.
    logged_at: AtomicU64,
}

/// What a key's limit says of one more request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The key has no limit.
    Unlimited,
    /// Accepted; what is left.
    Allowed(Quota),
    /// Refused; `log` is true at most once a second per key.
    Refused { quota: Quota, log: bool },
}

/// A limited key's quota after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: RateLimit,
    /// Requests that would be accepted now, at once.
    pub remaining: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset_nanos: u64,
    /// Nanoseconds until one more request would be accepted (0 when one would be now).
    pub retry_after_nanos: u64,
}

impl Quota {
    /// Whole seconds until the bucket is full, rounded up (the `t` of the `RateLimit` field).
    pub fn reset_seconds(&self) -> u64 {
        self.reset_nanos.div_ceil(SECOND)
    }

    /// Whole seconds until a retry may succeed, rounded up, at least 1 (`Retry-After`).
    pub fn retry_after_seconds(&self) -> u64 {
        self.retry_after_nanos.div_ceil(SECOND).max(1)
    }

    /// Milliseconds until a retry may succeed, rounded up, at least 1.
    pub fn retry_after_millis(&self) -> u64 {
        self.retry_after_nanos.div_ceil(1_000_000).max(1)
    }
}

/// A limited key's state, as carried to a new set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateState {
    pub tat: u64,
    pub refused: u64,
}

/// The limits of one set's keys, by position.
#[derive(Debug, Default)]
pub(super) struct Limits {
    /// Positions of keys with their own limit, sorted.
    positions: Box<[u32]>,
    /// Their limits, in the same order.
    own: Box<[RateLimit]>,
    /// The limit of every other key, when one is configured.
    default: Option<RateLimit>,
    /// One cell per own limit (no default), or per key (a default).
    cells: Box<[Cell]>,
    /// Until when the fleet backend's last refusal of each cell's key stands ([`clock`]; 0:
    /// none), one per cell with the fleet backend ([`set_fleet`]), else empty.
    refused_until: Box<[AtomicU64]>,
    /// Position → index in `own` (`u32::MAX`: none), when at least one key in [`DENSE_SHARE`] has
    /// its own limit: a lookup is then one read instead of a binary search of `positions`
    /// (measured at 100,000 keys, every key limited: the search cost about 10% of throughput).
    dense: Option<Box<[u32]>>,
}

/// With at least one key in this many limited by its own `rate_limit`, the limits are indexed by
/// position (4 bytes a key) instead of searched.
const DENSE_SHARE: usize = 8;

impl Limits {
    /// The limits of a set of `keys` keys, `own` being (position, limit) in position order, under
    /// the configured default.
    pub fn build(own: Vec<(u32, RateLimit)>, keys: usize) -> Self {
        Limits::build_with(own, keys, DEFAULT.get().copied()).remembering(FLEET.get().is_some())
    }

    /// With `fleet`, a place per cell for the fleet backend's refusals.
    fn remembering(mut self, fleet: bool) -> Self {
        if fleet {
            self.refused_until = self.cells.iter().map(|_| AtomicU64::new(0)).collect();
        }
        self
    }

    fn build_with(own: Vec<(u32, RateLimit)>, keys: usize, default: Option<RateLimit>) -> Self {
        let cells = match default {
            Some(_) => keys,
            None => own.len(),
        };
        let (positions, own): (Vec<u32>, Vec<RateLimit>) = own.into_iter().unzip();
        let dense = (!positions.is_empty() && positions.len() * DENSE_SHARE >= keys)
            .then(|| dense_index(&positions, keys));
        Limits {
            positions: positions.into_boxed_slice(),
            own: own.into_boxed_slice(),
            default,
            cells: (0..cells).map(|_| Cell::default()).collect(),
            refused_until: Box::default(),
            dense,
        }
    }

    /// The index in `own` of the key at `position`'s own limit.
    fn own_index(&self, position: u32) -> Option<usize> {
        match &self.dense {
            Some(dense) => match dense.get(position as usize) {
                Some(&i) if i != u32::MAX => Some(i as usize),
                _ => None,
            },
            None => self.positions.binary_search(&position).ok(),
        }
    }

    /// The limit and the cell of the key at `position`, if it is limited.
    fn slot(&self, position: u32) -> Option<(RateLimit, &Cell)> {
        let (limit, index) = self.cell_of(position)?;
        Some((limit, self.cells.get(index)?))
    }

    /// The limit and the index of the cell of the key at `position`, if it is limited.
    fn cell_of(&self, position: u32) -> Option<(RateLimit, usize)> {
        if self.cells.is_empty() {
            return None;
        }
        let per_key = self.default.is_some();
        match self.own_index(position) {
            Some(i) if per_key => Some((*self.own.get(i)?, position as usize)),
            Some(i) => Some((*self.own.get(i)?, i)),
            None => Some((self.default?, position as usize)),
        }
    }

    /// Decides one request of the key at `position` at `now` ([`clock`]).
    pub fn admit(&self, position: u32, now: u64) -> Admission {
        match self.slot(position) {
            None => Admission::Unlimited,
            Some((limit, cell)) => cell.admit(limit, now),
        }
    }

    /// The limit of the key at `position`, if it is limited.
    pub fn limit_at(&self, position: u32) -> Option<RateLimit> {
        self.slot(position).map(|(limit, _)| limit)
    }

    /// Decides one request of the key at `position` under `limit` (not its own: a share of it)
    /// with the key's own state; [`Admission::Unlimited`] for a key that is not limited.
    pub fn admit_under(&self, position: u32, limit: RateLimit, now: u64) -> Admission {
        match self.slot(position) {
            None => Admission::Unlimited,
            Some((_, cell)) => cell.admit(limit, now),
        }
    }

    /// Counts a refusal decided elsewhere (the fleet backend) for the key at `position`, and
    /// says whether to log it (at most once a second per key).
    pub fn refused_elsewhere(&self, position: u32, now: u64) -> bool {
        match self.slot(position) {
            Some((_, cell)) => {
                cell.refused.fetch_add(1, Ordering::Relaxed);
                cell.log_due(now)
            }
            None => false,
        }
    }

    /// Counts a refusal of the key at `position` that is not to be logged as the key's (the
    /// fleet backend failed, and `on_backend_error = "deny"` refused it).
    pub fn count_refusal(&self, position: u32) {
        if let Some((_, cell)) = self.slot(position) {
            cell.refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Remembers that the fleet backend refused the key at `position` until `until` ([`clock`]):
    /// no daemon's request can make room sooner, so until then a request of it is refused here
    /// ([`Limits::remembered_refusal`]) without asking the backend again.
    pub fn remember_refusal(&self, position: u32, until: u64) {
        let remembered = self.cell_of(position);
        if let Some(refused_until) = remembered.and_then(|(_, i)| self.refused_until.get(i)) {
            refused_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// The fleet backend's refusal of the key at `position`, when it still stands at `now`:
    /// counted and answered as the backend would have answered it.
    pub fn remembered_refusal(&self, position: u32, now: u64) -> Option<Admission> {
        let (limit, index) = self.cell_of(position)?;
        let retry_after = self
            .refused_until
            .get(index)?
            .load(Ordering::Relaxed)
            .checked_sub(now)
            .filter(|&left| left > 0)?;
        // Refused while the arrival time runs more than tolerance − interval ahead: it runs
        // ahead by the wait left plus that.
        let ahead = retry_after
            .saturating_add(limit.tolerance_nanos())
            .saturating_sub(limit.interval_nanos());
        Some(
            self.cells
                .get(index)?
                .refuse(limit, ahead, retry_after, now),
        )
    }

    /// The state of the key at `position`, when it is limited and has been used.
    pub fn state(&self, position: u32) -> Option<RateState> {
        let (_, cell) = self.slot(position)?;
        let state = RateState {
            tat: cell.tat.load(Ordering::Relaxed),
            refused: cell.refused.load(Ordering::Relaxed),
        };
        (state != RateState::default()).then_some(state)
    }

    /// Adds `earlier` (the same key's state in an older set) to the key at `position`: the later
    /// arrival time, and the refusals counted. Nothing when the key is not limited here.
    pub fn absorb(&self, position: u32, earlier: RateState, count_refusals: bool) {
        if let Some((_, cell)) = self.slot(position) {
            cell.tat.fetch_max(earlier.tat, Ordering::Relaxed);
            if count_refusals {
                cell.refused.fetch_add(earlier.refused, Ordering::Relaxed);
            }
        }
    }

    /// Whether the key at `position` is limited (its `/usage` entry then has a refusal count).
    pub fn is_limited(&self, position: u32) -> bool {
        self.slot(position).is_some()
    }

    /// Whether any key is limited.
    pub fn any(&self) -> bool {
        !self.cells.is_empty()
    }

    pub fn heap_bytes(&self) -> usize {
        self.positions.len() * 4
            + self.own.len() * std::mem::size_of::<RateLimit>()
            + self.cells.len() * std::mem::size_of::<Cell>()
            + self.refused_until.len() * 8
            + self.dense.as_ref().map_or(0, |dense| dense.len() * 4)
    }
}

/// Position → index in `positions` (sorted), `u32::MAX` for a key without its own limit.
fn dense_index(positions: &[u32], keys: usize) -> Box<[u32]> {
    let mut dense = vec![u32::MAX; keys];
    for (i, &position) in positions.iter().enumerate() {
        if let (Some(slot), Ok(i)) = (dense.get_mut(position as usize), u32::try_from(i)) {
            *slot = i;
        }
    }
    dense.into_boxed_slice()
}

impl Cell {
    /// GCRA: accept when the arrival time, moved on by one interval, stays within the tolerance
    /// of now; one compare and swap, retried only when another request moved it meanwhile.
    fn admit(&self, limit: RateLimit, now: u64) -> Admission {
        let interval = limit.interval_nanos();
        let tolerance = limit.tolerance_nanos();
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            // An arrival time further ahead than this limit allows (left by a longer limit of the
            // same key, carried across a reload) counts as an empty bucket of this limit.
            let start = tat.max(now).min(now.saturating_add(tolerance));
            let next = start.saturating_add(interval);
            let ahead = next - now;
            if ahead > tolerance {
                if start < tat {
                    // Bring a longer limit's arrival time down to this one's, so it refills at
                    // this rate (best effort: a request that moved it meanwhile decided anew).
                    let _ =
                        self.tat
                            .compare_exchange(tat, start, Ordering::Relaxed, Ordering::Relaxed);
                }
                return self.refuse(limit, start - now, ahead - tolerance, now);
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Admission::Allowed(quota(limit, ahead, 0)),
                Err(current) => tat = current,
            }
        }
    }

    fn refuse(&self, limit: RateLimit, ahead: u64, retry_after: u64, now: u64) -> Admission {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Admission::Refused {
            quota: quota(limit, ahead, retry_after),
            log: self.log_due(now),
        }
    }

    /// Whether a refusal at `now` is to be logged: the first, then at most one a second.
    fn log_due(&self, now: u64) -> bool {
        let last = self.logged_at.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= SECOND)
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The quota of a key whose arrival time runs `ahead` of now.
fn quota(limit: RateLimit, ahead: u64, retry_after_nanos: u64) -> Quota {
    let room = limit.tolerance_nanos().saturating_sub(ahead);
    Quota {
        limit,
        remaining: room / limit.interval_nanos().max(1),
        reset_nanos: ahead,
        retry_after_nanos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str, burst: Option<u64>) -> RateLimit {
        RateLimit::parse(text, burst).unwrap()
    }

    fn allowed(admission: Admission) -> bool {
        matches!(admission, Admission::Allowed(_))
    }

    #[test]
    fn a_full_bucket_accepts_burst_then_the_rate() {
        let limits = Limits::build_with(vec![(1, limit("10/1s", Some(3)))], 4, None);
        assert_eq!(limits.admit(0, 1), Admission::Unlimited);
        let now = 1_000;
        let remaining: Vec<u64> = (0..3)
            .map(|_| match limits.admit(1, now) {
                Admission::Allowed(quota) => quota.remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match limits.admit(1, now) {
            Admission::Refused { quota, log } => {
                assert!(log, "the first refusal is logged");
                assert_eq!(quota.retry_after_nanos, 100_000_000);
                assert_eq!(quota.retry_after_seconds(), 1);
                assert_eq!(quota.retry_after_millis(), 100);
                assert_eq!(quota.reset_seconds(), 1);
            }
            other => panic!("{other:?}"),
        }
        match limits.admit(1, now + 1) {
            Admission::Refused { log, .. } => assert!(!log, "not again within the second"),
            other => panic!("{other:?}"),
        }
        assert!(allowed(limits.admit(1, now + 100_000_000)));
        assert!(!allowed(limits.admit(1, now + 100_000_000)));
        assert_eq!(limits.state(1).map(|s| s.refused), Some(3));
    }

    #[test]
    fn over_ten_seconds_a_full_bucket_accepts_burst_plus_rate_times_seconds() {
        let limits = Limits::build_with(vec![(0, limit("100/1s", None))], 1, None);
        let accepted = (0..100_000u64)
            .filter(|i| allowed(limits.admit(0, 1 + i * (10 * SECOND / 100_000))))
            .count();
        assert!((1_099..=1_101).contains(&accepted), "{accepted}");
    }

    #[test]
    fn a_default_limits_every_key_and_own_limits_win() {
        let limits =
            Limits::build_with(vec![(2, limit("5/1s", None))], 3, Some(limit("1/1h", None)));
        assert!(limits.is_limited(0) && limits.is_limited(2));
        assert!(allowed(limits.admit(0, 1)));
        assert!(!allowed(limits.admit(0, 2)));
        assert!(allowed(limits.admit(1, 2)), "each key has its own bucket");
        assert_eq!((0..6).filter(|_| allowed(limits.admit(2, 3))).count(), 5);
        assert_eq!(limits.admit(9, 1), Admission::Unlimited, "no such key");
    }

    #[test]
    fn the_dense_index_and_the_search_agree() {
        let five = limit("5/1s", None);
        let own: Vec<(u32, RateLimit)> =
            (0..10).filter(|p| p % 3 == 0).map(|p| (p, five)).collect();
        let dense = Limits::build_with(own.clone(), 10, None);
        assert!(dense.dense.is_some());
        let sparse = Limits::build_with(own, 80, None);
        assert!(sparse.dense.is_none());
        for position in 0..12 {
            assert_eq!(
                dense.limit_at(position),
                sparse.limit_at(position),
                "{position}"
            );
            assert_eq!(
                dense.is_limited(position),
                position % 3 == 0 && position < 10
            );
        }
    }

    #[test]
    fn state_is_carried_by_absorbing_it() {
        let one = limit("1/1h", None);
        let old = Limits::build_with(vec![(0, one)], 1, None);
        assert!(allowed(old.admit(0, 1)));
        assert!(!allowed(old.admit(0, 2)));
        let new = Limits::build_with(vec![(3, one)], 4, None);
        assert_eq!(new.state(3), None);
        new.absorb(3, old.state(0).unwrap(), true);
        assert!(
            !allowed(new.admit(3, 3)),
            "the new set knows the bucket is empty"
        );
        assert_eq!(new.state(3).unwrap().refused, 2);
        // A shorter limit of the same key is not held to the old one's period.
        let fast = Limits::build_with(vec![(0, limit("10/1s", None))], 1, None);
        fast.absorb(0, old.state(0).unwrap(), false);
        assert!(
            !allowed(fast.admit(0, 3)),
            "an empty bucket of the new limit"
        );
        assert!(
            allowed(fast.admit(0, 3 + 100_000_000)),
            "refilled at the new rate"
        );
        let unlimited = Limits::build_with(Vec::new(), 4, None);
        unlimited.absorb(3, old.state(0).unwrap(), true);
        assert!(!unlimited.any());
        assert_eq!(unlimited.admit(3, 4), Admission::Unlimited);
    }

    #[test]
    fn a_remembered_fleet_refusal_stands_until_its_end_and_is_counted() {
        // 10/1s burst 3: interval 0.1 s, tolerance 0.3 s.
        let local = Limits::build_with(vec![(2, limit("10/1s", Some(3)))], 4, None);
        local.remember_refusal(2, 10 * SECOND);
        assert_eq!(
            local.remembered_refusal(2, SECOND),
            None,
            "the local backend keeps none"
        );
        let limits = local.remembering(true);
        let now = 5 * SECOND;
        assert_eq!(
            limits.remembered_refusal(2, now),
            None,
            "nothing remembered"
        );
        limits.remember_refusal(2, now + 40_000_000);
        limits.remember_refusal(0, now + 40_000_000);
        assert_eq!(limits.remembered_refusal(0, now), None, "an unlimited key");
        let Some(Admission::Refused { quota, log }) = limits.remembered_refusal(2, now) else {
            panic!("the refusal stands");
        };
        assert!(log, "the first refusal is logged");
        assert_eq!(quota.remaining, 0);
        assert_eq!(quota.retry_after_nanos, 40_000_000);
        assert_eq!(
            quota.reset_nanos, 240_000_000,
            "40 ms + tolerance − interval"
        );
        assert!(matches!(
            limits.remembered_refusal(2, now + 39_999_999),
            Some(Admission::Refused { log: false, .. })
        ));
        assert_eq!(
            limits.remembered_refusal(2, now + 40_000_000),
            None,
            "it ended"
        );
        // A shorter refusal never cuts a longer one.
        limits.remember_refusal(2, now + 10);
        assert!(limits.remembered_refusal(2, now + 30_000_000).is_some());
        assert_eq!(limits.state(2).map(|s| s.refused), Some(3));
        assert!(allowed(limits.admit(2, now)), "the local bucket is its own");
    }
}
