//! Reading the change log beyond the keys served: the change objects numbered after the served
//! `change_seq`, one GET each, until the first number that is not there yet.
//!
//! A missing number is "nothing new" (the reloader decides whether it is a gap: the key object
//! says a later change exists). A change that cannot be used — unreadable, plain under a storage
//! secret, another number or store inside, not a change object at all — stops the reading there
//! with the reason, and the reloader loads the key object instead. A read that fails (S3's 403
//! for a log the daemon may not list, a network error) stops it too, and the key object's poll
//! goes on as the fallback. Nothing here logs a change's content.

use crate::keyset::{ServedKeys, SkippedKey};
use heare_auth_store::StoreError;
use heare_auth_store::change::Change;
use heare_auth_store::change_log::ChangeLog;
use heare_auth_store::codec::StorageSecret;
use std::sync::Arc;

/// The most change objects one reading fetches; the next reading goes on from there.
pub const MAX_PER_READING: usize = 1000;

/// Why a reading stopped.
#[derive(Debug)]
pub enum Stop {
    /// The next number is not there: the log has nothing more (for now).
    UpToDate,
    /// [`MAX_PER_READING`] changes were read; more may follow.
    Full,
    /// Change `seq` is a snapshot: the key object contains it and must be loaded.
    Snapshot(u64),
    /// Change `seq` cannot be used, for `reason`.
    Invalid { seq: u64, reason: String },
    /// The log could not be read.
    Unreadable(StoreError),
}

/// The usable changes read, in order, with their bodies as stored, and why the reading stopped.
#[derive(Debug)]
pub struct Reading {
    pub changes: Vec<Change>,
    pub bodies: Vec<Vec<u8>>,
    pub stop: Stop,
}

impl Reading {
    /// The number of the last change read, if any.
    pub fn last_seq(&self) -> Option<u64> {
        self.changes.last().map(|change| change.seq)
    }
}

/// Reads the changes of the store `store_id` after number `after`.
pub async fn read_after(
    log: &dyn ChangeLog,
    secret: Option<&StorageSecret>,
    store_id: &str,
    after: u64,
) -> Reading {
    let mut changes = Vec::new();
    let mut bodies = Vec::new();
    let mut seq = after;
    let stop = loop {
        if changes.len() >= MAX_PER_READING {
            break Stop::Full;
        }
        let Some(next) = seq.checked_add(1) else {
            break Stop::UpToDate;
        };
        match read_one(log, secret, store_id, next).await {
            Ok(Some((change, _))) if change.is_snapshot() => break Stop::Snapshot(next),
            Ok(Some((change, body))) => {
                changes.push(change);
                bodies.push(body);
            }
            Ok(None) => break Stop::UpToDate,
            Err(stop) => break stop,
        }
        seq = next;
    };
    Reading {
        changes,
        bodies,
        stop,
    }
}

/// Change `seq` and its body, `None` when it is not there.
async fn read_one(
    log: &dyn ChangeLog,
    secret: Option<&StorageSecret>,
    store_id: &str,
    seq: u64,
) -> Result<Option<(Change, Vec<u8>)>, Stop> {
    let body = match log.read(seq).await {
        Ok(Some(body)) => body,
        Ok(None) => return Ok(None),
        Err(StoreError::NotAnObject { message, .. }) => {
            return Err(Stop::Invalid {
                seq,
                reason: message,
            });
        }
        Err(error) => return Err(Stop::Unreadable(error)),
    };
    Change::decode(&body, secret, seq, store_id)
        .map(|change| Some((change, body)))
        .map_err(|error| Stop::Invalid {
            seq,
            reason: format!("{}: {error}", log.describe(seq)),
        })
}

/// How following the log from a set ended.
#[derive(Debug)]
pub enum End {
    /// The set names no place in a log (or no log is kept beside this store): nothing to follow.
    NotFollowing,
    /// Every change there is was applied.
    UpToDate,
    /// The next change is a snapshot: the key object is to be loaded once it contains it.
    Snapshot(u64),
    /// The next change cannot be read, used or applied, for `reason`; its number is `seq`.
    Stuck { seq: u64, reason: String },
    /// The log could not be read; the key object's poll stands in for it.
    Unreadable(StoreError),
}

/// The served keys with what could be applied, and how following ended.
pub struct CaughtUp {
    pub served: Arc<ServedKeys>,
    /// Change objects applied.
    pub applied: u64,
    /// Their bodies as stored, in order (for the cache of changes beside the last-known-good one).
    pub bodies: Vec<Vec<u8>>,
    /// Keys of the changes that had to be skipped (an unusable stored form).
    pub skipped: Vec<SkippedKey>,
    pub end: End,
}

/// Applies every change of the log after `served`'s, reading at most [`MAX_PER_READING`] at a
/// time and applying each reading at once, off the async threads. A reading that does not apply
/// leaves the keys as they were before it.
pub async fn catch_up(
    log: Option<&dyn ChangeLog>,
    secret: Option<&StorageSecret>,
    served: Arc<ServedKeys>,
) -> CaughtUp {
    let mut caught = CaughtUp {
        served,
        applied: 0,
        bodies: Vec::new(),
        skipped: Vec::new(),
        end: End::NotFollowing,
    };
    let (Some(log), Some(mut seq), Some(store_id)) = (
        log,
        caught.served.change_seq(),
        caught.served.store_id().map(str::to_owned),
    ) else {
        return caught;
    };
    loop {
        let reading = read_after(log, secret, &store_id, seq).await;
        if let Some(last) = reading.last_seq() {
            let count = reading.changes.len() as u64;
            match apply(&caught.served, reading.changes, last).await {
                Ok((next, skipped)) => {
                    caught.served = next;
                    caught.applied += count;
                    caught.bodies.extend(reading.bodies);
                    caught.skipped.extend(skipped);
                    seq = last;
                }
                Err(reason) => {
                    caught.end = End::Stuck {
                        seq: seq + 1,
                        reason,
                    };
                    return caught;
                }
            }
        }
        caught.end = match reading.stop {
            Stop::Full => continue,
            Stop::UpToDate => End::UpToDate,
            Stop::Snapshot(at) => End::Snapshot(at),
            Stop::Invalid { seq, reason } => End::Stuck { seq, reason },
            Stop::Unreadable(error) => End::Unreadable(error),
        };
        return caught;
    }
}

/// `served` with `changes` (the last numbered `last`) applied, on a blocking thread.
async fn apply(
    served: &Arc<ServedKeys>,
    changes: Vec<Change>,
    last: u64,
) -> Result<(Arc<ServedKeys>, Vec<SkippedKey>), String> {
    let from = served.clone();
    let applied = tokio::task::spawn_blocking(move || {
        from.apply(last, changes.iter().flat_map(|change| &change.keys))
    })
    .await
    .map_err(|error| format!("applying was cancelled: {error}"))?;
    applied
        .map(|(next, skipped)| (Arc::new(next), skipped))
        .map_err(|error| error.to_string())
}

/// Applies change bodies kept beside the last-known-good cache (`bodies`, in order) over a set
/// loaded from that cache: those the set already contains are passed over, the rest must follow
/// on without a gap and decode as changes of its store. Stops at the first that does not, with
/// the reason; the set then serves what came before it.
pub async fn replay(
    secret: Option<&StorageSecret>,
    served: Arc<ServedKeys>,
    bodies: Vec<Vec<u8>>,
) -> CaughtUp {
    let mut caught = CaughtUp {
        served,
        applied: 0,
        bodies: Vec::new(),
        skipped: Vec::new(),
        end: End::UpToDate,
    };
    let (Some(mut seq), Some(store_id)) = (
        caught.served.change_seq(),
        caught.served.store_id().map(str::to_owned),
    ) else {
        caught.end = End::NotFollowing;
        return caught;
    };
    let mut changes = Vec::new();
    for body in bodies {
        let next = match Change::decode_kept(&body, secret) {
            Ok(change) if change.seq <= seq => continue,
            Ok(change) if change.seq == seq + 1 && change.store_id == store_id => change,
            Ok(change) => {
                caught.end = stuck(
                    change.seq,
                    "it does not follow on from the cached key object",
                );
                break;
            }
            Err(error) => {
                caught.end = stuck(seq + 1, &error.to_string());
                break;
            }
        };
        seq = next.seq;
        changes.push(next);
        caught.bodies.push(body);
    }
    if let Some(last) = changes.last().map(|change| change.seq) {
        let count = changes.len() as u64;
        match apply(&caught.served, changes, last).await {
            Ok((next, skipped)) => {
                caught.served = next;
                caught.applied = count;
                caught.skipped = skipped;
            }
            Err(reason) => {
                caught.bodies.clear();
                caught.end = stuck(last, &reason);
            }
        }
    }
    caught
}

fn stuck(seq: u64, reason: &str) -> End {
    End::Stuck {
        seq,
        reason: format!("the cached change: {reason}"),
    }
}
