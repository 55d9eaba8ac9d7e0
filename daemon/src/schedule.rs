//! When the reloader (and the fleet usage report) next asks the store, so that a fleet of daemons
//! on one object never moves in step: each poll waits the refresh interval T drawn uniformly in
//! T ± `refresh_jitter`, the first poll after start comes at a uniform offset in [0, T) (a fleet
//! started together by one deployment spreads over a whole interval at once), and a failed load
//! is retried after an exponential backoff with *full* jitter — uniform in
//! [0, min(cap, base·2ⁿ)) — so that the end of an S3 outage does not bring every host back in the
//! same second (the schedule AWS's architecture blog measured as the one with the fewest calls
//! and the least bunching). A TCP listener whose port another process holds is retried on the
//! same schedule, capped lower.
//!
//! A few lines over `rand`'s thread generator; crates that do backoff (`backon`,
//! `backoff`) run the retried call themselves, which the reloader's `select!` loop cannot use.

use rand::Rng;
use std::time::Duration;

/// The first retry's window; each failure doubles it.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The widest retry window: a failing store is asked at least this often.
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// The spread of the poll interval, as a fraction of it (0.1 for ±10%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter(f64);

impl Jitter {
    /// The largest spread accepted: ±50% keeps every wait at least half the interval.
    pub const MAX: f64 = 0.5;
    pub const DEFAULT: Jitter = Jitter(0.1);
    pub const NONE: Jitter = Jitter(0.0);

    /// A spread of `fraction` of the interval; `None` outside [0, 0.5].
    pub fn new(fraction: f64) -> Option<Jitter> {
        (0.0..=Self::MAX)
            .contains(&fraction)
            .then_some(Jitter(fraction))
    }

    pub fn fraction(self) -> f64 {
        self.0
    }
}

/// The wait before the next poll: uniform in `period` ± `jitter`.
pub fn poll_wait(period: Duration, jitter: Jitter) -> Duration {
    if jitter.0 == 0.0 {
        return period;
    }
    let factor = rand::rng().random_range((1.0 - jitter.0)..=(1.0 + jitter.0));
    period.mul_f64(factor)
}

/// The wait before the first poll after start: uniform in [0, `period`).
pub fn first_poll(period: Duration) -> Duration {
    period.mul_f64(rand::rng().random_range(0.0..1.0))
}

/// The wait before retrying after `failures` failed loads in a row (1 for the first): uniform
/// in [0, min(RETRY_CAP, RETRY_BASE·2^(failures-1))).
pub fn retry_wait(failures: u32) -> Duration {
    retry_wait_within(failures, RETRY_CAP)
}

/// As [`retry_wait`], with the window capped at `cap` instead (a TCP listener whose port is
/// taken retries within 30 s).
pub fn retry_wait_within(failures: u32, cap: Duration) -> Duration {
    retry_window_within(failures, cap).mul_f64(rand::rng().random_range(0.0..1.0))
}

/// The window [`retry_wait_within`] draws from.
fn retry_window_within(failures: u32, cap: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (RETRY_BASE * (1u32 << doublings)).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_waits_stay_within_the_jitter_and_spread_over_it() {
        let period = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..2000)
            .map(|_| poll_wait(period, Jitter::DEFAULT))
            .collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(9)));
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(11)));
        // Both halves of the range are used: not a constant, not one-sided.
        assert!(waits.iter().any(|w| *w < Duration::from_millis(9_500)));
        assert!(waits.iter().any(|w| *w > Duration::from_millis(10_500)));
    }

    #[test]
    fn no_jitter_is_the_interval_itself() {
        let period = Duration::from_secs(7);
        assert_eq!(poll_wait(period, Jitter::NONE), period);
    }

    #[test]
    fn the_first_poll_falls_anywhere_in_one_interval() {
        let period = Duration::from_secs(10);
        let firsts: Vec<Duration> = (0..2000).map(|_| first_poll(period)).collect();
        assert!(firsts.iter().all(|w| *w < period));
        assert!(firsts.iter().any(|w| *w < Duration::from_secs(1)));
        assert!(firsts.iter().any(|w| *w > Duration::from_secs(9)));
    }

    #[test]
    fn retry_windows_double_up_to_the_cap() {
        let window = |failures| retry_window_within(failures, RETRY_CAP);
        assert_eq!(window(1), Duration::from_secs(1));
        assert_eq!(window(4), Duration::from_secs(8));
        assert_eq!(window(7), RETRY_CAP);
        assert_eq!(window(u32::MAX), RETRY_CAP);
    }

    #[test]
    fn a_lower_cap_bounds_every_wait() {
        let cap = Duration::from_secs(30);
        assert_eq!(retry_window_within(3, cap), Duration::from_secs(4));
        assert_eq!(retry_window_within(6, cap), cap);
        let waits: Vec<Duration> = (0..2000).map(|_| retry_wait_within(40, cap)).collect();
        assert!(waits.iter().all(|w| *w < cap));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(27)));
    }

    #[test]
    fn retries_draw_from_the_whole_window() {
        let waits: Vec<Duration> = (0..2000).map(|_| retry_wait(10)).collect();
        assert!(waits.iter().all(|w| *w < RETRY_CAP));
        assert!(waits.iter().any(|w| *w < Duration::from_secs(6)));
        assert!(waits.iter().any(|w| *w > Duration::from_secs(54)));
    }

    #[test]
    fn jitter_outside_half_the_interval_is_refused() {
        assert!(Jitter::new(0.5).is_some());
        assert!(Jitter::new(0.0).is_some());
        assert!(Jitter::new(0.51).is_none());
        assert!(Jitter::new(-0.1).is_none());
        assert!(Jitter::new(f64::NAN).is_none());
    }
}
