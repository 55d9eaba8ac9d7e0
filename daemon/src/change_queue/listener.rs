//! The task that long-polls the queue, asks for reloads and deletes what it handled (see the
//! parent module for the whole story). Needs the AWS SDK: built with the `s3` feature.
//!
//! Whoever can send to the queue sets this task's pace, so the pace has floors of its own:
//! - reloads it asks for are at least [`MIN_RELOAD_SPACING`] apart;
//! - while the store's last load failed, the key object's own events ask for none (the
//!   reloader's own backed-off retries cover that), and the changes of the log a batch names are
//!   applied after a backed-off pause;
//! - a receive that comes back empty at once is followed by a wait for the rest of
//!   [`MIN_RECEIVE_CYCLE`];
//! - messages that are not S3 events are logged at most once a minute, as a count.

use super::event::{self, Naming, Notice};
use super::state::QueueState;
use crate::config::NotifyQueue;
use crate::reload_request::{ReloadOutcome, ReloadRequest, Trigger};
use crate::schedule;
use crate::state::Shared;
use heare_auth_store::S3Options;
use heare_auth_store::queue::{ChangeQueue, LONG_POLL, QueueError, QueueMessage};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Reloads asked for by the queue are at least this far apart.
const MIN_RELOAD_SPACING: Duration = Duration::from_secs(1);
/// A receive cycle lasts at least this long, even when the server answers at once.
const MIN_RECEIVE_CYCLE: Duration = Duration::from_secs(1);
/// Messages that are not S3 events are logged at most this often.
const INVALID_LOG_EVERY: Duration = Duration::from_secs(60);

/// Starts listening on `settings`' queue until `stopped` turns true.
pub fn spawn(
    settings: NotifyQueue,
    s3: S3Options,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(state) = shared.queue.clone() else {
            return;
        };
        let queue = ChangeQueue::connect(&settings.url, settings.region.as_deref(), &s3).await;
        tracing::info!(queue = %settings.url, "notify_queue_listening");
        let mut listener = Listener::new(&queue, &settings, &shared, &state, stopped);
        listener.run().await;
    })
}

/// The listener and its pacing state.
struct Listener<'a> {
    queue: &'a ChangeQueue,
    settings: &'a NotifyQueue,
    shared: &'a Shared,
    state: &'a QueueState,
    stopped: watch::Receiver<bool>,
    /// Failed queue calls in a row.
    failures: u32,
    /// When the last reload asked for by the queue ended.
    last_reload: Option<Instant>,
    /// Failed reloads in a row, and until when none is asked for.
    reload_failures: u32,
    reloads_paused_until: Option<Instant>,
    /// Messages that were not S3 events since the last log line about them.
    invalid_unlogged: usize,
    invalid_logged_at: Option<Instant>,
}

impl<'a> Listener<'a> {
    fn new(
        queue: &'a ChangeQueue,
        settings: &'a NotifyQueue,
        shared: &'a Shared,
        state: &'a QueueState,
        stopped: watch::Receiver<bool>,
    ) -> Self {
        Listener {
            queue,
            settings,
            shared,
            state,
            stopped,
            failures: 0,
            last_reload: None,
            reload_failures: 0,
            reloads_paused_until: None,
            invalid_unlogged: 0,
            invalid_logged_at: None,
        }
    }

    /// Receives until stopped. The first receive does not wait, so that `/status` tells at once
    /// whether the queue answers; every later one is a long poll.
    async fn run(&mut self) {
        let mut wait = Duration::ZERO;
        loop {
            let started = Instant::now();
            let received = tokio::select! {
                received = self.queue.receive(wait) => received,
                _ = self.stopped.changed() => return,
            };
            wait = LONG_POLL;
            let handled = match received {
                Ok(messages) if messages.is_empty() => self.idle(started).await,
                Ok(messages) => self.handle(messages).await,
                Err(error) => Err(error),
            };
            let go_on = match handled {
                Ok(()) => {
                    self.recovered();
                    true
                }
                Err(error) => self.back_off(error).await,
            };
            if !go_on || *self.stopped.borrow() {
                return;
            }
        }
    }

    /// An empty receive: recorded, and if the server answered at once, a wait for the rest of
    /// the cycle.
    async fn idle(&mut self, started: Instant) -> Result<(), QueueError> {
        self.state.received(&[]);
        self.sleep_until(started + MIN_RECEIVE_CYCLE).await;
        Ok(())
    }

    /// One batch: counted, one reload if any message names the key object, then deleted.
    async fn handle(&mut self, messages: Vec<QueueMessage>) -> Result<(), QueueError> {
        let (bucket, key) = (&self.settings.bucket, &self.settings.key);
        let notices: Vec<Notice> = messages
            .iter()
            .map(|m| event::classify(&m.body, bucket, key))
            .collect();
        self.state.received(&notices);
        self.note_invalid(notices.iter().filter(|n| **n == Notice::Invalid).count());
        if notices.contains(&Notice::Ours) {
            let named: Vec<Naming> = messages
                .iter()
                .flat_map(|m| event::named(&m.body, bucket, key))
                .collect();
            self.reload(&named).await;
        }
        let receipts: Vec<String> = messages.into_iter().map(|m| m.receipt).collect();
        self.queue.delete(&receipts).await
    }

    /// Asks for the conditional reload the batch's events (`named`) call for, no sooner than
    /// [`MIN_RELOAD_SPACING`] after the last one. While the store's last load failed, only the
    /// changes of the log the batch names are asked for (a revocation is applied at once), after
    /// the backed-off pause that follows a failed reload; the key object's own events ask for
    /// nothing then: the reloader's own backed-off retries look at it, which a flood of events
    /// must not shorten.
    async fn reload(&mut self, named: &[Naming]) {
        let failing = self.shared.status().stale;
        let trigger = match (failing, highest_change(named)) {
            (false, _) => trigger_for(named),
            (true, Some(highest)) => Trigger::NotifyChange(highest),
            (true, None) => {
                tracing::debug!("notify_reload_skipped_store_failing");
                return;
            }
        };
        let paused_until = self
            .reloads_paused_until
            .filter(|until| failing && Instant::now() < *until);
        let spaced = self.last_reload.map(|last| last + MIN_RELOAD_SPACING);
        if let Some(not_before) = spaced.max(paused_until) {
            self.sleep_until(not_before).await;
        }
        let outcome = reload_now(self.shared, trigger).await;
        self.last_reload = Some(Instant::now());
        self.note_outcome(outcome);
    }

    /// After a failed reload, no other for a backed-off while.
    fn note_outcome(&mut self, outcome: Option<ReloadOutcome>) {
        match outcome {
            Some(Err(_)) => {
                self.reload_failures = self.reload_failures.saturating_add(1);
                let pause = schedule::retry_wait(self.reload_failures);
                self.reloads_paused_until = Some(Instant::now() + pause);
            }
            _ => {
                self.reload_failures = 0;
                self.reloads_paused_until = None;
            }
        }
    }

    /// Counts messages that were not S3 events; logs the count at most once a minute.
    fn note_invalid(&mut self, count: usize) {
        self.invalid_unlogged += count;
        let due = self
            .invalid_logged_at
            .is_none_or(|at| at.elapsed() >= INVALID_LOG_EVERY);
        if self.invalid_unlogged > 0 && due {
            tracing::warn!(
                messages = self.invalid_unlogged,
                queue = %self.settings.url,
                "notify_messages_not_s3_events"
            );
            self.invalid_unlogged = 0;
            self.invalid_logged_at = Some(Instant::now());
        }
    }

    /// Records and logs a failed queue call, then waits before the next; `false` when stopped
    /// meanwhile.
    async fn back_off(&mut self, error: QueueError) -> bool {
        self.failures = self.failures.saturating_add(1);
        let wait = schedule::retry_wait(self.failures);
        tracing::warn!(
            error = %error,
            failures = self.failures,
            retry_in_ms = wait.as_millis() as u64,
            "notify_queue_failed"
        );
        self.state.failed(error.to_string());
        self.sleep_until(Instant::now() + wait).await;
        !*self.stopped.borrow()
    }

    /// Logs the first success after failures.
    fn recovered(&mut self) {
        if self.failures > 0 {
            tracing::info!(failures = self.failures, "notify_queue_recovered");
        }
        self.failures = 0;
    }

    /// Sleeps until `deadline`, or until stopped.
    async fn sleep_until(&mut self, deadline: Instant) {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = self.stopped.changed() => {}
        }
    }
}

/// What a batch of events asks for: only change objects of the log → those changes
/// ([`Trigger::NotifyChange`] of the highest), else (the key object named) a look at the key
/// object after the log ([`Trigger::Notify`]).
fn trigger_for(named: &[Naming]) -> Trigger {
    let only_changes = named.iter().all(|n| matches!(n, Naming::Change(_)));
    match highest_change(named) {
        Some(highest) if only_changes => Trigger::NotifyChange(highest),
        _ => Trigger::Notify,
    }
}

/// The highest change of the log that `named` names, if any.
fn highest_change(named: &[Naming]) -> Option<u64> {
    named
        .iter()
        .filter_map(|n| match n {
            Naming::Change(seq) => Some(*seq),
            Naming::KeyObject => None,
        })
        .max()
}

/// Asks the reloader for a conditional reload and waits until it is done; `None` when the
/// reloader is gone (the daemon is stopping).
async fn reload_now(shared: &Shared, trigger: Trigger) -> Option<ReloadOutcome> {
    let (reply, done) = oneshot::channel();
    let request = ReloadRequest {
        trigger,
        reply: Some(reply),
    };
    shared.reload_requests.send(request).await.ok()?;
    done.await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_asks_for_its_changes_or_the_key_object() {
        let changes = [Naming::Change(3), Naming::Change(7)];
        assert!(matches!(trigger_for(&changes), Trigger::NotifyChange(7)));
        let mixed = [Naming::Change(3), Naming::KeyObject, Naming::Change(5)];
        assert!(matches!(trigger_for(&mixed), Trigger::Notify));
        // While the store fails, a mixed batch still names its highest change.
        assert_eq!(highest_change(&mixed), Some(5));
        assert_eq!(highest_change(&[Naming::KeyObject]), None);
        assert!(matches!(trigger_for(&[]), Trigger::Notify));
    }
}
