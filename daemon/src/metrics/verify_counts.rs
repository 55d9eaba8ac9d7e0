//! The verify counters: results and handler time, counted per thread and summed when read.
//!
//! Every verify adds to a counter and a histogram. One shared set of atomics would put the same
//! cache lines in every worker's path, bouncing between cores at every request; so each thread
//! takes a shard of its own (round-robin, at its first verify) and shards are cache-line aligned.
//! A scrape or a stats flush adds the shards up; what it reads is at most a few requests behind.

use super::histogram::{Histogram, HistogramTotals, VERIFY_BOUNDS};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How a verify ended: the `result` label of `heare_auth_verify_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyResult {
    Valid,
    Unknown,
    Expired,
    Disabled,
    Rotated,
    BadChecksum,
    /// No secret could be read from the request (bad body, too large, unreadable, too slow).
    Malformed,
    /// The set is older than max_stale allows: nothing was looked up.
    Stale,
    /// A valid key without a scope the request requires.
    InsufficientScope,
    /// A valid key over its rate limit.
    RateLimited,
}

impl VerifyResult {
    pub const ALL: [VerifyResult; 10] = [
        VerifyResult::Valid,
        VerifyResult::Unknown,
        VerifyResult::Expired,
        VerifyResult::Disabled,
        VerifyResult::Rotated,
        VerifyResult::BadChecksum,
        VerifyResult::Malformed,
        VerifyResult::Stale,
        VerifyResult::InsufficientScope,
        VerifyResult::RateLimited,
    ];

    pub fn name(self) -> &'static str {
        match self {
            VerifyResult::Valid => "valid",
            VerifyResult::Unknown => "unknown",
            VerifyResult::Expired => "expired",
            VerifyResult::Disabled => "disabled",
            VerifyResult::Rotated => "rotated",
            VerifyResult::BadChecksum => "bad_checksum",
            VerifyResult::Malformed => "malformed",
            VerifyResult::Stale => "stale",
            VerifyResult::InsufficientScope => "insufficient_scope",
            VerifyResult::RateLimited => "rate_limited",
        }
    }
}

const RESULTS: usize = VerifyResult::ALL.len();

/// Shards: more than any host's worker threads are likely to be, so threads rarely share one.
const SHARDS: usize = 32;

/// One thread's counters, alone on its cache lines.
#[repr(align(128))]
struct Shard {
    results: [AtomicU64; RESULTS],
    duration: Histogram<{ VERIFY_BOUNDS.len() }>,
}

/// Verify results and handler times, sharded by thread.
pub struct VerifyCounts {
    shards: Box<[Shard]>,
}

/// The verify counters added up.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyTotals {
    /// Per result, in the order of [`VerifyResult::ALL`].
    pub results: [u64; RESULTS],
    pub duration: HistogramTotals,
}

impl VerifyTotals {
    pub fn get(&self, result: VerifyResult) -> u64 {
        self.results[result as usize]
    }

    pub fn requests(&self) -> u64 {
        self.results.iter().sum()
    }

    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &VerifyTotals) -> VerifyTotals {
        VerifyTotals {
            results: std::array::from_fn(|i| self.results[i].wrapping_sub(earlier.results[i])),
            duration: self.duration.since(&earlier.duration),
        }
    }
}

thread_local! {
    /// This thread's shard, assigned at its first verify.
    static SHARD: usize = next_shard();
}

fn next_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
}

impl Default for VerifyCounts {
    fn default() -> Self {
        let shard = || Shard {
            results: std::array::from_fn(|_| AtomicU64::new(0)),
            duration: Histogram::new(&VERIFY_BOUNDS),
        };
        VerifyCounts {
            shards: (0..SHARDS).map(|_| shard()).collect(),
        }
    }
}

impl VerifyCounts {
    /// Counts one verify that ended with `result` after `elapsed` in the handler.
    pub fn record(&self, result: VerifyResult, elapsed: Duration) {
        let index = SHARD.with(|shard| *shard);
        let Some(shard) = self.shards.get(index) else {
            return;
        };
        shard.results[result as usize].fetch_add(1, Ordering::Relaxed);
        shard.duration.record(elapsed);
    }

    /// Every shard added up.
    pub fn read(&self) -> VerifyTotals {
        let mut totals = VerifyTotals {
            results: [0; RESULTS],
            duration: HistogramTotals::zero(&VERIFY_BOUNDS),
        };
        for shard in self.shards.iter() {
            for (total, count) in totals.results.iter_mut().zip(&shard.results) {
                *total = total.wrapping_add(count.load(Ordering::Relaxed));
            }
            totals.duration.add(&shard.duration);
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let counts = std::sync::Arc::new(VerifyCounts::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counts.record(VerifyResult::Valid, Duration::from_micros(20));
                    }
                    counts.record(VerifyResult::Stale, Duration::from_micros(1));
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let totals = counts.read();
        assert_eq!(totals.get(VerifyResult::Valid), 4000);
        assert_eq!(totals.get(VerifyResult::Stale), 4);
        assert_eq!(totals.requests(), 4004);
        assert_eq!(totals.duration.count(), 4004);
    }

    #[test]
    fn shards_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<Shard>(), 128);
        assert_eq!(std::mem::size_of::<Shard>() % 128, 0);
    }
}
