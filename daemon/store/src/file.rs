//! The file store: the embedded default, for a developer or a single host that needs no S3.
//!
//! The version token is the file's identity — inode, size and modification time in nanoseconds —
//! taken from the opened file itself, so a replacement by rename (as heare-authctl writes) always
//! shows as a change. A missing file means "no keys yet". Writers serialize on `<name>.lock`,
//! waiting for it at most the store's lock timeout: the directory's owner (the daemon's user)
//! can hold that lock for ever, and root's heare-authctl must not hang on it.

use crate::safe_file::{Dir, SafeFileError};
use crate::{BoxFuture, Fetched, KeyStore, StoreError, WriteCondition};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::FileStat;
use std::ffi::OsStr;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a write waits for the lock unless told otherwise (heare-authctl's `--lock-timeout`).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest sleep between two tries of a held lock.
const LOCK_RETRY_MAX: Duration = Duration::from_millis(100);

/// A key file on the local filesystem.
#[derive(Clone)]
pub struct FileStore {
    path: PathBuf,
    max_body_bytes: u64,
    lock_timeout: Duration,
}

impl FileStore {
    pub fn new(path: PathBuf, max_body_bytes: u64) -> Self {
        FileStore {
            path,
            max_body_bytes,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }

    /// The same store, whose writes wait at most `timeout` for the lock (zero: one try).
    pub fn with_lock_timeout(self, timeout: Duration) -> Self {
        FileStore {
            lock_timeout: timeout,
            ..self
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn max_body_bytes(&self) -> u64 {
        self.max_body_bytes
    }

    fn fetch_blocking(&self, if_changed_from: Option<&str>) -> Result<Fetched, StoreError> {
        let unavailable = |message: String| StoreError::Unavailable {
            store: self.describe(),
            message,
        };
        let mut file = match self.open_for_reading() {
            Ok(Some(file)) => file,
            Ok(None) => return Ok(Fetched::Missing),
            Err(error) => return Err(unavailable(error.to_string())),
        };
        let stat = nix::sys::stat::fstat(&file).map_err(|e| unavailable(e.to_string()))?;
        let version = version_of(&stat);
        if if_changed_from == Some(version.as_str()) {
            return Ok(Fetched::NotModified);
        }
        let size = stat.st_size as u64;
        if size > self.max_body_bytes {
            return Err(self.too_large(size));
        }
        let body = match read_sized(&file, size) {
            Some(body) => body,
            // The file changed size while being read: read whatever it holds now.
            None => self
                .read_whole(&mut file)
                .map_err(|e| unavailable(e.to_string()))?,
        };
        if body.len() as u64 > self.max_body_bytes {
            return Err(self.too_large(body.len() as u64));
        }
        Ok(Fetched::Body { body, version })
    }

    /// The key file, opened without following a link; `None` when it (or its directory) does
    /// not exist.
    fn open_for_reading(&self) -> Result<Option<std::fs::File>, SafeFileError> {
        let (dir, name) = match Dir::of(&self.path) {
            Ok(found) => found,
            Err(SafeFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        dir.open_existing(&name)
    }

    fn read_whole(&self, file: &mut std::fs::File) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        file.rewind()?;
        file.take(self.max_body_bytes + 1).read_to_end(&mut body)?;
        Ok(body)
    }

    fn too_large(&self, size: u64) -> StoreError {
        StoreError::TooLarge {
            store: self.describe(),
            size,
            limit: self.max_body_bytes,
        }
    }
}

/// Files at least this large are read by several threads at once.
const PARALLEL_READ_BYTES: usize = 8 << 20;

/// Reads a file of `size` bytes with exact-size positioned reads, split between threads for a
/// large file: on a 370 MB file most of the time goes to faulting in the fresh buffer's pages and
/// copying out of the page cache, which parallelise. `None` when the file turns out shorter or
/// longer than `size` (it is being rewritten in place), or a read fails.
fn read_sized(file: &std::fs::File, size: u64) -> Option<Vec<u8>> {
    let size = usize::try_from(size).ok()?;
    let threads = if size >= PARALLEL_READ_BYTES {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    } else {
        1
    }
    .clamp(1, 8);
    let mut body = vec![0u8; size];
    let part = size.div_ceil(threads).max(1);
    let complete = std::thread::scope(|scope| {
        let mut parts = body.chunks_mut(part).enumerate();
        let first = parts.next();
        let others: Vec<_> = parts
            .map(|(n, slice)| scope.spawn(move || file.read_exact_at(slice, (n * part) as u64)))
            .collect();
        let mut complete = first.is_none_or(|(_, slice)| file.read_exact_at(slice, 0).is_ok());
        for other in others {
            complete &= other.join().is_ok_and(|read| read.is_ok());
        }
        complete
    });
    // Nothing may follow: a file that grew is read again from the start.
    let grew = file
        .read_at(&mut [0u8; 1], size as u64)
        .map_or(true, |n| n > 0);
    (complete && !grew).then_some(body)
}

impl FileStore {
    /// Read-check-write under an advisory lock on `<name>.lock`, so two writers on this host
    /// serialize; the new content replaces the old file atomically ([`Dir::replace`]), keeping
    /// its owner, group and read/write bits, so readers see the old or the new file whole.
    /// Every name is opened relative to the directory without following links: the directory
    /// belongs to the daemon's user, and heare-authctl runs as root.
    fn put_blocking(&self, body: &[u8], condition: &WriteCondition) -> Result<String, StoreError> {
        let failed = |error: SafeFileError| StoreError::WriteFailed {
            store: self.describe(),
            message: error.to_string(),
        };
        let (dir, name) = Dir::of(&self.path).map_err(failed)?;
        let _lock = self.lock(&dir, &name)?;
        let current = dir.stat(&name).map_err(failed)?;
        let holds = match (condition, &current) {
            (WriteCondition::Always, _) | (WriteCondition::IfAbsent, None) => true,
            (WriteCondition::IfVersion(version), Some(stat)) => *version == version_of(stat),
            _ => false,
        };
        if !holds {
            return Err(StoreError::Conflict {
                store: self.describe(),
            });
        }
        let ownership = dir.ownership_for(current.as_ref()).map_err(failed)?;
        let written = dir.replace(&name, body, ownership).map_err(failed)?;
        Ok(version_of(&written))
    }

    /// Takes the exclusive lock on `<name>.lock`, trying without blocking and sleeping a little
    /// longer after each refusal (up to [`LOCK_RETRY_MAX`]) until the lock timeout: no thread is
    /// ever left blocked in `flock` by a holder that never lets go.
    pub(crate) fn lock(&self, dir: &Dir, name: &OsStr) -> Result<Flock<std::fs::File>, StoreError> {
        let mut lock_name = name.to_os_string();
        lock_name.push(".lock");
        let mut file = dir
            .open_lock(&lock_name)
            .map_err(|error| StoreError::WriteFailed {
                store: self.describe(),
                message: format!("cannot open the lock file: {error}"),
            })?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((file, Errno::EWOULDBLOCK | Errno::EINTR)) => file,
                Err((_, error)) => {
                    return Err(StoreError::WriteFailed {
                        store: self.describe(),
                        message: format!("cannot lock: {error}"),
                    });
                }
            };
            let waited = started.elapsed();
            if waited >= self.lock_timeout {
                return Err(StoreError::Locked {
                    store: self.describe(),
                    lock: self.path.with_file_name(&lock_name).display().to_string(),
                    waited: self.lock_timeout,
                });
            }
            std::thread::sleep(pause.min(self.lock_timeout - waited));
            pause = (pause * 2).min(LOCK_RETRY_MAX);
        }
    }
}

/// The file's identity: inode, size and modification time.
fn version_of(stat: &FileStat) -> String {
    format!(
        "{}-{}-{}.{:09}",
        stat.st_ino, stat.st_size, stat.st_mtime, stat.st_mtime_nsec
    )
}

impl KeyStore for FileStore {
    fn describe(&self) -> String {
        format!("file://{}", self.path.display())
    }

    fn fetch<'a>(
        &'a self,
        if_changed_from: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, StoreError>> {
        let store = self.clone();
        let since = if_changed_from.map(str::to_owned);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.fetch_blocking(since.as_deref()))
                .await
                .map_err(|error| StoreError::Unavailable {
                    store: self.describe(),
                    message: format!("the read was cancelled: {error}"),
                })?
        })
    }

    fn put<'a>(
        &'a self,
        body: Vec<u8>,
        condition: WriteCondition,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || store.put_blocking(&body, &condition))
                .await
                .map_err(|error| StoreError::WriteFailed {
                    store: self.describe(),
                    message: format!("the write was cancelled: {error}"),
                })?
        })
    }
}

/// The body of a key file with no keys.
pub const EMPTY_KEY_FILE: &[u8] = b"{\"keys\": []}\n";

/// Creates a key file holding `body` (mode 0600) when nothing is at its name (not even a link), so
/// that a developer's first run needs no setup. Returns whether it created one.
pub fn create_if_missing(path: &Path, body: &[u8]) -> Result<bool, SafeFileError> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // 0755 whatever the umask: others must not be able to replace the key file.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|source| SafeFileError::Io {
                action: "create the directory",
                path: parent.to_path_buf(),
                source,
            })?;
    }
    let (dir, name) = Dir::of(path)?;
    let Some(mut file) = dir.create_new(&name, 0o600)? else {
        return Ok(false);
    };
    file.write_all(body)
        .and_then(|()| file.sync_all())
        .map_err(|source| SafeFileError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn fetch(store: &FileStore, since: Option<&str>) -> Fetched {
        store.fetch_blocking(since).unwrap()
    }

    #[test]
    fn missing_file_is_no_keys_and_create_makes_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.json");
        let store = FileStore::new(path.clone(), 1024);
        assert_eq!(fetch(&store, None), Fetched::Missing);
        assert!(create_if_missing(&path, EMPTY_KEY_FILE).unwrap());
        assert!(!create_if_missing(&path, EMPTY_KEY_FILE).unwrap());
        let Fetched::Body { body, .. } = fetch(&store, None) else {
            panic!()
        };
        assert_eq!(body, b"{\"keys\": []}\n");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn unchanged_file_is_not_modified_and_a_rename_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, b"{\"keys\":[]}").unwrap();
        let store = FileStore::new(path.clone(), 1024);
        let Fetched::Body { version, .. } = fetch(&store, None) else {
            panic!()
        };
        assert_eq!(fetch(&store, Some(&version)), Fetched::NotModified);
        // Same size, same second: only the inode differs after an atomic replace.
        let temp = dir.path().join("keys.json.tmp");
        std::fs::write(&temp, b"{\"keys\":[]}").unwrap();
        std::fs::rename(&temp, &path).unwrap();
        assert!(matches!(
            fetch(&store, Some(&version)),
            Fetched::Body { .. }
        ));
    }

    #[test]
    fn conditional_writes_keep_mode_and_refuse_stale_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let store = FileStore::new(path.clone(), 1024);
        let first = store
            .put_blocking(b"one", &WriteCondition::IfAbsent)
            .unwrap();
        assert!(matches!(
            store.put_blocking(b"x", &WriteCondition::IfAbsent),
            Err(StoreError::Conflict { .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let first = match fetch(&store, None) {
            Fetched::Body { version, .. } => version,
            other => panic!("{other:?} after {first}"),
        };
        let second = store
            .put_blocking(b"two", &WriteCondition::IfVersion(first.clone()))
            .unwrap();
        assert_ne!(first, second);
        assert!(matches!(
            store.put_blocking(b"three", &WriteCondition::IfVersion(first)),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
    }

    #[test]
    fn a_new_file_written_by_root_belongs_to_the_directory_owner() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root to hand a file to another user: run the tests as root (tests/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let owner = (65534, 65534);
        std::os::unix::fs::chown(dir.path(), Some(owner.0), Some(owner.1)).unwrap();
        let path = dir.path().join("keys.json");
        let store = FileStore::new(path.clone(), 1024);
        store
            .put_blocking(b"{}", &WriteCondition::IfAbsent)
            .unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!((metadata.uid(), metadata.gid()), owner);
        assert_eq!(metadata.mode() & 0o777, 0o600);
    }

    #[test]
    fn sized_reads_split_between_threads_and_notice_a_size_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let content: Vec<u8> = (0..PARALLEL_READ_BYTES + 12_345)
            .map(|n| (n % 251) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let size = content.len() as u64;
        assert!(read_sized(&file, size).unwrap() == content);
        assert!(read_sized(&file, size + 1).is_none(), "shrank");
        assert!(read_sized(&file, size - 1).is_none(), "grew");
        assert_eq!(read_sized(&file, 0), None);
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read_sized(&file, 0), Some(Vec::new()));
        let store = FileStore::new(path.clone(), 1 << 30);
        std::fs::write(&path, &content[..100]).unwrap();
        let Fetched::Body { body, .. } = fetch(&store, None) else {
            panic!()
        };
        assert_eq!(body, &content[..100]);
    }

    #[test]
    fn a_held_lock_fails_the_write_after_the_timeout_naming_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, b"before").unwrap();
        let lock_path = dir.path().join("keys.json.lock");
        let holder = std::fs::File::create(&lock_path).unwrap();
        let held = Flock::lock(holder, FlockArg::LockExclusive).unwrap();
        let store =
            FileStore::new(path.clone(), 1024).with_lock_timeout(Duration::from_millis(200));
        match store.put_blocking(b"after", &WriteCondition::Always) {
            Err(StoreError::Locked { lock, waited, .. }) => {
                assert_eq!(lock, lock_path.display().to_string());
                assert_eq!(waited, Duration::from_millis(200));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"before");
        drop(held);
        store
            .put_blocking(b"after", &WriteCondition::Always)
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after");
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, vec![b' '; 2048]).unwrap();
        let store = FileStore::new(path, 1024);
        assert!(matches!(
            store.fetch_blocking(None),
            Err(StoreError::TooLarge { .. })
        ));
    }
}
