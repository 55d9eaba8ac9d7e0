//! What the queue listener has seen, for `/status` and `/metrics`: messages by what they meant,
//! failed queue calls, whether the last call worked, and the last error with its time. Written by
//! the one listener task, read by admin requests and scrapes; counts are atomics, the error text
//! sits behind a mutex that only those touch.

use super::event::Notice;
use heare_auth_client::wire::NotifyStatus;
use heare_auth_store::timestamp::{self, UnixMillis};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// The listener's record of the queue at `url`.
pub struct QueueState {
    pub url: String,
    /// `[Notice as usize]`, in the order of [`Notice::ALL`].
    messages: [AtomicU64; 3],
    errors: AtomicU64,
    /// Whether the last queue call succeeded (false until the first does).
    up: AtomicBool,
    last_receive_at: AtomicI64,
    last_error: Mutex<Option<(String, UnixMillis)>>,
}

/// The counts `/metrics` shows.
#[derive(Debug, Clone, Copy)]
pub struct QueueCounts {
    pub messages: [(Notice, u64); 3],
    pub errors: u64,
    pub up: bool,
}

impl QueueState {
    pub fn new(url: String) -> Self {
        QueueState {
            url,
            messages: Default::default(),
            errors: AtomicU64::new(0),
            up: AtomicBool::new(false),
            last_receive_at: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// A receive answered (with or without messages).
    #[cfg_attr(not(feature = "s3"), allow(dead_code))] // only the listener writes
    pub fn received(&self, notices: &[Notice]) {
        for notice in notices {
            self.messages[*notice as usize].fetch_add(1, Ordering::Relaxed);
        }
        self.up.store(true, Ordering::Relaxed);
        self.last_receive_at
            .store(timestamp::now(), Ordering::Relaxed);
    }

    /// A queue call failed with `error` (already logged).
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub fn failed(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.up.store(false, Ordering::Relaxed);
        *self.error_slot() = Some((error, timestamp::now()));
    }

    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            messages: Notice::ALL.map(|n| (n, self.messages[n as usize].load(Ordering::Relaxed))),
            errors: self.errors.load(Ordering::Relaxed),
            up: self.up.load(Ordering::Relaxed),
        }
    }

    /// The record as `/status` shows it.
    pub fn status(&self) -> NotifyStatus {
        let counts = self.counts();
        let received = self.last_receive_at.load(Ordering::Relaxed);
        let last_error = self.error_slot().clone();
        NotifyStatus {
            queue: self.url.clone(),
            receiving: counts.up,
            last_receive_at: (received > 0).then(|| timestamp::format(received)),
            last_error: last_error.as_ref().map(|(text, _)| text.clone()),
            last_error_at: last_error.map(|(_, at)| timestamp::format(at)),
            errors: counts.errors,
            messages: counts
                .messages
                .iter()
                .map(|(notice, n)| (notice.name().to_string(), *n))
                .collect(),
        }
    }

    fn error_slot(&self) -> std::sync::MutexGuard<'_, Option<(String, UnixMillis)>> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
