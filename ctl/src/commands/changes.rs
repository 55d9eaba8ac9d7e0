//! `log` and `compact`: the change log's history, and its upkeep.
//!
//! `log` lists the change objects beside the key object, oldest first: number, time, operation,
//! author, reason, and for each key its state after the change — never a secret or a hash (keys
//! are shown as `list` shows them). An object that cannot be read as a change of this store is
//! listed as invalid with the reason. `compact --keep DURATION` deletes the change objects older
//! than DURATION that the key object already contains (never one it lacks: a stopped writer's
//! change is folded in by the next write, and deleting it first would lose it).
//! `compact --drop-invalid N` removes an object at N, beyond the key object, that stops every
//! writer — invalid, numbered past any real log, or a snapshot the key object never got — after
//! confirmation; a valid change that the next write can fold in is never dropped.

use crate::context::Context;
use crate::error::CtlError;
use crate::keyview;
use heare_auth_store::change::{Change, KeyChange};
use heare_auth_store::change_log::ChangeLog;
use heare_auth_store::{StoreError, duration, timestamp};
use serde_json::{Value, json};

/// What `log` shows.
pub struct LogArgs {
    pub since: Option<String>,
    pub from: Option<u64>,
    pub key: Option<String>,
    pub json: bool,
}

/// One entry of the log as read.
enum Entry {
    Change(Box<Change>),
    Invalid { seq: u64, reason: String },
}

pub async fn log(context: &Context, args: &LogArgs) -> Result<(), CtlError> {
    let since = args.since.as_deref().map(since_millis).transpose()?;
    let entries = read_entries(context, args.from.unwrap_or(0)).await?;
    let shown: Vec<&Entry> = entries
        .iter()
        .filter(|entry| matches(entry, since, args.key.as_deref()))
        .collect();
    if args.json {
        let out: Vec<Value> = shown.iter().map(|entry| entry_json(entry)).collect();
        println!("{}", Value::Array(out));
        return Ok(());
    }
    if shown.is_empty() {
        println!("no changes");
    }
    for entry in shown {
        print_entry(entry);
    }
    Ok(())
}

/// `--since`: an ISO 8601 time, or a duration back from now (`24h`, `7d`).
fn since_millis(text: &str) -> Result<i64, CtlError> {
    if let Ok(at) = timestamp::parse(text) {
        return Ok(at);
    }
    let ago = duration::parse(text).map_err(|_| {
        CtlError::Usage(format!(
            "--since: {text:?} is neither an ISO 8601 time nor a duration such as 24h"
        ))
    })?;
    Ok(timestamp::now().saturating_sub(ago.as_millis() as i64))
}

/// The key object's identity and the change objects from number `from` on, each decoded.
async fn read_entries(context: &Context, from: u64) -> Result<Vec<Entry>, CtlError> {
    let (stored, _) = context.read().await?;
    let store_id = stored.document.store_id().unwrap_or_default().to_string();
    let log = context.change_log()?;
    let secret = context.config.store.storage_secret.as_ref();
    let mut entries = Vec::new();
    for seq in log
        .list(crate::commit::LIST_LIMIT)
        .await?
        .into_iter()
        .filter(|n| *n >= from)
    {
        let body = match log.read(seq).await {
            Ok(Some(body)) => body,
            Ok(None) => continue, // compacted meanwhile
            Err(StoreError::NotAnObject { message, .. }) => {
                entries.push(Entry::Invalid {
                    seq,
                    reason: message,
                });
                continue;
            }
            Err(error) => return Err(error.into()),
        };
        entries.push(match Change::decode(&body, secret, seq, &store_id) {
            Ok(change) => Entry::Change(Box::new(change)),
            Err(error) => Entry::Invalid {
                seq,
                reason: error.to_string(),
            },
        });
    }
    Ok(entries)
}

fn matches(entry: &Entry, since: Option<i64>, key: Option<&str>) -> bool {
    let Entry::Change(change) = entry else {
        return true; // an invalid object is always shown: it stops writers
    };
    let recent =
        since.is_none_or(|since| timestamp::parse(&change.time).is_ok_and(|at| at >= since));
    let about_key = key.is_none_or(|id| change.keys.iter().any(|k| k.id == id));
    recent && about_key
}

fn print_entry(entry: &Entry) {
    let change = match entry {
        Entry::Change(change) => change,
        Entry::Invalid { seq, reason } => {
            println!("#{seq} INVALID: {reason}");
            return;
        }
    };
    let login = change
        .author
        .login
        .as_deref()
        .map_or(String::new(), |login| {
            format!(" (login {})", keyview::shown(login))
        });
    let principal = change
        .author
        .aws_principal
        .as_deref()
        .map_or(String::new(), |p| format!(" [{}]", keyview::shown(p)));
    println!(
        "#{} {} {} by {}{login} on {}{principal}, heare-authctl {}",
        change.seq,
        keyview::shown(&change.time),
        keyview::shown(&change.operation),
        keyview::shown(&change.author.user),
        keyview::shown(&change.author.host),
        keyview::shown(&change.ctl_version),
    );
    if let Some(reason) = &change.reason {
        println!("    reason: {}", keyview::shown(reason));
    }
    for key in &change.keys {
        println!("    {}", key_line(key));
    }
}

/// A key's state after the change, as `list` shows keys.
fn key_line(key: &KeyChange) -> String {
    let Some(stored) = &key.key else {
        return format!("{} deleted", keyview::shown(&key.id));
    };
    let now = timestamp::now();
    let field = |name: &str| keyview::text(stored.get(name).unwrap_or(&Value::Null));
    format!(
        "{} {}: name {}, scopes {}, expires {}, rate limit {}",
        keyview::shown(&key.id),
        keyview::state(stored, now),
        field("name"),
        field("scopes"),
        field("expires_at"),
        keyview::rate_limit_text(&keyview::rate_limit_json(stored)),
    )
}

fn entry_json(entry: &Entry) -> Value {
    let change = match entry {
        Entry::Change(change) => change,
        Entry::Invalid { seq, reason } => return json!({"seq": seq, "invalid": reason}),
    };
    let now = timestamp::now();
    let keys: Vec<Value> = change
        .keys
        .iter()
        .map(|key| match &key.key {
            None => json!({"id": key.id, "deleted": true}),
            Some(stored) => {
                let mut shown = keyview::public(stored, now);
                shown["deleted"] = Value::Bool(false);
                shown
            }
        })
        .collect();
    json!({
        "seq": change.seq,
        "time": change.time,
        "operation": change.operation,
        "author": change.author,
        "ctl_version": change.ctl_version,
        "reason": change.reason,
        "keys": keys,
    })
}

/// What `compact` does.
pub struct CompactArgs {
    pub keep: Option<String>,
    pub drop_invalid: Option<u64>,
    pub yes: bool,
}

pub async fn compact(context: &Context, args: &CompactArgs) -> Result<(), CtlError> {
    match (&args.keep, args.drop_invalid) {
        (Some(keep), None) => compact_older(context, keep).await,
        (None, Some(seq)) => drop_invalid(context, seq, args.yes).await,
        _ => Err(CtlError::Usage(
            "compact: give --keep DURATION or --drop-invalid N".into(),
        )),
    }
}

/// Deletes the changes older than `keep` that the key object contains.
async fn compact_older(context: &Context, keep: &str) -> Result<(), CtlError> {
    let keep = duration::parse(keep).map_err(|e| CtlError::Usage(format!("--keep: {e}")))?;
    let cutoff = timestamp::now().saturating_sub(keep.as_millis() as i64);
    let (stored, _) = context.read().await?;
    let contained = stored.document.change_seq().unwrap_or(0);
    let entries = read_entries(context, 0).await?;
    let log = context.change_log()?;
    // The newest object stays whatever its age: it marks where the numbering goes on.
    let newest = entries.iter().map(entry_seq).max().unwrap_or(0);
    let mut deleted = 0;
    for entry in &entries {
        let seq = entry_seq(entry);
        // An invalid object the key object is past (of an earlier identity, or planted) is never
        // needed: it goes whatever its (untrusted) age.
        let expired = match entry {
            Entry::Change(change) => timestamp::parse(&change.time).is_ok_and(|at| at < cutoff),
            Entry::Invalid { .. } => true,
        };
        if seq <= contained && seq < newest && expired {
            log.delete(seq).await?;
            deleted += 1;
        }
    }
    println!(
        "deleted {deleted} change objects older than {} that the key object contains (change_seq {contained})",
        timestamp::format(cutoff)
    );
    Ok(())
}

fn entry_seq(entry: &Entry) -> u64 {
    match entry {
        Entry::Change(change) => change.seq,
        Entry::Invalid { seq, .. } => *seq,
    }
}

/// Removes the invalid object at `seq` beyond the key object, after confirmation.
async fn drop_invalid(context: &Context, seq: u64, yes: bool) -> Result<(), CtlError> {
    let (stored, _) = context.read().await?;
    let contained = stored.document.change_seq().unwrap_or(0);
    if seq <= contained {
        return Err(CtlError::Usage(format!(
            "change {seq} is already contained in the key object (change_seq {contained}); only an object beyond it stops writers"
        )));
    }
    let log = context.change_log()?;
    let body = match log.read(seq).await {
        Ok(Some(body)) => body,
        Ok(None) => return Err(CtlError::NotFound(format!("change {seq}"))),
        Err(StoreError::NotAnObject { message, .. }) => {
            return drop_confirmed(log, seq, &message, yes).await;
        }
        Err(error) => return Err(error.into()),
    };
    let store_id = stored.document.store_id().unwrap_or_default();
    let secret = context.config.store.storage_secret.as_ref();
    let reason = match Change::decode(&body, secret, seq, store_id) {
        Err(error) => error.to_string(),
        Ok(_) if seq >= crate::commit::MAX_SEQ => "its number is beyond any real log".to_string(),
        Ok(change) if change.is_snapshot() => {
            "a snapshot the key object does not contain (its writer stopped, or its time is off)"
                .to_string()
        }
        Ok(_) => {
            return Err(CtlError::Usage(format!(
                "change {seq} is a valid change of this store; it is not dropped (the next write folds it into the key object)"
            )));
        }
    };
    drop_confirmed(log, seq, &reason, yes).await
}

/// Says why change `seq` stops writers, asks, and deletes it.
async fn drop_confirmed(
    log: &dyn ChangeLog,
    seq: u64,
    reason: &str,
    yes: bool,
) -> Result<(), CtlError> {
    println!("change {seq} ({}) is invalid: {reason}", log.describe(seq));
    super::confirm(
        yes,
        "Delete it?",
        "refusing to delete a change object without confirmation",
        "not deleted",
    )?;
    log.delete(seq).await?;
    println!("deleted change {seq}");
    Ok(())
}
