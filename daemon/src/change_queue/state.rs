//! What the queue listener has seen, for `/status` and `/metrics`: messages by what they meant,
//! failed queue calls, the queue's state (starting until the first call ends, then receiving or
//! failing after each call), and the last error with its time. Written by
//! the one listener task, read by admin requests and scrapes; counts are atomics, the error text
//! sits behind a mutex that only those touch.

use super::event::Notice;
use heare_auth_client::wire::NotifyStatus;
use heare_auth_store::timestamp::{self, UnixMillis};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};

/// The queue's state: no call has ended yet, the last one succeeded, or it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Receiving,
    Failing,
}

impl Health {
    fn of(raw: u8) -> Health {
        match raw {
            1 => Health::Receiving,
            2 => Health::Failing,
            _ => Health::Starting,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Health::Starting => "starting",
            Health::Receiving => "receiving",
            Health::Failing => "failing",
        }
    }
}

/// The listener's record of the queue at `url`.
pub struct QueueState {
    pub url: String,
    /// `[Notice as usize]`, in the order of [`Notice::ALL`].
    messages: [AtomicU64; 3],
    errors: AtomicU64,
    /// A [`Health`], as its discriminant.
    health: AtomicU8,
    last_receive_at: AtomicI64,
    last_error: Mutex<Option<(String, UnixMillis)>>,
}

/// The counts `/metrics` shows.
#[derive(Debug, Clone, Copy)]
pub struct QueueCounts {
    pub messages: [(Notice, u64); 3],
    pub errors: u64,
    pub health: Health,
}

impl QueueState {
    pub fn new(url: String) -> Self {
        QueueState {
            url,
            messages: Default::default(),
            errors: AtomicU64::new(0),
            health: AtomicU8::new(Health::Starting as u8),
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
        self.health
            .store(Health::Receiving as u8, Ordering::Relaxed);
        self.last_receive_at
            .store(timestamp::now(), Ordering::Relaxed);
    }

    /// A queue call failed with `error` (already logged).
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub fn failed(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.health.store(Health::Failing as u8, Ordering::Relaxed);
        *self.error_slot() = Some((error, timestamp::now()));
    }

    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            messages: Notice::ALL.map(|n| (n, self.messages[n as usize].load(Ordering::Relaxed))),
            errors: self.errors.load(Ordering::Relaxed),
            health: Health::of(self.health.load(Ordering::Relaxed)),
        }
    }

    /// The record as `/status` shows it.
    pub fn status(&self) -> NotifyStatus {
        let counts = self.counts();
        let received = self.last_receive_at.load(Ordering::Relaxed);
        let last_error = self.error_slot().clone();
        NotifyStatus {
            queue: self.url.clone(),
            state: counts.health.name().to_string(),
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
