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

/// Reads the changes of the store `store_id` after number `after`, through `until` at most (then
/// without asking for the number after it).
pub async fn read_after(
    log: &dyn ChangeLog,
    secret: Option<&StorageSecret>,
    store_id: &str,
    after: u64,
    until: u64,
) -> Reading {
    let mut changes = Vec::new();
    let mut bodies = Vec::new();
    let mut seq = after;
    let stop = loop {
        if changes.len() >= MAX_PER_READING {
            break Stop::Full;
        }
        let Some(next) = seq.checked_add(1).filter(|&next| next <= until) else {
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
    /// The overlay passed [`FOLD_AFTER`]: more may follow once it is folded.
    Full,
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

/// Keys in the overlay past which a follow stops reading and the reloader folds it into a new
/// base (the key object loaded again, off the request path): 10,000 keys cost about 10 ms to
/// index at each change and keep a verify within a few percent of an empty overlay's.
pub const FOLD_AFTER: usize = 10_000;

/// The most changes applied over a freshly loaded key object; a log running further past it
/// stops there (planted changes must not take unbounded memory).
pub const MAX_BEYOND_BASE: u64 = 100_000;

/// How a follow treats what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// The keys served: stop once the overlay passes [`FOLD_AFTER`] ([`End::Full`]).
    Served,
    /// A key object just loaded: read on up to [`MAX_BEYOND_BASE`]; a removal of a key it does
    /// not hold is no change (the key object is the authority on what exists).
    FreshBase,
}

/// Applies every change of the log after `served`'s, reading at most [`MAX_PER_READING`] at a
/// time and applying each reading at once, off the async threads; a reading that does not apply
/// is applied change by change up to the one that does not, whose number the end names.
pub async fn catch_up(
    log: Option<&dyn ChangeLog>,
    secret: Option<&StorageSecret>,
    served: Arc<ServedKeys>,
    over: Over,
) -> CaughtUp {
    catch_up_until(log, secret, served, over, u64::MAX).await
}

/// [`catch_up`] through change `until` at most.
pub async fn catch_up_until(
    log: Option<&dyn ChangeLog>,
    secret: Option<&StorageSecret>,
    served: Arc<ServedKeys>,
    over: Over,
    until: u64,
) -> CaughtUp {
    let mut caught = CaughtUp::starting(served, End::NotFollowing);
    let (Some(log), Some(mut seq), Some(store_id)) = (
        log,
        caught.served.change_seq(),
        caught.served.store_id().map(str::to_owned),
    ) else {
        return caught;
    };
    loop {
        let reading = read_after(log, secret, &store_id, seq, until).await;
        if let Some(last) = reading.last_seq() {
            if let Err((at, reason)) =
                apply_in_order(&mut caught, reading.changes, reading.bodies, over).await
            {
                caught.end = End::Stuck { seq: at, reason };
                return caught;
            }
            seq = last;
        }
        caught.end = match reading.stop {
            Stop::Full if over == Over::Served && caught.served.overlay_len() > FOLD_AFTER => {
                End::Full
            }
            Stop::Full if over == Over::FreshBase && caught.applied >= MAX_BEYOND_BASE => {
                End::Stuck {
                    seq: seq.saturating_add(1),
                    reason: format!(
                        "the log runs more than {MAX_BEYOND_BASE} changes past the key object"
                    ),
                }
            }
            Stop::Full => continue,
            Stop::UpToDate => End::UpToDate,
            Stop::Snapshot(at) => End::Snapshot(at),
            Stop::Invalid { seq, reason } => End::Stuck { seq, reason },
            Stop::Unreadable(error) => End::Unreadable(error),
        };
        return caught;
    }
}

/// Applies `changes` (with their `bodies`) to `caught`: all at once, else one by one up to the
/// first that does not apply, whose number and reason come back.
async fn apply_in_order(
    caught: &mut CaughtUp,
    changes: Vec<Change>,
    bodies: Vec<Vec<u8>>,
    over: Over,
) -> Result<(), (u64, String)> {
    let Some(first) = changes.first().map(|change| change.seq) else {
        return Ok(());
    };
    let tolerant = over == Over::FreshBase;
    let all = apply(&caught.served, changes.clone(), tolerant).await;
    let reason = match all {
        Ok(next) => {
            caught.accept(next, changes.len(), bodies);
            return Ok(());
        }
        Err(reason) if changes.len() == 1 => return Err((first, reason)),
        Err(reason) => reason,
    };
    tracing::debug!(%reason, "change_batch_applied_one_by_one");
    for (change, body) in changes.into_iter().zip(bodies) {
        let seq = change.seq;
        let next = apply(&caught.served, vec![change], tolerant)
            .await
            .map_err(|reason| (seq, reason))?;
        caught.accept(next, 1, vec![body]);
    }
    Ok(())
}

impl CaughtUp {
    /// `served` with nothing applied yet, ending as `end` unless something is.
    fn starting(served: Arc<ServedKeys>, end: End) -> Self {
        CaughtUp {
            served,
            applied: 0,
            bodies: Vec::new(),
            skipped: Vec::new(),
            end,
        }
    }

    fn accept(
        &mut self,
        (next, skipped): (Arc<ServedKeys>, Vec<SkippedKey>),
        count: usize,
        bodies: Vec<Vec<u8>>,
    ) {
        self.served = next;
        self.applied += count as u64;
        self.bodies.extend(bodies);
        self.skipped.extend(skipped);
    }
}

/// `served` with `changes` applied, on a blocking thread; `tolerant`: a removal of a key that is
/// not served is no change.
async fn apply(
    served: &Arc<ServedKeys>,
    changes: Vec<Change>,
    tolerant: bool,
) -> Result<(Arc<ServedKeys>, Vec<SkippedKey>), String> {
    let last = changes.last().map_or(0, |change| change.seq);
    let from = served.clone();
    let applied = tokio::task::spawn_blocking(move || {
        let keys = changes.iter().flat_map(|change| &change.keys);
        from.apply(last, keys, tolerant)
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
    let mut caught = CaughtUp::starting(served, End::UpToDate);
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
            Ok(change) if Some(change.seq) == seq.checked_add(1) && change.store_id == store_id => {
                change
            }
            Ok(change) => {
                caught.end = stuck(
                    change.seq,
                    "it does not follow on from the cached key object",
                );
                break;
            }
            Err(error) => {
                caught.end = stuck(seq.saturating_add(1), &error.to_string());
                break;
            }
        };
        seq = next.seq;
        changes.push(next);
        caught.bodies.push(body);
    }
    let bodies = std::mem::take(&mut caught.bodies);
    if let Err((at, reason)) = apply_in_order(&mut caught, changes, bodies, Over::FreshBase).await {
        caught.end = stuck(at, &reason);
    }
    caught
}

fn stuck(seq: u64, reason: &str) -> End {
    End::Stuck {
        seq,
        reason: format!("the cached change: {reason}"),
    }
}
