//! Push: the SQS queue (`notify_queue`) that tells the daemon the key object changed, so a
//! revocation reaches every host in about a second instead of a poll interval.
//!
//! One task long-polls the queue ([`heare_auth_store::queue`]), reads each message as an S3 event
//! ([`event`]), asks the reloader for one conditional reload when any message of a batch (up to
//! ten) names the key object — at most one a second, none while the store is failing — waits for
//! it, then deletes the whole batch — other objects' events, S3's test event and unreadable messages too, so that none comes
//! back forever. A failed queue call is logged, shown in `/status` and `/metrics`
//! ([`state`]), and retried after an exponential backoff with full jitter; polling keeps running
//! meanwhile as the fallback. Messages are only hints: keys still come from S3 alone.

pub mod event;
#[cfg(feature = "s3")]
mod listener;
pub(crate) mod state;

#[cfg(feature = "s3")]
pub(crate) use listener::spawn;

/// A build without the AWS SDK cannot reach a queue: says so once, listens to nothing.
#[cfg(not(feature = "s3"))]
pub(crate) fn spawn(
    settings: crate::config::NotifyQueue,
    _s3: heare_auth_store::S3Options,
    _shared: std::sync::Arc<crate::state::Shared>,
    _stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tracing::error!(queue = %settings.url, "notify_queue_unsupported_in_this_build");
    tokio::spawn(async {})
}
