//! Getting the sockets to serve on: from systemd (socket activation) or bound by the daemon.
//!
//! Binding a Unix socket is careful about what is already at the path: a socket that still
//! answers belongs to a running daemon (refuse to start, say so); one that refuses connections is
//! stale, left by a crash (remove it); anything that is not a socket is never deleted. The new
//! socket is created under a tight umask, then given the configured mode and group, so there is
//! no moment when it is more open than configured. [`SocketFile`] removes it again at exit, but
//! only if the path still holds the socket this daemon made.

use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Group, chown};
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A socket the daemon could not listen on, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "socket {0} is in use by a running daemon (it accepts connections); stop it first (systemctl stop heare-authd)"
    )]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to delete it (choose another --socket path)")]
    NotASocket(PathBuf),
    #[error("socket_group {0:?} does not exist (create it, or unset socket_group)")]
    UnknownGroup(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot listen on TCP {address}: {source}")]
    Tcp {
        address: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("socket activation passed fd {fd}, which is neither a Unix nor a TCP socket")]
    UnknownActivated { fd: RawFd },
}

/// Listeners handed over by systemd (`LISTEN_FDS`), sorted by family.
#[derive(Default)]
pub struct Activated {
    pub unix: Vec<std::os::unix::net::UnixListener>,
    pub tcp: Vec<std::net::TcpListener>,
}

/// Takes the listeners systemd passed, if any.
pub fn activated() -> Result<Activated, ListenError> {
    let mut found = Activated::default();
    let Ok(fds) = sd_notify::listen_fds() else {
        return Ok(found);
    };
    for fd in fds {
        let family = getsockname::<SockaddrStorage>(fd)
            .ok()
            .and_then(|address| address.family());
        // SAFETY: systemd passed this descriptor to this process for it to own (LISTEN_FDS with
        // our LISTEN_PID); nothing else in the process uses it.
        match family {
            Some(AddressFamily::Unix) => found
                .unix
                .push(unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) }),
            Some(AddressFamily::Inet | AddressFamily::Inet6) => found
                .tcp
                .push(unsafe { std::net::TcpListener::from_raw_fd(fd) }),
            _ => return Err(ListenError::UnknownActivated { fd }),
        }
    }
    // systemd hands sockets over in blocking mode; tokio needs them non-blocking.
    let unusable = |source| ListenError::Io {
        action: "configure the activated socket",
        path: PathBuf::from("(socket activation)"),
        source,
    };
    found
        .unix
        .iter()
        .try_for_each(|l| l.set_nonblocking(true))
        .map_err(unusable)?;
    found
        .tcp
        .iter()
        .try_for_each(|l| l.set_nonblocking(true))
        .map_err(unusable)?;
    Ok(found)
}

/// The socket file this daemon created; removed on drop if it is still ours.
pub struct SocketFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(metadata) = std::fs::symlink_metadata(&self.path)
            && (metadata.dev(), metadata.ino()) == self.identity
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the Unix socket at `path` with `mode` and, if given, `group`.
pub fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), ListenError> {
    let io_error = |action, source| ListenError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let gid = match group {
        Some(name) => match Group::from_name(name) {
            Ok(Some(group)) => Some(group.gid),
            _ => return Err(ListenError::UnknownGroup(name.to_string())),
        },
        None => None,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // 0755 whatever the umask: a directory others could write would let them replace the
        // socket with their own.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| io_error("create the directory of", e))?;
    }
    remove_if_stale(path)?;

    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(previous);
    let listener = bound.map_err(|e| io_error("bind", e))?;
    let metadata = std::fs::symlink_metadata(path).map_err(|e| io_error("stat", e))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        identity: (metadata.dev(), metadata.ino()),
    };
    if let Some(gid) = gid {
        chown(path, None, Some(gid)).map_err(|e| io_error("set the group of", e.into()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("set the mode of", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_error("configure", e))?;
    Ok((listener, file))
}

fn remove_if_stale(path: &Path) -> Result<(), ListenError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenError::Io {
                action: "stat",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ListenError::InUse(path.to_path_buf())),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "removing_stale_socket");
            std::fs::remove_file(path).map_err(|source| ListenError::Io {
                action: "remove the stale socket",
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(ListenError::Io {
            action: "probe the existing socket",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Binds the optional TCP listener.
pub fn bind_tcp(address: std::net::SocketAddr) -> Result<std::net::TcpListener, ListenError> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|source| ListenError::Tcp { address, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ListenError::Tcp { address, source })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_with_mode_and_removes_only_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/d.sock");
        let (listener, file) = bind_unix(&path, 0o660, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(matches!(
            bind_unix(&path, 0o660, None),
            Err(ListenError::InUse(_))
        ));
        drop(listener);
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn stale_socket_is_replaced_and_other_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(
            path.exists(),
            "a dropped std listener leaves its file: a stale socket"
        );
        let (_listener, _file) = bind_unix(&path, 0o600, None).unwrap();

        let regular = dir.path().join("not-a-socket");
        std::fs::write(&regular, b"keep me").unwrap();
        assert!(matches!(
            bind_unix(&regular, 0o600, None),
            Err(ListenError::NotASocket(_))
        ));
        assert_eq!(std::fs::read(&regular).unwrap(), b"keep me");
    }

    #[test]
    fn unknown_group_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = bind_unix(&dir.path().join("s"), 0o660, Some("no-such-group-heare")).err();
        assert!(matches!(error, Some(ListenError::UnknownGroup(_))));
    }
}
