//! Getting the sockets to serve on: from systemd (socket activation) or bound by the daemon.
//!
//! Binding a Unix socket is careful about what is already at the path: a socket that still
//! answers belongs to a running daemon (refuse to start, say so); one that refuses connections is
//! stale, left by a crash (remove it); anything that is not a socket is never deleted. The
//! socket's directory, and every directory above it, must be one that only root or the daemon's
//! user can change (a directory above may be world-writable with the sticky bit, as /tmp):
//! otherwise another user could swap the socket for a link between the bind and the chown, or
//! replace it later. The socket is created with exactly the configured mode (the umask is set
//! for the bind), and its group is set without following a link, so there is no moment when it
//! is more open than configured. [`SocketFile`] removes it again at exit, but only if the path
//! still holds the socket this daemon made.
//!
//! Every socket systemd hands over must be a listening stream socket (`SO_TYPE` `SOCK_STREAM`,
//! `SO_ACCEPTCONN`): a datagram socket (`ListenDatagram=`) or a connection (`Accept=yes`) can
//! never be accepted from, and serving one would only log `accept_failed` for ever while
//! `/status` said it listened. Such a socket refuses the start, naming its descriptor and why.

use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::sys::socket::{
    AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname, getsockopt, sockopt,
};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{Group, fchownat, geteuid};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
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
    #[error(
        "refusing to put the socket under {path}: {why}, so another user could replace the socket; use a directory only root or the daemon's user can write"
    )]
    UnsafeDirectory { path: PathBuf, why: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the sockets systemd passed cannot be used (LISTEN_FDS, LISTEN_FDNAMES): {0}")]
    Activation(io::Error),
    #[error(
        "socket activation passed fd {fd} (named {name:?}), which {why}; heare-authd serves only listening stream sockets (ListenStream= in a socket unit without Accept=yes)"
    )]
    UnusableActivated {
        fd: RawFd,
        name: String,
        why: String,
    },
}

/// The name the metrics socket unit gives its socket (`FileDescriptorName=metrics`).
pub const METRICS_FD_NAME: &str = "metrics";
/// The name the TCP socket unit gives its socket (`FileDescriptorName=tcp`).
pub const TCP_FD_NAME: &str = "tcp";
/// The name systemd gives the sockets of `heare-authd.socket`, which sets no
/// `FileDescriptorName=`: its unit's name. Its Unix socket is the verify socket (as is a Unix
/// socket of any name), and a TCP socket added to it is the verify TCP listener.
pub const VERIFY_UNIT_FD_NAME: &str = "heare-authd.socket";

/// Listeners handed over by systemd (`LISTEN_FDS`), sorted by family and name.
#[derive(Default)]
pub struct Activated {
    /// Every Unix socket: the verify socket.
    pub unix: Vec<std::os::unix::net::UnixListener>,
    /// Every TCP socket not named `metrics`: the verify TCP listener.
    pub tcp: Vec<std::net::TcpListener>,
    /// TCP sockets named `metrics`: the metrics listener.
    pub metrics: Vec<std::net::TcpListener>,
}

/// Takes the listeners systemd passed, if any: only when `LISTEN_PID` is this process (a
/// parent's variables, inherited, name descriptors that are not ours to take).
pub fn activated() -> Result<Activated, ListenError> {
    let mut found = Activated::default();
    if !passed_to_this_process() {
        return Ok(found);
    }
    let fds = sd_notify::listen_fds_with_names(true).map_err(ListenError::Activation)?;
    // SAFETY: systemd passed these descriptors to this process for it to own (LISTEN_FDS with our
    // LISTEN_PID); nothing else in the process uses them. Owned at once, so that every one is
    // closed if the start is refused.
    let owned: Vec<(OwnedFd, String)> = fds
        .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
        .collect();
    for (socket, name) in owned {
        let family = usable(&socket).map_err(|why| ListenError::UnusableActivated {
            fd: socket.as_raw_fd(),
            name: name.clone(),
            why,
        })?;
        match family {
            Family::Unix => found.unix.push(socket.into()),
            Family::Tcp => {
                let listener = std::net::TcpListener::from(socket);
                match name.as_str() {
                    METRICS_FD_NAME => found.metrics.push(listener),
                    TCP_FD_NAME | VERIFY_UNIT_FD_NAME => found.tcp.push(listener),
                    _ => {
                        warn_unknown_name(&name, &listener);
                        found.tcp.push(listener);
                    }
                }
            }
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
        .chain(&found.metrics)
        .try_for_each(|l| l.set_nonblocking(true))
        .map_err(unusable)?;
    Ok(found)
}

/// What an activated socket is served as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Unix,
    Tcp,
}

/// The family of `socket` if it is a listening stream socket the daemon can serve; else why not.
fn usable(socket: &OwnedFd) -> Result<Family, String> {
    let family = getsockname::<SockaddrStorage>(socket.as_raw_fd())
        .ok()
        .and_then(|address| address.family());
    let family = match family {
        Some(AddressFamily::Unix) => Family::Unix,
        Some(AddressFamily::Inet | AddressFamily::Inet6) => Family::Tcp,
        _ => return Err("is neither a Unix nor a TCP/IP socket".into()),
    };
    match getsockopt(socket, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(SockType::Datagram) => {
            return Err("is a datagram socket (ListenDatagram=), not a stream socket".into());
        }
        Ok(other) => return Err(format!("is a {other:?} socket, not a stream socket")),
        Err(error) => return Err(format!("cannot be inspected (SO_TYPE: {error})")),
    }
    match getsockopt(socket, sockopt::AcceptConn) {
        Ok(true) => Ok(family),
        Ok(false) => Err(
            "is not listening (a single connection, as Accept=yes passes, or a socket never put to listen)"
                .into(),
        ),
        Err(error) => Err(format!("cannot be inspected (SO_ACCEPTCONN: {error})")),
    }
}

/// A TCP socket whose name is neither `tcp` nor `metrics` (a typo such as `Metrics`) is served
/// as the verify TCP listener, as promised; said once at start, so the typo can be seen.
fn warn_unknown_name(name: &str, listener: &std::net::TcpListener) {
    let address = listener
        .local_addr()
        .map_or_else(|_| "(unknown)".into(), |a| a.to_string());
    tracing::warn!(
        name,
        address,
        served_as = "tcp",
        expected = "tcp or metrics (FileDescriptorName=)",
        "activated_socket_unknown_name"
    );
}

/// Whether `LISTEN_PID` names this process.
fn passed_to_this_process() -> bool {
    std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id())
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
    let parent = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => parent,
        None => Path::new("."),
    };
    // 0755 whatever the umask: a directory others could write would let them replace the socket.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(parent)
        .map_err(|e| io_error("create the directory of", e))?;
    check_directories(parent)?;
    remove_if_stale(path)?;

    // The bind creates the file with 0777 & !umask: exactly `mode`, never more open.
    let previous = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = std::os::unix::net::UnixListener::bind(path);
    umask(previous);
    let listener = bound.map_err(|e| io_error("bind", e))?;
    let metadata = std::fs::symlink_metadata(path).map_err(|e| io_error("stat", e))?;
    let file = SocketFile {
        path: path.to_path_buf(),
        identity: (metadata.dev(), metadata.ino()),
    };
    if let Some(gid) = gid {
        // AT_SYMLINK_NOFOLLOW: were a link there, its own group would change, not its target's.
        fchownat(
            AT_FDCWD,
            path,
            None,
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error("set the group of", e.into()))?;
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| io_error("configure", e))?;
    Ok((listener, file))
}

/// Every directory the socket's path goes through (as written, and with links resolved) must be
/// owned by root or this process's user and writable by nobody else — a directory above the
/// socket's own may be world-writable with the sticky bit (as /tmp), where others cannot rename
/// what is not theirs.
fn check_directories(dir: &Path) -> Result<(), ListenError> {
    let unsafe_dir = |path: &Path, why: String| ListenError::UnsafeDirectory {
        path: path.to_path_buf(),
        why,
    };
    let absolute = std::path::absolute(dir).map_err(|e| unsafe_dir(dir, e.to_string()))?;
    let resolved = std::fs::canonicalize(dir).map_err(|e| unsafe_dir(dir, e.to_string()))?;
    let me = geteuid().as_raw();
    let every = [&absolute, &resolved].into_iter().flat_map(|base| {
        // The first ancestor is the socket's own directory.
        base.ancestors().enumerate().map(|(n, path)| (n == 0, path))
    });
    for (own, path) in every {
        // A link on the way is as good as whoever owns it: in a sticky directory (/tmp) its owner
        // can re-point it at a directory of their own after the check.
        let link = std::fs::symlink_metadata(path).map_err(|e| unsafe_dir(path, e.to_string()))?;
        if link.file_type().is_symlink() && link.uid() != 0 && link.uid() != me {
            return Err(unsafe_dir(
                path,
                format!("it is a link owned by uid {}", link.uid()),
            ));
        }
        let metadata = std::fs::metadata(path).map_err(|e| unsafe_dir(path, e.to_string()))?;
        if let Some(why) = unsafe_because(&metadata, me, own) {
            return Err(unsafe_dir(path, why));
        }
    }
    Ok(())
}

/// Why a directory is not safe to hold (`own`) or lead to the socket, if it is not.
fn unsafe_because(metadata: &std::fs::Metadata, me: u32, own: bool) -> Option<String> {
    let (owner, mode) = (metadata.uid(), metadata.mode());
    if owner != 0 && owner != me {
        return Some(format!("it belongs to uid {owner}"));
    }
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && (own || !sticky) {
        return Some(format!(
            "it is writable by its group or others (mode {:04o})",
            mode & 0o7777
        ));
    }
    None
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

/// Binds a TCP listener (`listen_tcp`, `metrics_listen`), non-blocking.
pub fn bind_tcp(address: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `bind_unix` sets the process's umask for its bind: a directory another test creates
    /// meanwhile would get the socket's mode (0660) and be refused. One test at a time.
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        UMASK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[test]
    fn only_listening_stream_sockets_are_usable() {
        let dir = tempfile::tempdir().unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let unix = std::os::unix::net::UnixListener::bind(dir.path().join("s")).unwrap();
        assert_eq!(usable(&tcp.try_clone().unwrap().into()), Ok(Family::Tcp));
        assert_eq!(usable(&unix.try_clone().unwrap().into()), Ok(Family::Unix));

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let datagram = std::os::unix::net::UnixDatagram::bind(dir.path().join("d")).unwrap();
        for socket in [OwnedFd::from(udp), OwnedFd::from(datagram)] {
            let why = usable(&socket).unwrap_err();
            assert!(why.contains("datagram"), "{why}");
        }
        // A connection (what Accept=yes passes) is a stream socket that does not listen.
        let connection = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let (accepted, _) = tcp.accept().unwrap();
        for socket in [OwnedFd::from(connection), OwnedFd::from(accepted)] {
            let why = usable(&socket).unwrap_err();
            assert!(why.contains("not listening"), "{why}");
        }
        let (read, _write) = nix::unistd::pipe().unwrap();
        let why = usable(&read).unwrap_err();
        assert!(why.contains("neither"), "{why}");
    }

    #[test]
    fn a_directory_others_can_write_is_refused_and_nothing_is_bound() {
        let _serial = one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        for mode in [0o777, 0o1777, 0o775] {
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = bind_unix(&open.join("d.sock"), 0o660, None).err();
            assert!(
                matches!(error, Some(ListenError::UnsafeDirectory { .. })),
                "{mode:o}: {error:?}"
            );
            assert!(!open.join("d.sock").exists());
        }
        // A link owned by another user on the way is refused, even into a safe directory.
        let safe = dir.path().join("safe");
        std::fs::create_dir(&safe).unwrap();
        let link = open.join("link");
        std::os::unix::fs::symlink(&safe, &link).unwrap();
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            &link,
            Some(nix::unistd::Uid::from_raw(65534)),
            None,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let error = bind_unix(&link.join("d.sock"), 0o660, None).err();
        assert!(
            matches!(&error, Some(ListenError::UnsafeDirectory { why, .. }) if why.contains("link")),
            "{error:?}"
        );
        // World-writable and sticky above the socket's own directory is fine (as /tmp).
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let (_listener, _file) = bind_unix(&open.join("run/d.sock"), 0o660, None).unwrap();
    }

    #[test]
    fn binds_with_mode_and_removes_only_its_own_file() {
        let _serial = one_at_a_time();
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
        let _serial = one_at_a_time();
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
        let _serial = one_at_a_time();
        let dir = tempfile::tempdir().unwrap();
        let error = bind_unix(&dir.path().join("s"), 0o660, Some("no-such-group-heare")).err();
        assert!(matches!(error, Some(ListenError::UnknownGroup(_))));
    }
}
