//! The fleet-wide backend: a limited key's request is decided by the Redis every daemon shares
//! ([`super::redis`]), so the sum of what all daemons accept for one key stays within its limit.
//!
//! Only limited keys get here; an unlimited key never touches Redis, and neither does a key Redis
//! has refused until a time still to come: requests from other daemons can only move its arrival
//! time on, so the refusal is remembered beside the key's cell and repeated here until then (a
//! key's holder flooding one daemon costs Redis one question per refusal window, not one per
//! request). A decision waits at most `redis_timeout`. When Redis is down, slow or refusing,
//! `on_backend_error` decides the request instead: `local` enforces this daemon's share of the
//! limit (`requests / fleet_hosts`, `burst / fleet_hosts`, at least 1 each) with the key's own
//! local state, `allow` accepts it, `deny` refuses it (429, retry in a second). Errors are counted
//! (`heare_auth_rate_limit_backend_errors_total`), the backend's state is a gauge
//! (`heare_auth_rate_limit_backend_up`) and in `/status`, and an error is logged at most once a
//! minute (`rate_limit_backend_error`; `rate_limit_backend_recovered` when it answers again).

use super::redis::{BackendError, FleetDecision, RedisLimiter};
use crate::config::OnBackendError;
use crate::keyset::{Admission, Quota, ServedKeys, rate_clock};
use heare_auth_store::rate_limit::RateLimit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const MINUTE: u64 = 60_000_000_000;
const SECOND: u64 = 1_000_000_000;

/// The shared backend and its record.
pub struct FleetLimits {
    redis: RedisLimiter,
    on_error: OnBackendError,
    up: AtomicBool,
    errors: AtomicU64,
    /// When an error was last logged ([`rate_clock`]); 0: never.
    logged_at: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// What `/status` and `/metrics` show of the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetState {
    pub up: bool,
    pub errors: u64,
    pub last_error: Option<String>,
}

/// Where a limited key's request stands in the set that judged it.
#[derive(Debug, Clone, Copy)]
pub struct LimitedKey<'a> {
    pub id: &'a str,
    /// The view's position, for the local fallback's state.
    pub position: u32,
    pub limit: RateLimit,
}

impl FleetLimits {
    pub fn new(redis: RedisLimiter, on_error: OnBackendError) -> Self {
        FleetLimits {
            redis,
            on_error,
            // Up until a decision fails: a daemon that has not asked yet knows of no error.
            up: AtomicBool::new(true),
            errors: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// Decides one request of `key` (of `keys`): a refusal by Redis that still stands, Redis's
    /// answer, or the fallback's.
    pub async fn admit(&self, keys: &ServedKeys, key: LimitedKey<'_>) -> Admission {
        let asked = rate_clock();
        if let Some(refused) = keys.remembered_refusal(key.position, asked) {
            return refused;
        }
        match self.redis.admit(key.id, &key.limit).await {
            Ok(decision) => {
                self.note_answer();
                if !decision.allowed {
                    // Measured from before the question, so never longer than Redis's own wait.
                    let until = asked.saturating_add(decision.retry_after_nanos);
                    keys.remember_refusal(key.position, until);
                }
                let now = rate_clock();
                admission(key.limit, decision, || {
                    keys.refusal_log_due(key.position, now)
                })
            }
            Err(error) => {
                self.note_error(&error);
                self.fallback(keys, key)
            }
        }
    }

    /// What the backend's state is now.
    pub fn state(&self) -> FleetState {
        FleetState {
            up: self.up.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
    }

    fn fallback(&self, keys: &ServedKeys, key: LimitedKey<'_>) -> Admission {
        match self.on_error {
            OnBackendError::Local { fleet_hosts } => {
                keys.admit_under(key.position, share(key.limit, fleet_hosts), rate_clock())
            }
            OnBackendError::Allow => Admission::Unlimited,
            // Counted in the key's refusals (its 429 is one), not logged as the key's: the
            // backend's error is what `rate_limit_backend_error` says.
            OnBackendError::Deny => {
                keys.count_refusal(key.position);
                Admission::Refused {
                    quota: Quota {
                        limit: key.limit,
                        remaining: 0,
                        reset_nanos: SECOND,
                        retry_after_nanos: SECOND,
                    },
                    log: false,
                }
            }
        }
    }

    fn note_answer(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            tracing::info!(
                errors = self.errors.load(Ordering::Relaxed),
                "rate_limit_backend_recovered"
            );
        }
    }

    fn note_error(&self, error: &BackendError) {
        self.up.store(false, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        let text = error.to_string();
        let now = rate_clock();
        let last = self.logged_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= MINUTE;
        if due
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = %text,
                errors = self.errors.load(Ordering::Relaxed),
                on_backend_error = ?self.on_error,
                "rate_limit_backend_error"
            );
        }
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *last_error = Some(text);
    }
}

/// The admission Redis's decision makes; `log_due` is asked only for a refusal.
fn admission(
    limit: RateLimit,
    decision: FleetDecision,
    log_due: impl FnOnce() -> bool,
) -> Admission {
    let interval = limit.interval_nanos().max(1);
    let room = limit.tolerance_nanos().saturating_sub(decision.ahead_nanos);
    let quota = Quota {
        limit,
        remaining: room / interval,
        reset_nanos: decision.ahead_nanos,
        retry_after_nanos: decision.retry_after_nanos,
    };
    match decision.allowed {
        true => Admission::Allowed(quota),
        false => Admission::Refused {
            quota: Quota {
                remaining: 0,
                ..quota
            },
            log: log_due(),
        },
    }
}

/// One daemon's share of `limit` in a fleet of `hosts`: at least one request and one of burst.
fn share(limit: RateLimit, hosts: u64) -> RateLimit {
    let hosts = hosts.max(1);
    let requests = (limit.requests / hosts).max(1);
    let burst = (limit.burst / hosts).max(1);
    RateLimit::new(requests, limit.per, Some(burst)).unwrap_or(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str, burst: Option<u64>) -> RateLimit {
        RateLimit::parse(text, burst).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_share_of_the_limit_is_never_zero() {
        assert_eq!(share(limit("100/1s", None), 3), limit("33/1s", Some(33)));
        assert_eq!(share(limit("100/1s", Some(10)), 4), limit("25/1s", Some(2)));
        assert_eq!(share(limit("2/1h", None), 10), limit("1/1h", Some(1)));
        assert_eq!(share(limit("5/1m", None), 0), limit("5/1m", None));
    }

    #[test]
    fn a_decision_becomes_the_quota_the_headers_show() {
        let ten = limit("10/1s", None);
        let allowed = FleetDecision {
            allowed: true,
            ahead_nanos: 300_000_000,
            retry_after_nanos: 0,
        };
        match admission(ten, allowed, || panic!("asked to log an acceptance")) {
            Admission::Allowed(quota) => {
                assert_eq!(quota.remaining, 7);
                assert_eq!(quota.reset_seconds(), 1);
            }
            other => panic!("{other:?}"),
        }
        let refused = FleetDecision {
            allowed: false,
            ahead_nanos: 1_000_000_000,
            retry_after_nanos: 100_000_000,
        };
        match admission(ten, refused, || true) {
            Admission::Refused { quota, log } => {
                assert!(log);
                assert_eq!(quota.remaining, 0);
                assert_eq!(quota.retry_after_millis(), 100);
            }
            other => panic!("{other:?}"),
        }
    }
}
