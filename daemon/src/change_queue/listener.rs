//! The task that long-polls the queue, asks for reloads and deletes what it handled (see the
//! parent module for the whole story). Needs the AWS SDK: built with the `s3` feature.

use super::event::{self, Notice};
use super::state::QueueState;

use crate::config::NotifyQueue;
use crate::reload_request::{ReloadRequest, Trigger};
use crate::schedule;
use crate::state::Shared;
use heare_auth_store::S3Options;
use heare_auth_store::queue::{ChangeQueue, QueueError, QueueMessage};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// Starts listening on `settings`' queue until `stopped` turns true.
pub fn spawn(
    settings: NotifyQueue,
    s3: S3Options,
    shared: Arc<Shared>,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let queue = ChangeQueue::connect(&settings.url, settings.region.as_deref(), &s3).await;
        tracing::info!(queue = %settings.url, "notify_queue_listening");
        listen(&queue, &settings, &shared, stopped).await;
    })
}

async fn listen(
    queue: &ChangeQueue,
    settings: &NotifyQueue,
    shared: &Shared,
    mut stopped: watch::Receiver<bool>,
) {
    let Some(state) = shared.queue.as_deref() else {
        return;
    };
    let mut failures: u32 = 0;
    loop {
        let received = tokio::select! {
            received = queue.receive() => received,
            _ = stopped.changed() => return,
        };
        let handled = match received {
            Ok(messages) => handle(queue, settings, shared, state, messages).await,
            Err(error) => Err(error),
        };
        match handled {
            Ok(()) => failures = recovered(failures),
            Err(error) => {
                failures = failures.saturating_add(1);
                if !back_off(state, error, failures, &mut stopped).await {
                    return;
                }
            }
        }
    }
}

/// One received batch: counted, one reload if any message names the key object, then deleted.
async fn handle(
    queue: &ChangeQueue,
    settings: &NotifyQueue,
    shared: &Shared,
    state: &QueueState,
    messages: Vec<QueueMessage>,
) -> Result<(), QueueError> {
    let notices: Vec<Notice> = messages
        .iter()
        .map(|m| event::classify(&m.body, &settings.bucket, &settings.key))
        .collect();
    state.received(&notices);
    let invalid = notices.iter().filter(|n| **n == Notice::Invalid).count();
    if invalid > 0 {
        tracing::warn!(messages = invalid, queue = %settings.url, "notify_messages_not_s3_events");
    }
    if notices.contains(&Notice::Ours) {
        reload_now(shared).await;
    }
    let receipts: Vec<String> = messages.into_iter().map(|m| m.receipt).collect();
    queue.delete(&receipts).await
}

/// Asks the reloader for a conditional reload and waits until it is done.
async fn reload_now(shared: &Shared) {
    let (reply, done) = oneshot::channel();
    let request = ReloadRequest {
        trigger: Trigger::Notify,
        reply: Some(reply),
    };
    if shared.reload_requests.send(request).await.is_ok() {
        let _ = done.await;
    }
}

/// Records and logs a failed queue call, then waits before the next; `false` when stopped
/// meanwhile.
async fn back_off(
    state: &QueueState,
    error: QueueError,
    failures: u32,
    stopped: &mut watch::Receiver<bool>,
) -> bool {
    let wait = schedule::retry_wait(failures);
    tracing::warn!(
        error = %error,
        failures,
        retry_in_ms = wait.as_millis() as u64,
        "notify_queue_failed"
    );
    state.failed(error.to_string());
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stopped.changed() => false,
    }
}

/// Logs the first success after failures; the count of failures in a row is then 0.
fn recovered(failures: u32) -> u32 {
    if failures > 0 {
        tracing::info!(failures, "notify_queue_recovered");
    }
    0
}
