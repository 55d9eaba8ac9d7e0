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
        "its generation {found} is older than generation {newest}, already served: an old copy of the key file was written back (refused; any heare-authctl write makes a newer one)"
    )]
    Older { found: u64, newest: u64 },
    #[error(
        "it has no generation, but generation {newest} was already served: an old copy, or a file written by a tool that does not keep the generation (refused; write it with heare-authctl)"
    )]
    NoGeneration { newest: u64 },
    #[error(
        "the store holds no key file, but generation {newest} was already served: refusing to serve no keys (any heare-authctl write makes a new file)"
    )]
    Deleted { newest: u64 },
}

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
    /// The record kept beside `cache` (none without a cache: then only in memory). A record that
    /// cannot be read is logged and treated as none, which only weakens the check, never blocks
    /// a load.
    pub fn open(cache: Option<&Path>) -> Newest {
        let file = cache.map(|cache| {
            let mut name = cache.as_os_str().to_os_string();
            name.push(".generation");
            PathBuf::from(name)
        });
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

    fn newest(&self) -> Option<u64> {
        Some(self.served.load(Ordering::Relaxed)).filter(|served| *served > 0)
    }

    /// Whether an encrypted body of generation `found` may be served.
    pub fn check(&self, found: Option<u64>) -> Result<(), RollbackError> {
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

fn read(path: &Path) -> Result<u64, SafeFileError> {
    let (dir, name) = Dir::of(path)?;
    let Some(mut file) = dir.open_existing(&name)? else {
        return Ok(0);
    };
    let mut text = String::new();
    file.by_ref()
        .take(64)
        .read_to_string(&mut text)
        .map_err(|source| SafeFileError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
    text.trim().parse().map_err(|_| SafeFileError::Io {
        action: "parse",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a generation"),
    })
}

fn write(path: &Path, generation: u64) -> Result<(), SafeFileError> {
    let (dir, name) = Dir::of(path)?;
    let private = Ownership {
        owner: None,
        mode: 0o600,
    };
    dir.replace(&name, format!("{generation}\n").as_bytes(), private)
        .map(drop)
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

    #[test]
    fn older_missing_and_deleted_are_refused_once_one_was_served() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("keys.cache");
        let newest = Newest::open(Some(&cache));
        assert_eq!(newest.check(None), Ok(()), "nothing served yet");
        assert_eq!(newest.check_missing(), Ok(()));
        newest.served(100);
        assert_eq!(newest.check(Some(100)), Ok(()));
        assert_eq!(newest.check(Some(101)), Ok(()));
        assert_eq!(
            newest.check(Some(99)),
            Err(RollbackError::Older {
                found: 99,
                newest: 100
            })
        );
        assert_eq!(
            newest.check(None),
            Err(RollbackError::NoGeneration { newest: 100 })
        );
        assert_eq!(
            newest.check_missing(),
            Err(RollbackError::Deleted { newest: 100 })
        );
        newest.served(50);
        assert!(newest.check(Some(99)).is_err(), "never lowered");

        // Across a restart.
        let again = Newest::open(Some(&cache));
        assert!(again.check(Some(99)).is_err());
        assert_eq!(again.check(Some(100)), Ok(()));
    }
}
