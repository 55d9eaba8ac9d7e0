//! Asking the reloader: why a reload was asked for ([`Trigger`]), the request
//! ([`ReloadRequest`]) that SIGHUP, `POST /refresh`, the file store's watcher and the reloader's
//! own timers send, and what
//! comes back ([`ReloadOutcome`], [`ReloadError`]). Kept apart from the reloader so that the
//! state every connection shares can hold the request channel without depending on the reloader.

use crate::generation::RollbackError;
use crate::keyset::LoadError;
use crate::metrics::ReloadTrigger;
use heare_auth_store::StoreError;
use heare_auth_store::codec::CodecError;
use heare_auth_store::safe_file::SafeFileError;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Why a reload was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Http,
    Poll,
    Retry,
    /// An S3 event for the key object arrived on the notify queue.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))] // only the queue listener sends it
    Notify,
    /// S3 events for change objects of the log only, the highest numbered this: those changes
    /// are read (nothing past them, no look at the key object) when they follow on.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    NotifyChange(u64),
    /// The file store's watcher saw the key file change (or is starting).
    Watch,
}

impl Trigger {
    /// The name logged with the reload.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "sighup",
            Trigger::Http => "http",
            Trigger::Poll => "poll",
            Trigger::Retry => "retry",
            Trigger::Notify | Trigger::NotifyChange(_) => "notify",
            Trigger::Watch => "watch",
        }
    }

    /// The trigger as `heare_auth_reloads_total` labels it.
    pub fn metric(self) -> ReloadTrigger {
        match self {
            Trigger::Signal => ReloadTrigger::Signal,
            Trigger::Http => ReloadTrigger::Http,
            Trigger::Poll => ReloadTrigger::Poll,
            Trigger::Retry => ReloadTrigger::Retry,
            Trigger::Notify | Trigger::NotifyChange(_) => ReloadTrigger::Notify,
            Trigger::Watch => ReloadTrigger::Watch,
        }
    }

    /// Whether the reload follows the change log and then fetches the key object only if its
    /// stored version changed (everything but SIGHUP: the timers, a queue message, which anyone
    /// allowed to send to the queue could forge, the file watcher, and `/refresh`, which
    /// heare-authctl sends after every write), rather than the whole object (SIGHUP: the
    /// operator asked for everything to be read again).
    pub fn is_conditional(self) -> bool {
        self != Trigger::Signal
    }
}

/// Why one load happens, as the log and `heare_auth_reloads_total` name it: the trigger that
/// asked, or what following the change log found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause {
    pub name: &'static str,
    pub metric: ReloadTrigger,
}

impl From<Trigger> for Cause {
    fn from(trigger: Trigger) -> Self {
        Cause {
            name: trigger.name(),
            metric: trigger.metric(),
        }
    }
}

impl Cause {
    /// A load the change log called for (`change_gap`, `fold`, `snapshot`).
    pub fn of(metric: ReloadTrigger) -> Self {
        Cause {
            name: metric.name(),
            metric,
        }
    }
}

/// The result of a reload: keys now served, or why the load failed.
pub type ReloadOutcome = Result<usize, ReloadError>;

/// A request to reload, with an optional channel for the outcome.
pub struct ReloadRequest {
    pub trigger: Trigger,
    pub reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// Why a key set could not be loaded. Cloned to every request a load answers; the texts never
/// hold a secret (see each source's own error type).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The stored body was read but is not a usable key file: the object and its version are
    /// named, since "which upload is bad" is the operator's next question.
    #[error("{store} version {version}: {cause}")]
    Body {
        store: String,
        version: String,
        cause: BodyError,
    },
    #[error("the store answered 'not modified' to an unconditional read")]
    NotModifiedUnasked,
    /// The store holds no object where a generation had been served.
    #[error("{store}: {cause}")]
    Emptied { store: String, cause: RollbackError },
    #[error("the last-known-good cache {path} is unusable: {cause}")]
    Cache { path: PathBuf, cause: BodyError },
    #[error("the key set build was cancelled: {0}")]
    Cancelled(String),
}

/// Why a body (from the store or the cache) did not become a key set.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error(transparent)]
    Keys(Arc<LoadError>),
    #[error(transparent)]
    File(Arc<SafeFileError>),
    #[error(transparent)]
    Rollback(RollbackError),
}
