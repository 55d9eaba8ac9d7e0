//! A fixed-bucket histogram of durations in atomics: what `/metrics` shows as a Prometheus
//! histogram and what the stats push summarises as a timer.
//!
//! Recording is one bucket search over a handful of bounds and three relaxed `fetch_add`s; no
//! lock. A reading ([`HistogramTotals`]) adds up several histograms (the verify counters keep one
//! per shard) and subtracts an earlier reading (the push sends what changed since the last flush).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the verify handler's buckets, in seconds: 5 µs to 10 ms.
pub const VERIFY_BOUNDS: [f64; 11] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01,
];

/// The upper bounds of a reload's buckets, in seconds: 1 ms to a minute.
pub const RELOAD_BOUNDS: [f64; 10] = [0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Counts of durations at or under each bound (not cumulative), the rest above the last one.
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    /// `buckets[i]`: durations in (bounds[i-1], bounds[i]]; `buckets[N]`: above every bound.
    buckets: [AtomicU64; N],
    over: AtomicU64,
    sum_nanos: AtomicU64,
    /// The part of the sum above every bound (rare: kept so a summary can value those exactly).
    over_sum_nanos: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub fn new(bounds: &'static [f64; N]) -> Self {
        Histogram {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            over_sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = self.bounds.iter().position(|&bound| seconds <= bound);
        match slot.and_then(|i| self.buckets.get(i)) {
            Some(bucket) => bucket.fetch_add(1, Ordering::Relaxed),
            None => {
                self.over_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
                self.over.fetch_add(1, Ordering::Relaxed)
            }
        };
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// What this histogram holds now.
    pub fn read(&self) -> HistogramTotals {
        let mut totals = HistogramTotals::zero(self.bounds);
        totals.add(self);
        totals
    }
}

/// A reading of one or more histograms with the same bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramTotals {
    pub bounds: &'static [f64],
    /// Per bucket (not cumulative); the last entry counts durations above every bound.
    pub counts: Vec<u64>,
    pub sum_nanos: u64,
    /// The part of `sum_nanos` above every bound.
    pub over_sum_nanos: u64,
}

impl HistogramTotals {
    pub fn zero(bounds: &'static [f64]) -> Self {
        HistogramTotals {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum_nanos: 0,
            over_sum_nanos: 0,
        }
    }

    /// Adds what `histogram` holds now.
    pub fn add<const N: usize>(&mut self, histogram: &Histogram<N>) {
        let buckets = histogram.buckets.iter().chain([&histogram.over]);
        for (total, bucket) in self.counts.iter_mut().zip(buckets) {
            *total = total.wrapping_add(bucket.load(Ordering::Relaxed));
        }
        let sum = histogram.sum_nanos.load(Ordering::Relaxed);
        self.sum_nanos = self.sum_nanos.wrapping_add(sum);
        let over = histogram.over_sum_nanos.load(Ordering::Relaxed);
        self.over_sum_nanos = self.over_sum_nanos.wrapping_add(over);
    }

    /// What was recorded after `earlier` (a reading of the same histograms).
    pub fn since(&self, earlier: &HistogramTotals) -> HistogramTotals {
        HistogramTotals {
            bounds: self.bounds,
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(now, then)| now.wrapping_sub(*then))
                .collect(),
            sum_nanos: self.sum_nanos.wrapping_sub(earlier.sum_nanos),
            over_sum_nanos: self.over_sum_nanos.wrapping_sub(earlier.over_sum_nanos),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos as f64 / 1e9
    }

    /// `(upper bound, durations at or under it)` for every bound, as Prometheus writes buckets.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut running = 0;
        self.bounds
            .iter()
            .zip(&self.counts)
            .map(|(&bound, &count)| {
                running += count;
                (bound, running)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_bucket_and_the_sum() {
        let histogram = Histogram::new(&VERIFY_BOUNDS);
        histogram.record(Duration::from_micros(3));
        histogram.record(Duration::from_micros(5));
        histogram.record(Duration::from_micros(700));
        histogram.record(Duration::from_secs(1));
        let totals = histogram.read();
        assert_eq!(totals.count(), 4);
        assert_eq!(totals.counts[0], 2, "5 µs is at or under the first bound");
        assert_eq!(totals.counts[7], 1, "700 µs is in (0.5 ms, 1 ms]");
        assert_eq!(totals.counts[11], 1, "a second is above every bound");
        assert_eq!(totals.sum_nanos, 1_000_708_000);
        let cumulative = totals.cumulative();
        assert_eq!(cumulative.len(), 11);
        assert_eq!(cumulative[10], (0.01, 3));
    }

    #[test]
    fn since_is_what_was_recorded_in_between() {
        let histogram = Histogram::new(&RELOAD_BOUNDS);
        histogram.record(Duration::from_millis(2));
        let before = histogram.read();
        histogram.record(Duration::from_millis(200));
        let delta = histogram.read().since(&before);
        assert_eq!(delta.count(), 1);
        assert_eq!(delta.counts[3], 1);
        assert_eq!(delta.sum_nanos, 200_000_000);
    }
}
