//! The stats push: what the Python service sent to its heare-stats collector, sent by one task
//! once per `flush_interval` — never per request.
//!
//! Each flush reads the counters the daemon keeps anyway ([`crate::metrics`]), sends what changed
//! since the last flush ([`batch`]) and forgets it. A flush that fails or takes longer than its
//! bound (the flush interval, at most 5 s) is dropped and counted
//! (`heare_auth_stats_flushes_failed_total`); the next one carries only its own interval, so a
//! collector that is down or slow costs the daemon one small task's work and never touches
//! verification. `startup.success` and `startup.duration` go with the first flush,
//! `shutdown` with a last flush at SIGTERM; a start that fails sends `startup.failed` before the
//! daemon exits.

mod batch;
mod send;

use crate::config::StatsSettings;
use crate::state::Shared;
use batch::{Batch, Reading, TimerValue};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// The longest one flush may take.
const MAX_SEND_TIME: Duration = Duration::from_secs(5);

/// The push task's state between flushes.
struct Pusher {
    settings: StatsSettings,
    shared: Arc<Shared>,
    last: Reading,
    /// The first load's time, sent with the first flush.
    startup: Option<Duration>,
    /// Whether the last flush failed (a failure is logged once, and the recovery).
    failing: bool,
}

/// Starts the push; it makes a last flush (with `shutdown`) when `stop` turns true.
pub fn spawn(
    settings: StatsSettings,
    shared: Arc<Shared>,
    startup: Duration,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let pusher = Pusher {
        last: Reading::take(&shared.metrics),
        settings,
        shared,
        startup: Some(startup),
        failing: false,
    };
    tokio::spawn(pusher.run(stop))
}

/// Sends `startup.failed` (and how long the start took) for a daemon about to exit.
pub async fn report_failed_start(settings: &StatsSettings, elapsed: Duration) {
    let mut batch = Batch::default();
    batch.counter(&settings.prefix, "startup.failed", 1);
    batch.timer(&settings.prefix, "startup.duration", vec![once(elapsed)]);
    let bound = send_bound(settings);
    if let Ok(Err(error)) | Err(error) = tokio::time::timeout(bound, send::send(settings, &batch))
        .await
        .map_err(|_| send::SendError::Io(std::io::ErrorKind::TimedOut.into()))
    {
        tracing::warn!(%error, "stats_push_failed");
    }
}

fn once(elapsed: Duration) -> TimerValue {
    TimerValue {
        ms: elapsed.as_secs_f64() * 1000.0,
        sample_rate: 1.0,
    }
}

fn send_bound(settings: &StatsSettings) -> Duration {
    settings.flush_interval.min(MAX_SEND_TIME)
}

impl Pusher {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let period = self.settings.flush_interval;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.flush(false).await,
                _ = stop.changed() => {
                    self.flush(true).await;
                    return;
                }
            }
        }
    }

    /// Sends what changed since the last flush; `shutdown` adds the `shutdown` counter.
    async fn flush(&mut self, shutdown: bool) {
        let now = Reading::take(&self.shared.metrics);
        let prefix = &self.settings.prefix;
        let keys = self.shared.keys().len();
        let mut batch = batch::between(&self.last, &now, keys, prefix);
        self.last = now;
        if let Some(elapsed) = self.startup.take() {
            batch.counter(prefix, "startup.success", 1);
            batch.timer(prefix, "startup.duration", vec![once(elapsed)]);
        }
        if shutdown {
            batch.counter(prefix, "shutdown", 1);
        }
        let sent = tokio::time::timeout(
            send_bound(&self.settings),
            send::send(&self.settings, &batch),
        )
        .await;
        match sent {
            Ok(Ok(())) => self.succeeded(),
            Ok(Err(error)) => self.failed(&error.to_string()),
            Err(_) => self.failed("the collector did not take the flush in time"),
        }
    }

    fn succeeded(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::info!(dest_host = %self.settings.dest_host, "stats_push_recovered");
        }
    }

    fn failed(&mut self, error: &str) {
        self.shared
            .metrics
            .stats_flushes_failed
            .fetch_add(1, Ordering::Relaxed);
        if !std::mem::replace(&mut self.failing, true) {
            tracing::warn!(dest_host = %self.settings.dest_host, error, "stats_push_failed");
        }
    }
}
