//! The SQS queue that carries the key object's change notifications: long-poll receive and
//! batch delete, with aws-sdk-sqs on the same AWS environment (credentials chain, region,
//! endpoint override) as the S3 store, so that one set of settings reaches both.
//!
//! A receive waits up to [`LONG_POLL`] for messages (the SQS maximum, so an idle queue costs
//! three requests a minute); every call, its one retry included, is bounded by that plus the S3
//! timeout, so a silent server fails the call instead of hanging it. Requests go where the SDK
//! sends SQS calls: the region's AWS endpoint, or the S3 endpoint override when one is set (the
//! queue URL itself is a parameter of the call, not where it is sent). What the messages say is the daemon's
//! business: this module hands over their bodies and deletes what it is told to.

use crate::S3Options;
use crate::s3::{aws_environment, explain_call};
use aws_sdk_sqs::config::retry::RetryConfig;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use std::time::Duration;

/// How long one receive waits for a message: SQS's longest long poll.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// The most messages one receive returns (SQS's limit).
const BATCH: i32 = 10;

/// A queue call that failed, in one line for the log and `/status`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("queue {queue}: {message}")]
pub struct QueueError {
    pub queue: String,
    pub message: String,
}

/// One message: its body, and the handle that deletes it.
#[derive(Debug, Clone)]
pub struct QueueMessage {
    pub body: String,
    pub receipt: String,
}

/// A connected (not yet contacted) queue.
pub struct ChangeQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    timeout: Duration,
}

impl ChangeQueue {
    /// A client for the queue at `url`, in `region` when the URL names one, else in the S3
    /// settings' region; the S3 endpoint override, when set, is the queue's too.
    pub async fn connect(url: &str, region: Option<&str>, options: &S3Options) -> ChangeQueue {
        let region = region.or(options.region.as_deref());
        let shared = aws_environment(region).await;
        let mut config = aws_sdk_sqs::config::Builder::from(&shared)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(2)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.timeout.min(Duration::from_secs(3)))
                    .operation_timeout(LONG_POLL + options.timeout)
                    .build(),
            );
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        ChangeQueue {
            client: aws_sdk_sqs::Client::from_conf(config.build()),
            url: url.to_string(),
            timeout: LONG_POLL + options.timeout,
        }
    }

    /// Waits up to `wait` (at most [`LONG_POLL`]) for messages; an empty list when none came.
    pub async fn receive(&self, wait: Duration) -> Result<Vec<QueueMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .wait_time_seconds(wait.min(LONG_POLL).as_secs() as i32)
            .max_number_of_messages(BATCH)
            .send()
            .await
            .map_err(|error| self.failed(explain_call("SQS", &error, self.timeout)))?;
        Ok(output
            .messages()
            .iter()
            .filter_map(|message| {
                Some(QueueMessage {
                    body: message.body()?.to_string(),
                    receipt: message.receipt_handle()?.to_string(),
                })
            })
            .collect())
    }

    /// Deletes the messages with these receipt handles (at most ten, one request).
    pub async fn delete(&self, receipts: &[String]) -> Result<(), QueueError> {
        if receipts.is_empty() {
            return Ok(());
        }
        let entries = receipts
            .iter()
            .take(BATCH as usize)
            .enumerate()
            .map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .map_err(|error| self.failed(error.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| self.failed(explain_call("SQS", &error, self.timeout)))?;
        match output.failed().first() {
            None => Ok(()),
            Some(failed) => Err(self.failed(format!(
                "{} of {} messages not deleted: {}",
                output.failed().len(),
                receipts.len(),
                failed.code()
            ))),
        }
    }

    fn failed(&self, message: String) -> QueueError {
        QueueError {
            queue: self.url.clone(),
            message,
        }
    }
}
