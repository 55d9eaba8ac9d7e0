//! Where change objects are kept: the [`ChangeLog`] of a store, and its file form.
//!
//! A log is a folder beside the key object, `<key object>.changes/`, holding one object per change
//! named by its number ([`crate::change::object_name`]). An object is created once, with a
//! create-only write — S3 `If-None-Match: *`, or for a file store a whole temporary file
//! hard-linked to its name under the directory's descriptor (`linkat` never replaces, so of two
//! writers racing for one number exactly one gets it, and a reader never sees half an object) —
//! and never rewritten; only `heare-authctl compact` deletes what the key object already contains.
//!
//! The file form's directory is opened without following a link and must belong to the key
//! file's directory owner (or root); heare-authctl, running as root, creates it and its objects
//! with the key file's owner and read/write bits, so the daemon's user can read them.

use crate::change::{object_name, seq_of_name};
use crate::safe_file::{Dir, SafeFileError};
use crate::{BoxFuture, FileStore, StoreError};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// The numbered change objects beside a key object.
pub trait ChangeLog: Send + Sync {
    /// Where change `seq` is kept, for messages.
    fn describe(&self, seq: u64) -> String;

    /// The stored body of change `seq`; `None` when there is none.
    fn read(&self, seq: u64) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>>;

    /// Creates change `seq` holding `body` if no object has that number;
    /// [`StoreError::Conflict`] when one has.
    fn create(&self, seq: u64, body: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The numbers present, ascending, at most `limit` of them (the lowest).
    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, StoreError>>;

    /// Deletes change `seq`; deleting one that is not there is not an error.
    fn delete(&self, seq: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// The change log of a file store: `<key file>.changes/` beside it. A commit holds the key
/// file's lock (`<name>.lock`, as the store's writes do, waiting at most its lock timeout), so a
/// lock held for ever fails the write before anything is committed.
#[derive(Clone)]
pub struct FileChangeLog {
    store: FileStore,
}

impl FileChangeLog {
    /// The log beside `store`'s key file, whose lock (and lock timeout) commits share.
    pub fn new(store: &FileStore) -> Self {
        FileChangeLog {
            store: store.clone(),
        }
    }

    /// The directory's name beside the key file.
    fn dir_name(&self) -> Result<OsString, SafeFileError> {
        let mut name = self
            .store
            .path()
            .file_name()
            .ok_or_else(|| SafeFileError::NoFileName(self.store.path().to_path_buf()))?
            .to_os_string();
        name.push(".changes");
        Ok(name)
    }

    fn path(&self) -> PathBuf {
        let mut path = self.store.path().as_os_str().to_os_string();
        path.push(".changes");
        PathBuf::from(path)
    }

    /// The log's directory; `None` when there is none yet.
    fn open(&self) -> Result<Option<Dir>, SafeFileError> {
        let (parent, _) = match Dir::of(self.store.path()) {
            Ok(found) => found,
            Err(error) if error.is_not_found() => return Ok(None),
            Err(error) => return Err(error),
        };
        parent.open_subdir(&self.dir_name()?)
    }

    fn read_blocking(&self, seq: u64) -> Result<Option<Vec<u8>>, SafeFileError> {
        let Some(dir) = self.open()? else {
            return Ok(None);
        };
        let Some(mut file) = dir.open_existing(object_name(seq).as_ref())? else {
            return Ok(None);
        };
        let path = self.path().join(object_name(seq));
        crate::safe_file::read_bounded(&mut file, &path, self.store.max_body_bytes()).map(Some)
    }

    /// Creates change `seq` under the key file's lock; `false` when the number is taken.
    fn create_locked(&self, seq: u64, body: &[u8]) -> Result<bool, StoreError> {
        let failed = |error: SafeFileError| write_failed(self.describe(seq), error);
        let (parent, key_name) = Dir::of(self.store.path()).map_err(failed)?;
        let _lock = self.store.lock(&parent, &key_name)?;
        self.create_in(&parent, &key_name, seq, body)
            .map_err(failed)
    }

    fn create_in(
        &self,
        parent: &Dir,
        key_name: &OsStr,
        seq: u64,
        body: &[u8],
    ) -> Result<bool, SafeFileError> {
        let ownership = parent.ownership_of(key_name)?;
        let dir = parent.open_or_create_subdir(&self.dir_name()?, ownership)?;
        dir.create_whole(object_name(seq).as_ref(), body, ownership)
    }

    fn list_blocking(&self, limit: usize) -> Result<Vec<u64>, SafeFileError> {
        let Some(dir) = self.open()? else {
            return Ok(Vec::new());
        };
        let mut numbers: Vec<u64> = dir
            .names()?
            .iter()
            .filter_map(|name| seq_of_name(name.to_str()?))
            .collect();
        numbers.sort_unstable();
        numbers.truncate(limit);
        Ok(numbers)
    }

    fn delete_blocking(&self, seq: u64) -> Result<(), SafeFileError> {
        if let Some(dir) = self.open()? {
            dir.remove(object_name(seq).as_ref())?;
        }
        Ok(())
    }

    /// Runs `step` on a blocking thread, its error told as `error`.
    fn blocking<T: Send + 'static>(
        &self,
        seq: u64,
        step: impl FnOnce(&FileChangeLog) -> Result<T, SafeFileError> + Send + 'static,
        error: fn(String, SafeFileError) -> StoreError,
    ) -> BoxFuture<'_, Result<T, StoreError>> {
        let log = self.clone();
        let store = self.describe(seq);
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || step(&log)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(failure)) => Err(error(store, failure)),
                Err(cancelled) => Err(StoreError::Unavailable {
                    store,
                    message: format!("cancelled: {cancelled}"),
                }),
            }
        })
    }
}

fn unavailable(store: String, failure: SafeFileError) -> StoreError {
    let message = failure.to_string();
    StoreError::Unavailable { store, message }
}

/// A read's failure: what stands at the object's name is not a change object (a link, a FIFO, a
/// directory, a huge file) is [`StoreError::NotAnObject`]; anything else the log being
/// unavailable.
fn unreadable(store: String, failure: SafeFileError) -> StoreError {
    let message = failure.to_string();
    match failure {
        SafeFileError::Symlink(_)
        | SafeFileError::NotRegular(_)
        | SafeFileError::TooLarge { .. } => StoreError::NotAnObject { store, message },
        _ => StoreError::Unavailable { store, message },
    }
}

fn write_failed(store: String, failure: SafeFileError) -> StoreError {
    let message = failure.to_string();
    StoreError::WriteFailed { store, message }
}

impl ChangeLog for FileChangeLog {
    fn describe(&self, seq: u64) -> String {
        format!("file://{}", self.path().join(object_name(seq)).display())
    }

    fn read(&self, seq: u64) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        self.blocking(seq, move |log| log.read_blocking(seq), unreadable)
    }

    fn create(&self, seq: u64, body: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        let log = self.clone();
        Box::pin(async move {
            let created = tokio::task::spawn_blocking(move || log.create_locked(seq, &body))
                .await
                .map_err(|cancelled| StoreError::WriteFailed {
                    store: self.describe(seq),
                    message: format!("cancelled: {cancelled}"),
                })??;
            match created {
                true => Ok(()),
                false => Err(StoreError::Conflict {
                    store: self.describe(seq),
                }),
            }
        })
    }

    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, StoreError>> {
        self.blocking(0, move |log| log.list_blocking(limit), unavailable)
    }

    fn delete(&self, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(seq, move |log| log.delete_blocking(seq), write_failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_number_is_created_once_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("keys.json");
        std::fs::write(&key_file, b"{\"keys\": []}").unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let log = FileChangeLog::new(&FileStore::new(key_file.clone(), 1 << 20));
        runtime().block_on(async {
            assert_eq!(log.read(1).await.unwrap(), None);
            assert_eq!(log.list(10).await.unwrap(), Vec::<u64>::new());
            log.create(1, b"one".to_vec()).await.unwrap();
            assert!(matches!(
                log.create(1, b"again".to_vec()).await,
                Err(StoreError::Conflict { .. })
            ));
            log.create(2, b"two".to_vec()).await.unwrap();
            assert_eq!(log.read(1).await.unwrap().as_deref(), Some(&b"one"[..]));
            assert_eq!(log.list(10).await.unwrap(), vec![1, 2]);
            assert_eq!(log.list(1).await.unwrap(), vec![1]);
            log.delete(1).await.unwrap();
            assert_eq!(log.list(10).await.unwrap(), vec![2]);
        });
        let changes = dir.path().join("keys.json.changes");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&changes), 0o750);
        assert_eq!(mode(&changes.join(object_name(2))), 0o640);
        let leftovers = std::fs::read_dir(&changes).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }

    #[test]
    fn a_link_at_the_directorys_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("keys.json");
        std::fs::write(&key_file, b"{\"keys\": []}").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("keys.json.changes")).unwrap();
        let log = FileChangeLog::new(&FileStore::new(key_file.clone(), 1 << 20));
        runtime().block_on(async {
            let error = log.create(1, b"x".to_vec()).await.unwrap_err();
            assert!(error.to_string().contains("not a directory"), "{error}");
            assert!(log.read(1).await.is_err());
        });
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }
}
