//! Files in a directory that another user may write: the one place that opens, creates and
//! replaces the files the daemon and heare-authctl keep — the key file, its lock, the
//! last-known-good cache.
//!
//! The state directory belongs to the daemon's user, and heare-authctl runs as root: whoever holds
//! that user can plant a symbolic link at any name root is about to open and have root write,
//! chown or create the link's target (`/etc/shadow`, `/etc/nologin`). So every name is opened
//! relative to a descriptor of its directory ([`Dir`]) with `O_NOFOLLOW` (a link at the name is
//! refused, never followed) and `O_NONBLOCK` (a FIFO planted there cannot hang the open); what is
//! opened must be a regular file; temporary files get an unpredictable name and `O_EXCL`; owner
//! and mode are set on the open descriptor, never by path; a replacement is renamed into place
//! within the same directory descriptor. Errors name the path and say what was refused.
//!
//! The small files the configuration names — the secret files, the configuration file itself —
//! are read whole through [`read_small`]: the same non-blocking open and regular-file check, and
//! a size limit, so neither a FIFO, a device nor a huge file planted there can hang or exhaust
//! the daemon's start or heare-authctl.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use rand::Rng;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be opened or written safely.
#[derive(Debug, thiserror::Error)]
pub enum SafeFileError {
    #[error(
        "refusing {0}: it is a symbolic link (it must be a regular file; remove the link and check who planted it)"
    )]
    Symlink(PathBuf),
    #[error("refusing {0}: it is not a regular file")]
    NotRegular(PathBuf),
    #[error("refusing {path}: it is larger than {limit} bytes")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("refusing {0}: it is not a directory (a link or a file stands at its name)")]
    NotDirectory(PathBuf),
    #[error("refusing {0}: it belongs to another user than its parent directory's owner or root")]
    ForeignOwner(PathBuf),
    #[error("{0} has no file name")]
    NoFileName(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl SafeFileError {
    /// Whether the file (or its directory) simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, SafeFileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Whether [`read_small`] follows a symbolic link at the file's own name. The directories on the
/// way are always followed: they are the path the administrator wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// A link at the name is refused: whoever can write the file's directory could otherwise
    /// make a reader running as root read a file they cannot (its size, whether it is blank,
    /// and a key derived from it would tell them about it).
    Refuse,
    /// A link at the name is followed to the regular file it points at.
    Follow,
}

/// Reads the whole of `path`, a small file the configuration names: opened without blocking (a
/// FIFO or device there cannot hang the read), read only if the open descriptor is a regular
/// file, and refused when larger than `limit` bytes (a huge file cannot exhaust memory). A
/// missing file is an error for which [`SafeFileError::is_not_found`] holds.
pub fn read_small(path: &Path, limit: u64, links: Links) -> Result<Vec<u8>, SafeFileError> {
    let mut file = match links {
        Links::Refuse => {
            let (dir, name) = Dir::of(path)?;
            dir.open_existing(&name)?
                .ok_or_else(|| io_error("open", path, io::ErrorKind::NotFound.into()))?
        }
        Links::Follow => open_following(path)?,
    };
    read_bounded(&mut file, path, limit)
}

/// Opens `path` for reading, following links, without blocking; only a regular file.
fn open_following(path: &Path) -> Result<File, SafeFileError> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let file = nix::fcntl::open(path, flags, Mode::empty())
        .map(File::from)
        .map_err(|errno| io_error("open", path, errno.into()))?;
    let stat = nix::sys::stat::fstat(&file).map_err(|e| io_error("stat", path, e.into()))?;
    check_regular(&stat, || path.to_path_buf())?;
    Ok(file)
}

/// Reads all of the open regular `file` (at `path`), refused when larger than `limit` bytes,
/// whether its size says so at once or it grows while read.
pub fn read_bounded(file: &mut File, path: &Path, limit: u64) -> Result<Vec<u8>, SafeFileError> {
    let too_large = || SafeFileError::TooLarge {
        path: path.to_path_buf(),
        limit,
    };
    let size = file
        .metadata()
        .map_err(|source| io_error("stat", path, source))?
        .len();
    if size > limit {
        return Err(too_large());
    }
    // Room for the whole file at once: a secret is not copied about by a growing buffer.
    let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(|source| io_error("read", path, source))?;
    if body.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// Who owns a file that [`Dir::replace`] writes, and its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    /// Owner and group; `None` keeps the writing process's.
    pub owner: Option<(u32, u32)>,
    /// Permission bits.
    pub mode: u32,
}

/// An open directory: every file operation is relative to its descriptor.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory `path` (its own path is the administrator's choice and is followed).
    pub fn open(path: &Path) -> Result<Dir, SafeFileError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd =
            nix::fcntl::open(path, flags, Mode::empty()).map_err(|errno| SafeFileError::Io {
                action: "open the directory",
                path: path.to_path_buf(),
                source: errno.into(),
            })?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory of `file` and the file's name in it.
    pub fn of(file: &Path) -> Result<(Dir, OsString), SafeFileError> {
        let name = file
            .file_name()
            .ok_or_else(|| SafeFileError::NoFileName(file.to_path_buf()))?;
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        Ok((Dir::open(dir)?, name.to_os_string()))
    }

    /// The directory's owner and group.
    pub fn owner(&self) -> Result<(u32, u32), SafeFileError> {
        let stat =
            nix::sys::stat::fstat(&self.fd).map_err(|e| self.error("stat", &self.path, e))?;
        Ok((stat.st_uid, stat.st_gid))
    }

    /// Who owns a file that replaces one with status `current` (or a new one): the current
    /// file's owner, group and read/write bits (set-id and execute bits are never carried over);
    /// a new file is 0600, and one made by root (heare-authctl run by the administrator before
    /// the daemon ever started) belongs to the directory's owner, so that the daemon's user can
    /// read it: /var/lib/heare-auth is owned by heare-auth.
    pub fn ownership_for(&self, current: Option<&FileStat>) -> Result<Ownership, SafeFileError> {
        Ok(match current {
            Some(stat) => Ownership {
                owner: Some((stat.st_uid, stat.st_gid)),
                mode: stat.st_mode & 0o666,
            },
            None if nix::unistd::geteuid().is_root() => Ownership {
                owner: Some(self.owner()?),
                mode: 0o600,
            },
            None => Ownership {
                owner: None,
                mode: 0o600,
            },
        })
    }

    /// Who owns a new file that goes with `name` (a change object beside the key file): as
    /// [`Dir::ownership_for`] the file at `name`.
    pub fn ownership_of(&self, name: &OsStr) -> Result<Ownership, SafeFileError> {
        let current = self.stat(name)?;
        self.ownership_for(current.as_ref())
    }

    /// Opens `name` for reading; `None` when it does not exist. A link or a non-regular file at
    /// the name is refused.
    pub fn open_existing(&self, name: &OsStr) -> Result<Option<File>, SafeFileError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        match self.openat(name, flags, 0) {
            Ok(file) => self.regular(name, file).map(Some),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(self.open_error(name, errno)),
        }
    }

    /// What is at `name`, without following a link; `None` when nothing is. A link or a
    /// non-regular file is refused.
    pub fn stat(&self, name: &OsStr) -> Result<Option<FileStat>, SafeFileError> {
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => check_regular(&stat, || self.join(name)).map(|()| Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(self.error("stat", &self.join(name), errno)),
        }
    }

    /// Opens (creating it 0600 if needed) the lock file `name`.
    pub(crate) fn open_lock(&self, name: &OsStr) -> Result<File, SafeFileError> {
        let flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let file = self
            .openat(name, flags, 0o600)
            .map_err(|errno| self.open_error(name, errno))?;
        self.regular(name, file)
    }

    /// Creates `name` with `mode` if nothing is there (not even a link); `None` when something is.
    pub(crate) fn create_new(
        &self,
        name: &OsStr,
        mode: u32,
    ) -> Result<Option<File>, SafeFileError> {
        match self.create_exclusive(name, mode) {
            Ok(file) => Ok(Some(file)),
            Err(Errno::EEXIST) => Ok(None),
            Err(errno) => Err(self.error("create", &self.join(name), errno)),
        }
    }

    /// Replaces `name` atomically with `body`: a new file under an unpredictable temporary name,
    /// owner and mode set on its descriptor, written, fsynced, renamed over `name`, and the
    /// directory fsynced. Readers see the old file or the new one, whole. Returns the new file's
    /// status. On failure the temporary file is removed and `name` is untouched.
    pub fn replace(
        &self,
        name: &OsStr,
        body: &[u8],
        ownership: Ownership,
    ) -> Result<FileStat, SafeFileError> {
        let (mut file, temp) = self.create_temp(name, ownership.mode)?;
        let result = self.fill_and_rename(&mut file, &temp, name, body, ownership);
        if result.is_err() {
            let _ = nix::unistd::unlinkat(&self.fd, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    /// Opens the directory `name` inside this one without following a link; `None` when it does
    /// not exist. It must belong to this directory's owner, root, or the caller: a directory
    /// someone else made there is refused.
    pub fn open_subdir(&self, name: &OsStr) -> Result<Option<Dir>, SafeFileError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(SafeFileError::NotDirectory(self.join(name)));
            }
            Err(errno) => return Err(self.error("open the directory", &self.join(name), errno)),
        };
        let dir = Dir {
            fd,
            path: self.join(name),
        };
        let (uid, _) = dir.owner()?;
        let allowed = [self.owner()?.0, 0, nix::unistd::geteuid().as_raw()];
        if !allowed.contains(&uid) {
            return Err(SafeFileError::ForeignOwner(dir.path));
        }
        Ok(Some(dir))
    }

    /// The directory `name` inside this one, made with `ownership` (its mode gains the search bit
    /// wherever it has the read bit) when it does not exist yet.
    ///
    /// Root making it for another owner makes it *as* that owner (see [`Dir::make_subdir_as`]):
    /// made by root and then handed over, it could be swapped between the two steps by whoever
    /// can write this directory, and root would hand over what was swapped in. A directory that
    /// is not the owner's by the time it is opened is refused.
    pub fn open_or_create_subdir(
        &self,
        name: &OsStr,
        ownership: Ownership,
    ) -> Result<Dir, SafeFileError> {
        if let Some(dir) = self.open_subdir(name)? {
            return Ok(dir);
        }
        let mode = ownership.mode | ((ownership.mode & 0o444) >> 2);
        let handed_over = self.make_subdir_as(name, ownership.owner)?;
        let dir = self
            .open_subdir(name)?
            .ok_or_else(|| self.io_gone("open the directory", name))?;
        let euid = nix::unistd::geteuid();
        let wanted = match ownership.owner {
            Some((uid, _)) if euid.is_root() && !handed_over => uid,
            _ => euid.as_raw(),
        };
        if dir.owner()?.0 != wanted {
            return Err(SafeFileError::ForeignOwner(dir.path));
        }
        let owner = if handed_over { ownership.owner } else { None };
        dir.set_ownership(Ownership { owner, mode })?;
        Ok(dir)
    }

    /// Makes the directory `name` (0700; nothing happens if something is there), with root's
    /// filesystem identity switched to `owner` for that one call in a thread of its own
    /// (`setfsuid` is per thread), so it is born theirs. When `owner` may not write this
    /// directory (a root-owned one, which nobody else can write either), root makes it itself;
    /// returns `true` then: the caller hands it over on its descriptor.
    fn make_subdir_as(
        &self,
        name: &OsStr,
        owner: Option<(u32, u32)>,
    ) -> Result<bool, SafeFileError> {
        let make = || match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700))
        {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(errno) => Err(errno),
        };
        let as_owner = match owner {
            Some((uid, gid)) if nix::unistd::geteuid().is_root() && uid != 0 => {
                std::thread::scope(|scope| {
                    let made = scope.spawn(|| {
                        nix::unistd::setfsgid(Gid::from_raw(gid));
                        nix::unistd::setfsuid(Uid::from_raw(uid));
                        make()
                    });
                    made.join().unwrap_or(Err(Errno::EIO))
                })
            }
            _ => return make().map(|()| false).map_err(|e| self.make_error(name, e)),
        };
        match as_owner {
            Ok(()) => Ok(false),
            Err(Errno::EACCES) if self.owner()?.0 == 0 => {
                make().map(|()| true).map_err(|e| self.make_error(name, e))
            }
            Err(errno) => Err(self.make_error(name, errno)),
        }
    }

    fn make_error(&self, name: &OsStr, errno: Errno) -> SafeFileError {
        self.error("create the directory", &self.join(name), errno)
    }

    /// Sets owner and mode of the directory itself, on its descriptor.
    fn set_ownership(&self, ownership: Ownership) -> Result<(), SafeFileError> {
        if let Some((uid, gid)) = ownership.owner {
            nix::unistd::fchown(&self.fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| self.error("set the owner of", &self.path, e))?;
        }
        nix::sys::stat::fchmod(&self.fd, Mode::from_bits_truncate(ownership.mode))
            .map_err(|e| self.error("set the mode of", &self.path, e))
    }

    /// Creates `name` holding `body` only if nothing is at that name, atomically and whole: the
    /// body goes into an unpredictable temporary file (owner and mode set on its descriptor,
    /// fsynced) that is then hard-linked to `name` — `linkat` never replaces anything, so of two
    /// racing creators exactly one succeeds — and removed. Returns `false` when `name` existed.
    pub fn create_whole(
        &self,
        name: &OsStr,
        body: &[u8],
        ownership: Ownership,
    ) -> Result<bool, SafeFileError> {
        let (mut file, temp) = self.create_temp(name, ownership.mode)?;
        let filled = self.fill(&mut file, &temp, body, ownership);
        let linked = filled.and_then(|()| {
            match nix::unistd::linkat(&self.fd, temp.as_os_str(), &self.fd, name, AtFlags::empty())
            {
                // Once linked the object is there for every reader: a failing sync of the
                // directory must not make the caller believe it was not created.
                Ok(()) => {
                    let _ = nix::unistd::fsync(&self.fd);
                    Ok(true)
                }
                Err(Errno::EEXIST) => Ok(false),
                Err(errno) => Err(self.error("create", &self.join(name), errno)),
            }
        });
        let _ = nix::unistd::unlinkat(&self.fd, temp.as_os_str(), UnlinkatFlags::NoRemoveDir);
        linked
    }

    /// The names in the directory (not `.` and `..`).
    pub fn names(&self) -> Result<Vec<OsString>, SafeFileError> {
        let listing_error = |e| self.error("list", &self.path, e);
        let fd = nix::unistd::dup(&self.fd).map_err(listing_error)?;
        let mut listing = nix::dir::Dir::from_fd(fd).map_err(listing_error)?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(listing_error)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name != "." && name != ".." {
                names.push(name.to_os_string());
            }
        }
        Ok(names)
    }

    /// Removes the file `name` (never a directory); `false` when nothing was there.
    pub fn remove(&self, name: &OsStr) -> Result<bool, SafeFileError> {
        match nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(errno) => Err(self.error("remove", &self.join(name), errno)),
        }
    }

    fn io_gone(&self, action: &'static str, name: &OsStr) -> SafeFileError {
        io_error(action, &self.join(name), io::ErrorKind::NotFound.into())
    }

    /// Owner, mode and body of a new file, on its descriptor; fsynced.
    fn fill(
        &self,
        file: &mut File,
        temp: &OsStr,
        body: &[u8],
        ownership: Ownership,
    ) -> Result<(), SafeFileError> {
        let path = self.join(temp);
        if let Some((uid, gid)) = ownership.owner {
            nix::unistd::fchown(&*file, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
                .map_err(|e| self.error("set the owner of", &path, e))?;
        }
        // After the chown, which clears set-id bits: the mode is exactly what was asked.
        file.set_permissions(std::fs::Permissions::from_mode(ownership.mode))
            .map_err(|source| io_error("set the mode of", &path, source))?;
        file.write_all(body)
            .and_then(|()| file.sync_all())
            .map_err(|source| io_error("write", &path, source))
    }

    fn fill_and_rename(
        &self,
        file: &mut File,
        temp: &OsStr,
        name: &OsStr,
        body: &[u8],
        ownership: Ownership,
    ) -> Result<FileStat, SafeFileError> {
        self.fill(file, temp, body, ownership)?;
        let path = self.join(temp);
        let stat = nix::sys::stat::fstat(&*file).map_err(|e| self.error("stat", &path, e))?;
        nix::fcntl::renameat(&self.fd, temp, &self.fd, name)
            .map_err(|e| self.error("rename into place", &self.join(name), e))?;
        nix::unistd::fsync(&self.fd).map_err(|e| self.error("sync", &self.path, e))?;
        Ok(stat)
    }

    /// A new file `.NAME.tmp.RANDOM` (O_EXCL: never an existing file or link).
    fn create_temp(&self, name: &OsStr, mode: u32) -> Result<(File, OsString), SafeFileError> {
        let mut last = Errno::EEXIST;
        for _ in 0..16 {
            let temp = temp_name(name);
            match self.create_exclusive(&temp, mode) {
                Ok(file) => return Ok((file, temp)),
                Err(Errno::EEXIST) => last = Errno::EEXIST,
                Err(errno) => return Err(self.error("create", &self.join(&temp), errno)),
            }
        }
        Err(self.error("create a temporary file beside", &self.join(name), last))
    }

    fn create_exclusive(&self, name: &OsStr, mode: u32) -> Result<File, Errno> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let file = self.openat(name, flags, mode)?;
        // The umask may have taken bits off; the descriptor gets exactly `mode`.
        nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode))?;
        Ok(file)
    }

    fn openat(&self, name: &OsStr, flags: OFlag, mode: u32) -> Result<File, Errno> {
        let mode = Mode::from_bits_truncate(mode);
        nix::fcntl::openat(&self.fd, name, flags, mode).map(File::from)
    }

    fn regular(&self, name: &OsStr, file: File) -> Result<File, SafeFileError> {
        let stat =
            nix::sys::stat::fstat(&file).map_err(|e| self.error("stat", &self.join(name), e))?;
        check_regular(&stat, || self.join(name))?;
        Ok(file)
    }

    fn open_error(&self, name: &OsStr, errno: Errno) -> SafeFileError {
        match errno {
            // O_NOFOLLOW on a link: ELOOP.
            Errno::ELOOP => SafeFileError::Symlink(self.join(name)),
            errno => self.error("open", &self.join(name), errno),
        }
    }

    fn error(&self, action: &'static str, path: &Path, errno: Errno) -> SafeFileError {
        io_error(action, path, errno.into())
    }

    fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> SafeFileError {
    SafeFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn check_regular(stat: &FileStat, path: impl Fn() -> PathBuf) -> Result<(), SafeFileError> {
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    match kind {
        SFlag::S_IFREG => Ok(()),
        SFlag::S_IFLNK => Err(SafeFileError::Symlink(path())),
        _ => Err(SafeFileError::NotRegular(path())),
    }
}

/// `.NAME.tmp.` and 16 random base62 characters: nobody can plant a file at it in advance.
fn temp_name(name: &OsStr) -> OsString {
    const BASE62: &[u8] = heare_auth_client::token::BASE62;
    let mut rng = rand::rng();
    let suffix: Vec<u8> = (0..16)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())])
        .collect();
    let mut temp = Vec::with_capacity(name.len() + 22);
    temp.push(b'.');
    temp.extend_from_slice(name.as_bytes());
    temp.extend_from_slice(b".tmp.");
    temp.extend_from_slice(&suffix);
    OsString::from_vec(temp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;

    const PRIVATE: Ownership = Ownership {
        owner: None,
        mode: 0o600,
    };

    #[test]
    fn links_at_a_name_are_refused_and_their_targets_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("keys.json")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("created"), dir.path().join("keys.lock"))
            .unwrap();
        let open = Dir::open(dir.path()).unwrap();
        let name = OsStr::new("keys.json");
        assert!(matches!(
            open.open_existing(name),
            Err(SafeFileError::Symlink(_))
        ));
        assert!(matches!(open.stat(name), Err(SafeFileError::Symlink(_))));
        assert!(matches!(
            open.open_lock(OsStr::new("keys.lock")),
            Err(SafeFileError::Symlink(_))
        ));
        assert!(open.create_new(name, 0o600).unwrap().is_none());
        assert!(
            !dir.path().join("created").exists(),
            "nothing at the lock's target"
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        let error = open.open_existing(name).unwrap_err().to_string();
        assert!(
            error.contains("keys.json") && error.contains("symbolic link"),
            "{error}"
        );
    }

    #[test]
    fn fifos_and_directories_are_not_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let open = Dir::open(dir.path()).unwrap();
        for name in ["fifo", "sub"] {
            assert!(matches!(
                open.open_existing(OsStr::new(name)),
                Err(SafeFileError::NotRegular(_))
            ));
        }
        assert!(open.open_existing(OsStr::new("absent")).unwrap().is_none());
    }

    #[test]
    fn replace_is_atomic_private_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let open = Dir::open(dir.path()).unwrap();
        let name = OsStr::new("keys.cache");
        open.replace(name, b"one", PRIVATE).unwrap();
        let stat = open.replace(name, b"two", PRIVATE).unwrap();
        let mut body = String::new();
        open.open_existing(name)
            .unwrap()
            .unwrap()
            .read_to_string(&mut body)
            .unwrap();
        assert_eq!(body, "two");
        let metadata = std::fs::metadata(dir.path().join("keys.cache")).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o600);
        assert_eq!(metadata.ino(), stat.st_ino);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn replace_over_a_link_replaces_the_link_not_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("keys.cache")).unwrap();
        let open = Dir::open(dir.path()).unwrap();
        open.replace(OsStr::new("keys.cache"), b"new", PRIVATE)
            .unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        let link = std::fs::symlink_metadata(dir.path().join("keys.cache")).unwrap();
        assert!(link.file_type().is_file());
    }

    #[test]
    fn read_small_never_blocks_and_reads_only_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"s3cret\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let to_fifo = dir.path().join("to-fifo");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        for links in [Links::Refuse, Links::Follow] {
            // A FIFO with no writer: a blocking open would wait for ever.
            assert!(matches!(
                read_small(&fifo, 64, links),
                Err(SafeFileError::NotRegular(_))
            ));
            assert_eq!(read_small(&secret, 64, links).unwrap(), b"s3cret\n");
            assert!(matches!(
                read_small(&secret, 6, links),
                Err(SafeFileError::TooLarge { limit: 6, .. })
            ));
            assert!(
                read_small(&dir.path().join("absent"), 64, links)
                    .unwrap_err()
                    .is_not_found()
            );
        }
        assert!(matches!(
            read_small(&link, 64, Links::Refuse),
            Err(SafeFileError::Symlink(_))
        ));
        assert_eq!(read_small(&link, 64, Links::Follow).unwrap(), b"s3cret\n");
        assert!(matches!(
            read_small(&to_fifo, 64, Links::Follow),
            Err(SafeFileError::NotRegular(_))
        ));
        // A device that never ends is not a regular file either.
        assert!(matches!(
            read_small(Path::new("/dev/zero"), 64, Links::Follow),
            Err(SafeFileError::NotRegular(_))
        ));
        let error = read_small(&secret, 6, Links::Refuse)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("secret") && error.contains("larger than 6 bytes"),
            "{error}"
        );
    }

    #[test]
    fn temporary_names_are_unpredictable() {
        let a = temp_name(OsStr::new("keys.json"));
        let b = temp_name(OsStr::new("keys.json"));
        assert_ne!(a, b);
        assert!(a.as_bytes().starts_with(b".keys.json.tmp."));
        assert_eq!(a.len(), ".keys.json.tmp.".len() + 16);
    }
}
