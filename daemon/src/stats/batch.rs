//! One flush of the stats push: what changed since the last flush, under the Python service's
//! names (`verify.requests`, `verify.success`, …, `keys.count`), with the timers summarised.
//!
//! Timers are not kept per request: the verify handler's histogram (already counted for
//! `/metrics`) is read at each flush, and the change since the last one becomes at most
//! [`MAX_TIMER_VALUES`] values, each bucket contributing in proportion to its share of requests
//! (at least one value for a bucket that saw any), valued at the bucket's midpoint — above the
//! last bound, at the exact mean of the durations there. StatsD lines carry the sample rate
//! (`|@0.001`) so a standard StatsD server scales its counts back; the HTTP body lists the values.
//! A flush is then a few dozen values whatever the request rate.

use crate::metrics::histogram::HistogramTotals;
use crate::metrics::{Metrics, VerifyResult, VerifyTotals};
use std::sync::atomic::Ordering;

/// The most values one timer contributes to a flush (plus one per bucket, at worst).
pub const MAX_TIMER_VALUES: u64 = 100;

/// What the counters held at one flush.
#[derive(Debug, Clone)]
pub struct Reading {
    verify: VerifyTotals,
    refresh: [u64; 3],
    refresh_duration: HistogramTotals,
    health: u64,
}

impl Reading {
    pub fn take(metrics: &Metrics) -> Reading {
        let counts = &metrics.refreshes;
        Reading {
            verify: metrics.verify.read(),
            refresh: [&counts.success, &counts.failed, &counts.rejected]
                .map(|c| c.load(Ordering::Relaxed)),
            refresh_duration: metrics.refresh_duration(),
            health: metrics.health_requests.load(Ordering::Relaxed),
        }
    }
}

/// A timer value with the fraction of the requests it stands for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimerValue {
    pub ms: f64,
    pub sample_rate: f64,
}

/// One flush, names already prefixed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Batch {
    pub counters: Vec<(String, u64)>,
    pub gauges: Vec<(String, f64)>,
    pub timers: Vec<(String, Vec<TimerValue>)>,
}

impl Batch {
    pub fn counter(&mut self, prefix: &str, name: &str, value: u64) {
        if value > 0 {
            self.counters.push((join(prefix, name), value));
        }
    }

    pub fn gauge(&mut self, prefix: &str, name: &str, value: f64) {
        self.gauges.push((join(prefix, name), value));
    }

    pub fn timer(&mut self, prefix: &str, name: &str, values: Vec<TimerValue>) {
        if !values.is_empty() {
            self.timers.push((join(prefix, name), values));
        }
    }
}

/// `prefix.name`, as the Python client joins them (a prefix ending in `.` gets no second one).
fn join(prefix: &str, name: &str) -> String {
    match prefix.trim_end_matches('.') {
        "" => name.to_string(),
        prefix => format!("{prefix}.{name}"),
    }
}

/// The batch of what changed between `then` and `now`, with the gauge of keys served.
pub fn between(then: &Reading, now: &Reading, keys: usize, prefix: &str) -> Batch {
    let verify = now.verify.since(&then.verify);
    let valid = verify.get(VerifyResult::Valid);
    let refresh: [u64; 3] = std::array::from_fn(|i| now.refresh[i].wrapping_sub(then.refresh[i]));
    let mut batch = Batch::default();
    batch.counter(prefix, "verify.requests", verify.requests());
    batch.counter(prefix, "verify.success", valid);
    batch.counter(prefix, "verify.failed", verify.requests() - valid);
    batch.counter(
        prefix,
        "verify.rate_limited",
        verify.get(VerifyResult::RateLimited),
    );
    batch.counter(prefix, "refresh.requests", refresh.iter().sum());
    batch.counter(prefix, "refresh.success", refresh[0]);
    batch.counter(prefix, "refresh.failed", refresh[1]);
    batch.counter(prefix, "refresh.rejected", refresh[2]);
    batch.counter(
        prefix,
        "health.requests",
        now.health.wrapping_sub(then.health),
    );
    batch.gauge(prefix, "keys.count", keys as f64);
    batch.timer(prefix, "verify.duration", summarise(&verify.duration));
    let refresh_duration = now.refresh_duration.since(&then.refresh_duration);
    batch.timer(prefix, "refresh.duration", summarise(&refresh_duration));
    batch
}

/// At most about [`MAX_TIMER_VALUES`] values standing for the durations in `delta`.
pub fn summarise(delta: &HistogramTotals) -> Vec<TimerValue> {
    let total = delta.count();
    if total == 0 {
        return Vec::new();
    }
    let midpoints = bucket_values_ms(delta);
    let mut values = Vec::new();
    for (&count, &ms) in delta.counts.iter().zip(&midpoints) {
        if count == 0 {
            continue;
        }
        let share = (count * MAX_TIMER_VALUES).div_ceil(total).clamp(1, count);
        let sample_rate = share as f64 / count as f64;
        values.extend((0..share).map(|_| TimerValue { ms, sample_rate }));
    }
    values
}

/// The value in milliseconds each bucket stands for: its midpoint, and above the last bound the
/// mean of the durations there (kept exactly).
fn bucket_values_ms(delta: &HistogramTotals) -> Vec<f64> {
    let mut lower = 0.0;
    let mut values: Vec<f64> = delta
        .bounds
        .iter()
        .map(|&upper| {
            let mid = (lower + upper) / 2.0 * 1000.0;
            lower = upper;
            mid
        })
        .collect();
    let over = delta.counts.last().copied().unwrap_or(0).max(1);
    values.push(delta.over_sum_nanos as f64 / over as f64 / 1e6);
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::histogram::{Histogram, VERIFY_BOUNDS};
    use std::time::Duration;

    #[test]
    fn a_batch_is_the_change_under_python_names() {
        let metrics = Metrics::default();
        metrics
            .verify
            .record(VerifyResult::Valid, Duration::from_micros(30));
        let then = Reading::take(&metrics);
        for _ in 0..5 {
            metrics
                .verify
                .record(VerifyResult::Valid, Duration::from_micros(30));
        }
        metrics
            .verify
            .record(VerifyResult::Unknown, Duration::from_micros(30));
        metrics
            .verify
            .record(VerifyResult::RateLimited, Duration::from_micros(30));
        let batch = between(&then, &Reading::take(&metrics), 12, "heare-auth");
        assert_eq!(
            batch.counters,
            [
                ("heare-auth.verify.requests".to_string(), 7),
                ("heare-auth.verify.success".to_string(), 5),
                ("heare-auth.verify.failed".to_string(), 2),
                ("heare-auth.verify.rate_limited".to_string(), 1),
            ]
        );
        assert_eq!(batch.gauges, [("heare-auth.keys.count".to_string(), 12.0)]);
        assert_eq!(batch.timers[0].0, "heare-auth.verify.duration");
        assert_eq!(batch.timers[0].1.len(), 7);
        assert_eq!(join("p.", "x"), "p.x");
        assert_eq!(join("", "x"), "x");
    }

    #[test]
    fn a_timer_stays_small_at_any_rate_and_keeps_its_mean() {
        let histogram = Histogram::new(&VERIFY_BOUNDS);
        for i in 0..100_000u64 {
            histogram.record(Duration::from_micros(10 + i % 40));
        }
        histogram.record(Duration::from_millis(50));
        let values = summarise(&histogram.read());
        assert!(values.len() as u64 <= MAX_TIMER_VALUES + VERIFY_BOUNDS.len() as u64 + 1);
        let weighted: f64 = values.iter().map(|v| v.ms / v.sample_rate).sum();
        let count: f64 = values.iter().map(|v| 1.0 / v.sample_rate).sum();
        assert!((count - 100_001.0).abs() < 1.0, "{count}");
        let mean = weighted / count;
        assert!((0.015..0.06).contains(&mean), "mean {mean} ms");
        assert!(
            values.iter().any(|v| (v.ms - 50.0).abs() < 1.0),
            "the slow one is kept"
        );
    }
}
