//! A write as a numbered change of the log beside the key object.
//!
//! Each attempt reads the key object, reads what the log holds beyond it (`change_seq`), folds
//! that in (an earlier writer stopped between its two steps: said on stderr), applies the
//! command, and commits the change as change n+1 with a create-only write. Of two writers racing
//! for n+1 exactly one commits; the other re-reads and re-applies its command on the new state.
//! Then the key object is rewritten (If-Match) with `change_seq = n+1`. A conflict there (someone
//! folded or wrote meanwhile) re-reads and folds again; once the key object contains the change,
//! the write is done. So there is no lost update, no gap and no duplicate number.
//!
//! A change of more than [`MAX_KEYS`] keys, the first change after the key object was written by
//! a writer that keeps no log (the Python service's CLI, an older heare-authctl), and a
//! re-encryption are `snapshot` changes: daemons load the key object for them. A snapshot only its
//! writer can fold (by applying its command again); another writer waits for it for
//! [`SNAPSHOT_WAIT`] after its time, then skips it as abandoned, and says so.

use crate::author;
use crate::context::{Context, Reading};
use crate::error::CtlError;
use crate::keyview;
use heare_auth_store::change::{Change, FORMAT, KeyChange, MAX_KEYS, SNAPSHOT};
use heare_auth_store::change_fold::{fold, touched_keys};
use heare_auth_store::change_log::ChangeLog;
use heare_auth_store::codec::{self, StorageSecret};
use heare_auth_store::keyfile::{Document, StoredDocument, Touched};
use heare_auth_store::{StoreError, WriteCondition, timestamp};
use rand::Rng;
use std::time::Duration;

/// Tries of one write before exit code 4.
pub const ATTEMPTS: u32 = 16;

/// How long another writer's snapshot that the key object lacks is waited for.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

/// Most change objects a listing goes through (to find the end of the log, or for `log`).
pub const LIST_LIMIT: usize = 1_000_000;

/// Most change objects read beyond the key object before a writer gives up.
const PROBE_LIMIT: u64 = 100_000;

/// What a write is, for the change's record.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub name: &'static str,
    pub reading: Reading,
}

/// The log beyond what the key object contains.
struct Beyond {
    /// The last number of the log.
    head: u64,
    /// The changes after the key object's `change_seq`, in order.
    pending: Vec<Change>,
    /// The key object has no `change_seq` while the log has changes: a writer that keeps no log
    /// wrote it last.
    foreign: bool,
}

/// Our change, once committed.
struct Committed<T> {
    change: Change,
    outcome: T,
}

/// Applies `change` to the key object and commits it as one change of the log, `operation`
/// naming it in the record, retrying on concurrent writers.
pub async fn edit<T>(
    context: &Context,
    operation: &'static str,
    change: impl FnMut(&mut Document) -> Result<T, CtlError>,
) -> Result<T, CtlError> {
    let operation = Operation {
        name: operation,
        reading: Reading::AsStored,
    };
    edit_as(context, operation, change).await
}

/// As [`edit`], reading the key object as `operation.reading` says.
async fn edit_as<T>(
    context: &Context,
    operation: Operation,
    mut change: impl FnMut(&mut Document) -> Result<T, CtlError>,
) -> Result<T, CtlError> {
    let log = context.change_log()?;
    let mut committed: Option<Committed<T>> = None;
    for attempt in 1..=ATTEMPTS {
        let (mut stored, condition) = context.read_as(operation.reading).await?;
        let served = context.check_generation(&stored.document)?;
        let beyond = read_beyond(context, log, &stored, operation.reading).await?;
        if let Some(ours) = &committed
            && stored.document.change_seq() >= Some(ours.change.seq)
        {
            break;
        }
        if stored.document.store_id().is_none() {
            if beyond.head == 0 || condition == WriteCondition::IfAbsent {
                // A new log, or a new key object beside an old log (the object was deleted: the
                // old changes are no longer its): writers agree on an identity first.
                if !establish_identity(context, stored, condition, served, beyond.head).await? {
                    pause(attempt).await;
                }
                continue;
            }
            // A writer that keeps no log rewrote the key object and dropped the identity: it
            // is the log's, as its newest change says.
            let id = identity_of_log(context, log, beyond.head, operation.reading).await?;
            stored.document.set_store_id(&id);
        }
        catch_up(&mut stored.document, &beyond, &mut committed, &mut change)?;
        if committed.is_none() {
            stored.document.clear_touched();
            let outcome = change(&mut stored.document)?;
            let snapshot = beyond.foreign;
            let proposal = Proposal {
                operation: operation.name,
                seq: next_seq(log, beyond.head)?,
                snapshot,
            };
            let principal = context.aws_principal().await;
            let record = record(context, principal, &stored, proposal);
            match log
                .create(record.seq, encode(context, &stored, &record))
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => {
                    pause(attempt).await;
                    continue;
                }
                Err(error) => return Err(not_committed(error)),
            }
            committed = Some(Committed {
                change: record,
                outcome,
            });
        }
        let head = beyond
            .head
            .max(committed.as_ref().map_or(0, |c| c.change.seq));
        stored.document.set_change_seq(head);
        let body = context.encode(&mut stored, served)?;
        match context.store.put_at_change(body, condition, head).await {
            Ok(_) => break,
            Err(StoreError::Conflict { .. }) => pause(attempt).await,
            Err(error) => return Err(committed_only(error, committed.map(|c| c.change))),
        }
        if attempt == ATTEMPTS && committed.is_some() {
            eprintln!(
                "warning: the key object kept changing; the change is committed in the log and the next write brings the key object up to date"
            );
        }
    }
    match committed {
        Some(ours) => Ok(ours.outcome),
        None => Err(CtlError::Conflict(format!(
            "{} kept changing during {ATTEMPTS} attempts; nothing was written, try again",
            context.store.describe()
        ))),
    }
}

/// Writes `stored` (changed from `read_as`, as the operator reviewed it) once, as one snapshot
/// change, only if the store still holds the version it was read at and the log has nothing
/// beyond it; a conflict is exit code 4 with `changed` as the reason (no retry: what was shown
/// to the operator is what is written).
pub async fn write_once(
    context: &Context,
    operation: &'static str,
    stored: &StoredDocument,
    read_as: &StoredDocument,
    condition: WriteCondition,
    changed: &str,
) -> Result<(), CtlError> {
    let operation = Operation {
        name: operation,
        reading: Reading::Encrypting,
    };
    let log = context.change_log()?;
    let conflict = || {
        CtlError::Conflict(format!(
            "{} {changed}; nothing was written, run again",
            context.store.describe()
        ))
    };
    let served = context.check_generation(&stored.document)?;
    let beyond = read_beyond(context, log, read_as, operation.reading).await?;
    if !beyond.pending.is_empty() {
        return Err(conflict());
    }
    let mut stored = stored.clone();
    if read_as.document.store_id().is_none() {
        if beyond.head == 0 {
            return Err(conflict()); // prepare() gave it one: someone rewrote the key object since
        }
        let id = identity_of_log(context, log, beyond.head, operation.reading).await?;
        stored.document.set_store_id(&id);
    }
    let seq = next_seq(log, beyond.head)?;
    let proposal = Proposal {
        operation: operation.name,
        seq,
        snapshot: true,
    };
    let principal = context.aws_principal().await;
    let record = record(context, principal, &stored, proposal);
    match log.create(seq, encode(context, &stored, &record)).await {
        Ok(()) => {}
        Err(StoreError::Conflict { .. }) => return Err(conflict()),
        Err(error) => return Err(not_committed(error)),
    }
    stored.document.set_change_seq(seq);
    let body = context.encode(&mut stored, served)?;
    match context.store.put_at_change(body, condition, seq).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { store }) => Err(CtlError::Conflict(format!(
            "{store} {changed}; the key object was not written (change {seq}, committed for it, announces a snapshot that never came: writers skip it after {}s), run again",
            SNAPSHOT_WAIT.as_secs()
        ))),
        Err(error) => Err(committed_only(error, Some(record))),
    }
}

/// Gives the key object its store identity, `store_` and 20 random base62 characters, with a
/// conditional write of its own before any change is committed: of writers racing to do so one
/// wins and the others read its identity, so every change names the same store. `change_seq` is
/// set to `head`, the log's last number (0 for a new log), where the numbering goes on. Returns
/// whether the write went through (`false`: someone else wrote first, read again).
async fn establish_identity(
    context: &Context,
    mut stored: StoredDocument,
    condition: WriteCondition,
    served: Option<u64>,
    head: u64,
) -> Result<bool, CtlError> {
    let id = format!("store_{}", crate::secrets::random_base62(20));
    stored.document.set_store_id(&id);
    stored.document.set_change_seq(head);
    let body = context.encode(&mut stored, served)?;
    match context.store.put_at_change(body, condition, head).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict { .. }) => Ok(false),
        Err(error) => Err(crate::context::write_error(error)),
    }
}

/// Gives the key object its identity if it has none (for a command that writes once).
pub async fn prepare(context: &Context, reading: Reading) -> Result<(), CtlError> {
    let log = context.change_log()?;
    for attempt in 1..=ATTEMPTS {
        let (stored, condition) = context.read_as(reading).await?;
        if stored.document.store_id().is_some() {
            return Ok(());
        }
        let served = context.check_generation(&stored.document)?;
        let beyond = read_beyond(context, log, &stored, reading).await?;
        if beyond.head > 0 && condition != WriteCondition::IfAbsent {
            // The identity is the log's; the write that follows records it.
            return Ok(());
        }
        if establish_identity(context, stored, condition, served, beyond.head).await? {
            return Ok(());
        }
        pause(attempt).await;
    }
    Err(CtlError::Conflict(format!(
        "{} kept changing during {ATTEMPTS} attempts; nothing was written, try again",
        context.store.describe()
    )))
}

/// The store identity the log's change `head` names (checked as a change of that number).
async fn identity_of_log(
    context: &Context,
    log: &dyn ChangeLog,
    head: u64,
    reading: Reading,
) -> Result<String, CtlError> {
    let body = log.read(head).await?.ok_or_else(|| {
        CtlError::Conflict(format!(
            "change {head} of the log went away while it was read; nothing was written, try again"
        ))
    })?;
    let secret = change_secret(context.config.store.storage_secret.as_ref(), &body, reading);
    Change::decode_naming_store(&body, secret, head)
        .map(|change| change.store_id)
        .map_err(|e| invalid_change(log, head, &e))
}

/// Folds the changes the key object lacks into it: another writer's (said on stderr), and our
/// own once committed (a snapshot of ours by applying the command again).
fn catch_up<T>(
    document: &mut Document,
    beyond: &Beyond,
    committed: &mut Option<Committed<T>>,
    change: &mut impl FnMut(&mut Document) -> Result<T, CtlError>,
) -> Result<(), CtlError> {
    let ours = committed.as_ref().map(|c| c.change.seq);
    let others: Vec<&Change> = beyond
        .pending
        .iter()
        .filter(|c| Some(c.seq) != ours)
        .collect();
    if let (Some(first), Some(last)) = (others.first(), others.last()) {
        eprintln!(
            "the key object lacked changes {}..{} of the log (a writer stopped before rewriting it): brought up to date",
            first.seq, last.seq
        );
    }
    for pending in &beyond.pending {
        match committed {
            Some(ours) if ours.change.seq == pending.seq && ours.change.is_snapshot() => {
                ours.outcome = change(document)?;
            }
            _ if pending.is_snapshot() => skip_or_wait(pending)?,
            _ => {
                fold(document, &pending.keys);
            }
        }
    }
    if beyond.foreign
        && let Some(ours) = committed
    {
        // The key object was rewritten by a writer that keeps no log after our commit: ours is
        // applied again on what it wrote.
        match ours.change.is_snapshot() {
            true => ours.outcome = change(document)?,
            false => {
                fold(document, &ours.change.keys);
            }
        }
    }
    Ok(())
}

/// Another writer's snapshot the key object lacks: wait for it while it is recent, skip it after.
fn skip_or_wait(snapshot: &Change) -> Result<(), CtlError> {
    let age = timestamp::parse(&snapshot.time)
        .map(|at| timestamp::now().saturating_sub(at))
        .unwrap_or(i64::MAX);
    if age < SNAPSHOT_WAIT.as_millis() as i64 {
        return Err(CtlError::Conflict(format!(
            "change {} ({} by {} at {}) is a snapshot whose writer has not rewritten the key object yet; nothing was written, try again in a minute",
            snapshot.seq,
            keyview::shown(&snapshot.operation),
            keyview::shown(&snapshot.author.user),
            keyview::shown(&snapshot.time)
        )));
    }
    eprintln!(
        "warning: change {} ({} by {} at {}) announced a snapshot that never reached the key object (its writer stopped): skipped",
        snapshot.seq,
        keyview::shown(&snapshot.operation),
        keyview::shown(&snapshot.author.user),
        keyview::shown(&snapshot.time)
    );
    Ok(())
}

/// What a write proposes to commit: its operation, its number, and whether daemons must load
/// the key object for it.
struct Proposal<'a> {
    operation: &'a str,
    seq: u64,
    snapshot: bool,
}

/// The change object for the keys `stored` says the command touched.
fn record(
    context: &Context,
    principal: Option<String>,
    stored: &StoredDocument,
    proposal: Proposal<'_>,
) -> Change {
    let Proposal {
        operation,
        seq,
        snapshot,
    } = proposal;
    let keys: Vec<KeyChange> = touched_keys(&stored.document).unwrap_or_default();
    let every_key = matches!(stored.document.touched(), Touched::Every);
    let snapshot = snapshot || every_key || keys.len() > MAX_KEYS;
    Change {
        format: FORMAT.into(),
        seq,
        store_id: stored.document.store_id().unwrap_or_default().to_string(),
        operation: if snapshot { SNAPSHOT } else { operation }.into(),
        keys: if snapshot { Vec::new() } else { keys },
        time: timestamp::format(timestamp::now()),
        author: author::current(principal),
        ctl_version: env!("CARGO_PKG_VERSION").into(),
        reason: context.reason.clone().map(|reason| match snapshot {
            true => format!("{operation}: {reason}"),
            false => reason,
        }),
    }
}

/// The change as stored: encrypted when the key object is.
fn encode(context: &Context, stored: &StoredDocument, change: &Change) -> Vec<u8> {
    let secret = context.config.store.storage_secret.as_ref();
    change.encode(secret.filter(|_| stored.encrypted))
}

/// The highest number a change may have: far beyond any real log, far below where the numbers
/// would wrap (a number planted near `u64::MAX` stops writers instead of wrapping them around).
pub const MAX_SEQ: u64 = 1_000_000_000_000_000_000;

/// The number after `head`, or an error naming a log numbered past [`MAX_SEQ`].
fn next_seq(log: &dyn ChangeLog, head: u64) -> Result<u64, CtlError> {
    match head {
        head if head < MAX_SEQ => Ok(head + 1),
        head => Err(invalid_change(
            log,
            head,
            &"its number is beyond any real log (planted?)",
        )),
    }
}

/// Reads the log beyond the key object: the changes after its `change_seq`, each checked (an
/// invalid one stops every writer, naming it); without a `change_seq`, the log's last number.
async fn read_beyond(
    context: &Context,
    log: &dyn ChangeLog,
    stored: &StoredDocument,
    reading: Reading,
) -> Result<Beyond, CtlError> {
    let Some(from) = stored.document.change_seq() else {
        let numbers = log.list(LIST_LIMIT).await?;
        let head = numbers.last().copied().unwrap_or(0);
        next_seq(log, head)?;
        return Ok(Beyond {
            head,
            pending: Vec::new(),
            foreign: head > 0,
        });
    };
    let store_id = stored.document.store_id().unwrap_or_default();
    let secret = context.config.store.storage_secret.as_ref();
    let mut pending = Vec::new();
    let mut seq = from;
    while let Some(body) = read_change(log, next_seq(log, seq)?).await? {
        seq += 1;
        let secret = change_secret(secret, &body, reading);
        let change = Change::decode(&body, secret, seq, store_id)
            .map_err(|error| invalid_change(log, seq, &error))?;
        pending.push(change);
        if seq - from >= PROBE_LIMIT {
            return Err(CtlError::Other(format!(
                "the log holds more than {PROBE_LIMIT} changes beyond the key object; nothing was written"
            )));
        }
    }
    Ok(Beyond {
        head: seq,
        pending,
        foreign: false,
    })
}

/// Change `seq`'s body; something at its name that is not a change object (a link, a FIFO, a
/// directory) stops writers as an invalid change does.
async fn read_change(log: &dyn ChangeLog, seq: u64) -> Result<Option<Vec<u8>>, CtlError> {
    match log.read(seq).await {
        Ok(body) => Ok(body),
        Err(StoreError::NotAnObject { message, .. }) => Err(invalid_change(log, seq, &message)),
        Err(error) => Err(error.into()),
    }
}

/// The secret a change is decoded with: for `migrate --encrypt` a plain change is accepted, as
/// the plain key object is.
fn change_secret<'s>(
    secret: Option<&'s StorageSecret>,
    body: &[u8],
    reading: Reading,
) -> Option<&'s StorageSecret> {
    match reading {
        Reading::Encrypting if !codec::is_encrypted(body) => None,
        _ => secret,
    }
}

fn invalid_change(log: &dyn ChangeLog, seq: u64, error: &dyn std::fmt::Display) -> CtlError {
    CtlError::Other(format!(
        "change {seq} of the log ({}) cannot be applied: {error}. Nothing was written: writers stop at it. Inspect who wrote it, then remove it with `heare-authctl compact --drop-invalid {seq}`",
        log.describe(seq)
    ))
}

/// The commit failed in a way that does not say whether the object was created (an S3 answer
/// that never came, a failing disk): nothing else was written, and `log` tells.
fn not_committed(error: StoreError) -> CtlError {
    if let StoreError::Locked { .. } = error {
        // The commit waited for the key file's lock and never wrote: certainly nothing.
        return crate::context::write_error(error);
    }
    CtlError::Other(format!(
        "cannot commit the change to the log: {error}; the key object was not written, and the change may or may not be in the log (`heare-authctl log` shows it): run the command again only if it is not"
    ))
}

fn committed_only(error: StoreError, committed: Option<Change>) -> CtlError {
    let told = crate::context::write_error(error);
    match committed {
        Some(change) if change.is_snapshot() => CtlError::Other(format!(
            "change {} (a snapshot) is committed in the log, but the key object could not be rewritten: {told}. Other writers wait for it for {}s, then skip it: run the command again after that",
            change.seq,
            SNAPSHOT_WAIT.as_secs()
        )),
        Some(change) => CtlError::Other(format!(
            "change {} is committed in the log, but the key object could not be rewritten: {told}; the next write brings it up to date",
            change.seq
        )),
        None => CtlError::Other(format!("the key object could not be rewritten: {told}")),
    }
}

async fn pause(attempt: u32) {
    let jitter = rand::rng().random_range(20..100) * u64::from(attempt.min(8));
    tokio::time::sleep(Duration::from_millis(jitter)).await;
}
