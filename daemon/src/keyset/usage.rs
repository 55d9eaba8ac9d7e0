//! Per-key usage: how many verifications each key of a set has had, and when the last one was.
//!
//! Two atomics per key (16 bytes), indexed by the key's position in the set, so the verify path
//! adds to its key's counter and stores the time without a lock or a lookup. A set's counters are
//! its own; a reload carries them into the new set by key id ([`KeyUsage::absorb`], run once the
//! old set has no reader left), and the state directory carries them across restarts
//! (`crate::usage_file`).

use heare_auth_store::timestamp::UnixMillis;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One key's usage. 16 bytes.
#[derive(Debug, Default)]
pub struct KeyUsage {
    verifications: AtomicU64,
    /// Unix milliseconds of the last verification, shifted left by one, with the low bit set when
    /// that verification used a previous (grace) secret; 0 for none. Shifted so that the larger
    /// value is always the later time.
    last_verified_at: AtomicI64,
}

/// What one key's usage says when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageReading {
    pub verifications: u64,
    pub last_verified_at: Option<UnixMillis>,
    /// Whether the last verification used a previous secret of a rotated key (a client that has
    /// not switched to the new secret yet).
    pub last_used_previous_secret: bool,
    /// Requests refused by the key's rate limit; `None` for a key without a limit (kept by the
    /// rate limits, not in this 16-byte slot).
    pub rate_limited: Option<u64>,
}

impl KeyUsage {
    /// Counts one verification at `now`, by a previous secret or the current one.
    pub fn record(&self, now: UnixMillis, previous_secret: bool) {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        self.last_verified_at
            .store(pack(now, previous_secret), Ordering::Relaxed);
    }

    pub fn read(&self) -> UsageReading {
        let packed = self.last_verified_at.load(Ordering::Relaxed);
        UsageReading {
            verifications: self.verifications.load(Ordering::Relaxed),
            last_verified_at: (packed > 0).then_some(packed >> 1),
            last_used_previous_secret: packed & 1 == 1,
            rate_limited: None,
        }
    }

    /// Adds `earlier` (the same key's usage from an older set or a saved file) to this one.
    pub fn absorb(&self, earlier: UsageReading) {
        self.verifications
            .fetch_add(earlier.verifications, Ordering::Relaxed);
        if let Some(at) = earlier.last_verified_at {
            let packed = pack(at, earlier.last_used_previous_secret);
            self.last_verified_at.fetch_max(packed, Ordering::Relaxed);
        }
    }
}

/// A time and the previous-secret flag in one `i64` (times before 1970 count as 0).
fn pack(at: UnixMillis, previous_secret: bool) -> i64 {
    (at.max(0) << 1) | i64::from(previous_secret)
}

/// Usage slots for `count` keys, all zero.
pub fn slots(count: usize) -> Box<[KeyUsage]> {
    (0..count).map(|_| KeyUsage::default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_per_key() {
        assert_eq!(std::mem::size_of::<KeyUsage>(), 16);
    }

    #[test]
    fn record_and_absorb() {
        let usage = KeyUsage::default();
        assert_eq!(usage.read(), UsageReading::default());
        usage.record(1_000, false);
        usage.record(2_000, true);
        usage.absorb(UsageReading {
            verifications: 5,
            last_verified_at: Some(1_500),
            last_used_previous_secret: false,
            ..Default::default()
        });
        assert_eq!(
            usage.read(),
            UsageReading {
                verifications: 7,
                last_verified_at: Some(2_000),
                last_used_previous_secret: true,
                ..Default::default()
            }
        );
        usage.absorb(UsageReading {
            verifications: 1,
            last_verified_at: Some(3_000),
            last_used_previous_secret: false,
            ..Default::default()
        });
        assert_eq!(usage.read().last_verified_at, Some(3_000));
        assert!(!usage.read().last_used_previous_secret);
    }
}
