//! Refusing an older encrypted key file written back: whoever can write the S3 object but does not
//! hold the storage secret cannot forge a body, but could put back an old one (an S3 object
//! version, a backup) and so revive deleted, disabled or rotated-out keys.
//!
//! heare-authctl counts its writes in the document's `generation` field
//! ([`heare_auth_store::keyfile::GENERATION_FIELD`]); inside an encrypted body it cannot be changed without
//! the secret. [`Newest`] remembers the highest generation served — in memory, and in a small file
//! beside the last-known-good cache (`<cache>.generation`, 0600, written through
//! [`heare_auth_store::safe_file`]) so that it survives restarts — and refuses an encrypted body with a lower
//! one, without one once one has been served, or a store emptied after one has been served. Plain
//! bodies are not checked: whoever can write a plain store can write anything into it anyway.
//! A file no heare-authctl has written (the Python service's) carries no generation and is never
//! refused on that ground until one has been served.

use heare_auth_store::safe_file::{Dir, Ownership, SafeFileError};
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a body was refused as older than what was served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error(
        "its generation {found} is older than generation {newest}, already served: an old copy of the key file was written back (refused; restore the newest key file, or rewrite this one deliberately with heare-authctl --accept-older)"
    )]
    Older { found: u64, newest: u64 },
    #[error(
        "it has no generation, but generation {newest} was already served: an old copy, or a file written by a tool that does not keep the generation (refused; restore the newest key file, or rewrite this one deliberately with heare-authctl --accept-older)"
    )]
    NoGeneration { newest: u64 },
    #[error(
        "the store holds no key file, but generation {newest} was already served: refusing to serve no keys (restore the newest key file; heare-authctl refuses to write an older one unless told --accept-older)"
    )]
    Deleted { newest: u64 },
    #[error(
        "its generation {found} lies more than a day in the future: tampered with, or written by a clock far ahead (refused; rewrite it with heare-authctl --accept-older)"
    )]
    Future { found: u64 },
    #[error(
        "with the change log beyond it, it reaches change {found}, but change {newest} was already served: an older key object written back and later changes deleted, or a cache missing changes (refused; restore the newest key object or the deleted change objects)"
    )]
    OlderChange { found: u64, newest: u64 },
}

/// How far ahead of the daemon's clock a generation may be (writers' clocks differ).
pub const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// The generation of key-file JSON, `None` when it has none (or the JSON is not an object).
/// serde skips the keys without allocating; only encrypted bodies are asked.
pub fn of_json(json: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Root {
        generation: Option<u64>,
    }
    // serde reads a struct from an array too (`[1]`): only an object has a root field.
    if !json.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    serde_json::from_slice::<Root>(json).ok()?.generation
}

/// The highest generation served, and where it is kept across restarts.
pub struct Newest {
    /// 0: none served yet.
    served: AtomicU64,
    file: Option<PathBuf>,
}

impl Newest {
    /// The record kept in the file `record` (none: only in memory). A record that cannot be
    /// read is logged and treated as none, which only weakens the check, never blocks a load.
    pub fn open(record: Option<&Path>) -> Newest {
        let file = record.map(Path::to_path_buf);
        let served = match file.as_deref().map(read) {
            Some(Ok(served)) => served,
            Some(Err(error)) => {
                tracing::warn!(%error, "generation_record_unreadable");
                0
            }
            None => 0,
        };
        Newest {
            served: AtomicU64::new(served),
            file,
        }
    }

    /// The highest generation served, if any.
    pub fn newest(&self) -> Option<u64> {
        Some(self.served.load(Ordering::Relaxed)).filter(|served| *served > 0)
    }

    /// Whether an encrypted body of generation `found` may be served at `now_ms`. A generation
    /// more than a day ahead of the clock is refused too: accepted, it would make every later
    /// (honest) write look older.
    pub fn check(&self, found: Option<u64>, now_ms: u64) -> Result<(), RollbackError> {
        if let Some(found) = found
            && found > now_ms.saturating_add(MAX_AHEAD_MS)
        {
            return Err(RollbackError::Future { found });
        }
        match (self.newest(), found) {
            (None, _) => Ok(()),
            (Some(newest), None) => Err(RollbackError::NoGeneration { newest }),
            (Some(newest), Some(found)) if found < newest => {
                Err(RollbackError::Older { found, newest })
            }
            _ => Ok(()),
        }
    }

    /// Whether a store with no key file may be served as "no keys".
    pub fn check_missing(&self) -> Result<(), RollbackError> {
        match self.newest() {
            Some(newest) => Err(RollbackError::Deleted { newest }),
            None => Ok(()),
        }
    }

    /// Records that generation `found` is now served; keeps the record file up to date.
    pub fn served(&self, found: u64) {
        if found <= self.served.fetch_max(found, Ordering::Relaxed) {
            return;
        }
        if let Some(file) = &self.file
            && let Err(error) = write(file, found)
        {
            tracing::warn!(%error, "generation_record_write_failed");
        }
    }
}

/// The highest change of the change log served, with the store identity it belongs to, and
/// where it is kept across restarts (`<cache>.change_seq`, 0600): the rollback guard for change
/// numbers. A change applied from the log advances it without the key object's generation
/// moving, so an older key object (its generation still the newest served) written back with the
/// changes after it deleted is refused by this record, not by the generation.
pub struct NewestChange {
    served: std::sync::Mutex<Option<(String, u64)>>,
    file: Option<PathBuf>,
}

impl NewestChange {
    /// The record kept in `record` (none: only in memory); unreadable counts as none, logged.
    pub fn open(record: Option<&Path>) -> NewestChange {
        let served = match record.map(read_change) {
            Some(Ok(served)) => served,
            Some(Err(error)) => {
                tracing::warn!(%error, "change_record_unreadable");
                None
            }
            None => None,
        };
        NewestChange {
            served: std::sync::Mutex::new(served),
            file: record.map(Path::to_path_buf),
        }
    }

    fn get(&self) -> Option<(String, u64)> {
        self.served
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether keys of store `store_id` at change `found` may be served: not when a later change
    /// of the same store was served already.
    pub fn check(&self, store_id: Option<&str>, found: Option<u64>) -> Result<(), RollbackError> {
        match (self.get(), store_id, found) {
            (Some((served_store, newest)), Some(store), Some(found))
                if served_store == store && found < newest =>
            {
                Err(RollbackError::OlderChange { found, newest })
            }
            _ => Ok(()),
        }
    }

    /// Records that change `seq` of store `store_id` is now served.
    pub fn served(&self, store_id: Option<&str>, seq: Option<u64>) {
        let (Some(store), Some(seq)) = (store_id, seq) else {
            return;
        };
        {
            let mut served = self
                .served
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if served
                .as_ref()
                .is_some_and(|(known, newest)| known == store && *newest >= seq)
            {
                return;
            }
            *served = Some((store.to_string(), seq));
        }
        if let Some(file) = &self.file
            && let Err(error) = write_text(file, &format!("{store} {seq}\n"))
        {
            tracing::warn!(%error, "change_record_write_failed");
        }
    }
}

fn read_change(path: &Path) -> Result<Option<(String, u64)>, SafeFileError> {
    let Some(text) = read_record(path, 256)? else {
        return Ok(None);
    };
    let parsed = text
        .split_once(' ')
        .and_then(|(store, seq)| Some((store.to_string(), seq.trim().parse().ok()?)));
    parsed
        .map(Some)
        .ok_or_else(|| unparsable(path, "not a change record"))
}

fn read(path: &Path) -> Result<u64, SafeFileError> {
    let Some(text) = read_record(path, 64)? else {
        return Ok(0);
    };
    text.trim()
        .parse()
        .map_err(|_| unparsable(path, "not a generation"))
}

fn write(path: &Path, generation: u64) -> Result<(), SafeFileError> {
    write_text(path, &format!("{generation}\n"))
}

/// The first `limit` bytes of the record file at `path` (opened without following a link);
/// `None` when there is none.
fn read_record(path: &Path, limit: u64) -> Result<Option<String>, SafeFileError> {
    let (dir, name) = Dir::of(path)?;
    let Some(mut file) = dir.open_existing(&name)? else {
        return Ok(None);
    };
    let mut text = String::new();
    file.by_ref()
        .take(limit)
        .read_to_string(&mut text)
        .map_err(|source| SafeFileError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Some(text))
}

fn unparsable(path: &Path, what: &str) -> SafeFileError {
    SafeFileError::Io {
        action: "parse",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what),
    }
}

/// Writes a record file atomically, mode 0600, through the directory's descriptor.
fn write_text(path: &Path, text: &str) -> Result<(), SafeFileError> {
    let (dir, name) = Dir::of(path)?;
    let private = Ownership {
        owner: None,
        mode: 0o600,
    };
    dir.replace(&name, text.as_bytes(), private).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_read_from_the_root_only() {
        assert_eq!(of_json(br#"{"keys": [], "generation": 42}"#), Some(42));
        assert_eq!(
            of_json(br#"{"generation": 7, "keys": [{"generation": 9}]}"#),
            Some(7)
        );
        assert_eq!(of_json(br#"{"keys": [{"generation": 9}]}"#), None);
        assert_eq!(of_json(b"[1]"), None);
    }

    /// A clock far past the generations below.
    const NOW: u64 = 1_000_000;

    #[test]
    fn a_generation_far_in_the_future_is_refused() {
        let newest = Newest::open(None);
        let ahead = NOW + MAX_AHEAD_MS + 1;
        assert_eq!(
            newest.check(Some(ahead), NOW),
            Err(RollbackError::Future { found: ahead })
        );
        assert!(newest.check(Some(u64::MAX), NOW).is_err());
        assert_eq!(newest.check(Some(NOW + MAX_AHEAD_MS), NOW), Ok(()));
    }

    #[test]
    fn older_missing_and_deleted_are_refused_once_one_was_served() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("keys.cache.generation");
        let newest = Newest::open(Some(&record));
        assert_eq!(newest.check(None, NOW), Ok(()), "nothing served yet");
        assert_eq!(newest.check_missing(), Ok(()));
        newest.served(100);
        assert_eq!(newest.check(Some(100), NOW), Ok(()));
        assert_eq!(newest.check(Some(101), NOW), Ok(()));
        assert_eq!(
            newest.check(Some(99), NOW),
            Err(RollbackError::Older {
                found: 99,
                newest: 100
            })
        );
        assert_eq!(
            newest.check(None, NOW),
            Err(RollbackError::NoGeneration { newest: 100 })
        );
        assert_eq!(
            newest.check_missing(),
            Err(RollbackError::Deleted { newest: 100 })
        );
        newest.served(50);
        assert!(newest.check(Some(99), NOW).is_err(), "never lowered");

        // Across a restart.
        let again = Newest::open(Some(&record));
        assert!(again.check(Some(99), NOW).is_err());
        assert_eq!(again.check(Some(100), NOW), Ok(()));
    }

    #[test]
    fn an_older_change_of_the_same_store_is_refused_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("keys.cache.change_seq");
        let newest = NewestChange::open(Some(&record));
        assert_eq!(newest.check(Some("store_a"), Some(1)), Ok(()));
        newest.served(Some("store_a"), Some(7));
        newest.served(Some("store_a"), Some(5));
        assert_eq!(
            newest.check(Some("store_a"), Some(6)),
            Err(RollbackError::OlderChange {
                found: 6,
                newest: 7
            })
        );
        assert_eq!(newest.check(Some("store_a"), Some(7)), Ok(()));
        assert_eq!(
            newest.check(Some("store_b"), Some(1)),
            Ok(()),
            "another store"
        );
        assert_eq!(newest.check(Some("store_a"), None), Ok(()), "no log");
        let again = NewestChange::open(Some(&record));
        assert!(again.check(Some("store_a"), Some(6)).is_err());
    }
}
