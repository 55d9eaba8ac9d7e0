//! The file store: the embedded default, for a developer or a single host that needs no S3.
//!
//! The version token is the file's identity — inode, size and modification time in nanoseconds —
//! taken from the opened file itself, so a replacement by rename (as heare-authctl writes) always
//! shows as a change. A missing file means "no keys yet".

use super::{BoxFuture, Fetched, KeyStore, StoreError, WriteCondition};
use nix::fcntl::{Flock, FlockArg};
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A key file on the local filesystem.
#[derive(Clone)]
pub struct FileStore {
    path: PathBuf,
    max_body_bytes: u64,
}

impl FileStore {
    pub fn new(path: PathBuf, max_body_bytes: u64) -> Self {
        FileStore {
            path,
            max_body_bytes,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fetch_blocking(&self, if_changed_from: Option<&str>) -> Result<Fetched, StoreError> {
        let unavailable = |error: io::Error| StoreError::Unavailable {
            store: self.describe(),
            message: error.to_string(),
        };
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Fetched::Missing),
            Err(error) => return Err(unavailable(error)),
        };
        let metadata = file.metadata().map_err(unavailable)?;
        let version = version_of(&metadata);
        if if_changed_from == Some(version.as_str()) {
            return Ok(Fetched::NotModified);
        }
        if metadata.size() > self.max_body_bytes {
            return Err(StoreError::TooLarge {
                store: self.describe(),
                size: metadata.size(),
                limit: self.max_body_bytes,
            });
        }
        let body = match read_sized(&file, metadata.size()) {
            Some(body) => body,
            None => {
                // The file changed size while being read: read whatever it holds now.
                let mut body = Vec::new();
                file.rewind().map_err(unavailable)?;
                file.by_ref()
                    .take(self.max_body_bytes + 1)
                    .read_to_end(&mut body)
                    .map_err(unavailable)?;
                body
            }
        };
        if body.len() as u64 > self.max_body_bytes {
            return Err(StoreError::TooLarge {
                store: self.describe(),
                size: body.len() as u64,
                limit: self.max_body_bytes,
            });
        }
        Ok(Fetched::Body { body, version })
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
    /// Read-check-write under an advisory lock on `<path>.lock`, so two writers on this host
    /// serialize; the new content is written to a temporary file, fsynced and renamed over the
    /// old one (keeping its owner, group and mode), so readers see the old or the new file whole.
    fn put_blocking(&self, body: &[u8], condition: &WriteCondition) -> Result<String, StoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |message: String| StoreError::WriteFailed {
            store: self.describe(),
            message,
        };
        let dir = self
            .path
            .parent()
            .ok_or_else(|| failed("the path has no directory".into()))?;
        let mut lock_name = self.path.as_os_str().to_os_string();
        lock_name.push(".lock");
        let lock_file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_name)
            .map_err(|e| failed(format!("cannot open the lock file: {e}")))?;
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .map_err(|(_, e)| failed(format!("cannot lock: {e}")))?;

        let current = match std::fs::metadata(&self.path) {
            Ok(metadata) => Some(metadata),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(failed(e.to_string())),
        };
        let holds = match (condition, &current) {
            (WriteCondition::IfAbsent, None) => true,
            (WriteCondition::IfVersion(version), Some(metadata)) => {
                *version == version_of(metadata)
            }
            _ => false,
        };
        if !holds {
            return Err(StoreError::Conflict {
                store: self.describe(),
            });
        }

        let mut temp_name = self.path.file_name().unwrap_or_default().to_os_string();
        temp_name.push(format!(".tmp.{}", std::process::id()));
        let temp = dir.join(temp_name);
        let mode = current.as_ref().map_or(0o600, |m| m.mode() & 0o7777);
        let result = (|| -> io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&temp)?;
            if let Some(metadata) = &current {
                std::os::unix::fs::fchown(&file, Some(metadata.uid()), Some(metadata.gid()))?;
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            } else if nix::unistd::geteuid().is_root() {
                // A new file made by root (heare-authctl run by the administrator before the
                // daemon ever started) belongs to the directory's owner, so that the daemon's
                // user can read it: /var/lib/heare-auth is owned by heare-auth.
                let parent = std::fs::metadata(dir)?;
                std::os::unix::fs::fchown(&file, Some(parent.uid()), Some(parent.gid()))?;
            }
            file.write_all(body)?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        })();
        if let Err(error) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(failed(error.to_string()));
        }
        let metadata = std::fs::metadata(&self.path).map_err(|e| failed(e.to_string()))?;
        Ok(version_of(&metadata))
    }
}

/// The file's identity: inode, size and modification time.
fn version_of(metadata: &std::fs::Metadata) -> String {
    format!(
        "{}-{}-{}.{:09}",
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec()
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

/// Creates an empty key file (`{"keys": []}`, mode 0600) when none exists, so that a developer's
/// first run needs no setup. Returns whether it created one.
pub fn create_if_missing(path: &Path) -> io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(parent) = path.parent() {
        // 0755 whatever the umask: others must not be able to replace the key file.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(b"{\"keys\": []}\n")?;
            file.sync_all()?;
            Ok(true)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(store: &FileStore, since: Option<&str>) -> Fetched {
        store.fetch_blocking(since).unwrap()
    }

    #[test]
    fn missing_file_is_no_keys_and_create_makes_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.json");
        let store = FileStore::new(path.clone(), 1024);
        assert_eq!(fetch(&store, None), Fetched::Missing);
        assert!(create_if_missing(&path).unwrap());
        assert!(!create_if_missing(&path).unwrap());
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
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to hand a file to another user");
            return;
        }
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
