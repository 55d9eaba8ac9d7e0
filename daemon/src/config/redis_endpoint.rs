//! Whether a local user could answer in place of the Redis the rate limits are kept in.
//!
//! The daemon believes whatever answers at `redis_url`: an answer refusing a key is a 429 (for at
//! most one interval, see `rate_limit::redis`), one accepting it lets the request through, and
//! the connection carries the password. On this host two endpoints are open to any local user
//! while Redis is down or restarting, and both are refused at start unless `redis_insecure =
//! true`:
//! - plain `redis://` to this host on a port at or above `net.ipv4.ip_unprivileged_port_start`
//!   (anyone may bind it). "This host" is judged on the addresses the name resolves to, as the
//!   client will resolve it (`127.1`, `0`, `[::ffff:127.0.0.1]`, the host's own name or LAN
//!   address all count): loopback, unspecified, or an address this host can bind;
//! - a Unix socket someone else could put in place: its real path (links followed) has a
//!   directory anyone may write ([`open_directory`]).
//!
//! Holding either, they could refuse every limited key for as long as they hold it. `rediss://`
//! checks the server's certificate, a port below the limit only root can bind, and a Redis on
//! another host is not a local user's to answer for (the network between is TLS's to protect).
//! A name that does not resolve at start is judged by its spelling alone (`localhost`, a
//! loopback address).

use crate::ports;
use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Links followed at most from the socket's name (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// What a connection to `redis_url` would reach.
enum Endpoint {
    /// Plain `redis://` to `host`:`port`.
    Plain { host: String, port: u16 },
    /// `unix://` or `redis+unix://` to the socket at this path.
    Socket(PathBuf),
}

/// Why a local user could answer in Redis's place at `url` (never quoting a password the URL
/// may hold); `None` when they could not, or when `url` does not parse (the client refuses it at
/// start, with its reason).
pub fn squattable(url: &str) -> Option<String> {
    match endpoint(url)? {
        Endpoint::Plain { host, port } => (is_this_host(&host, port)
            && !ports::is_privileged(port))
        .then(|| {
            format!("plain redis:// to {host}:{port}, a port of this host any local user can bind while Redis is down")
        }),
        Endpoint::Socket(path) => open_directory(&path).map(|dir| {
            format!(
                "the socket {} is under {}, a directory other users can write, where they can put a socket of their own while Redis is down",
                path.display(),
                dir.display()
            )
        }),
    }
}

fn endpoint(url: &str) -> Option<Endpoint> {
    let parsed = redis::parse_redis_url(url)?;
    match parsed.scheme() {
        "redis" => Some(Endpoint::Plain {
            host: parsed.host_str()?.to_string(),
            port: parsed.port().unwrap_or(6379),
        }),
        "unix" | "redis+unix" => Some(Endpoint::Socket(parsed.to_file_path().ok()?)),
        _ => None,
    }
}

/// Whether `host` names this host: spelled as loopback, or resolving to an address of it.
fn is_this_host(host: &str, port: u16) -> bool {
    let bare = host.trim_matches(['[', ']']);
    let resolved = (bare, port)
        .to_socket_addrs()
        .is_ok_and(|mut addresses| addresses.any(|address| is_local(address.ip())));
    resolved || ports::is_loopback_host(host)
}

/// Loopback, unspecified (a connection to it reaches this host), or an address this host can
/// bind (its own, which a local user can bind too).
fn is_local(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || TcpListener::bind((ip, 0)).is_ok()
}

/// The directory on the socket's real path (its links followed) that lets another user put a
/// socket of their own at it:
/// - the nearest existing directory, when others may write it (the name is free while Redis is
///   down; directories not made yet are whoever may write that one's to make);
/// - one further up that others may write without the sticky bit (what is below can be renamed
///   away and replaced);
/// - one further up that others may write with the sticky bit, when the directory below it on
///   the path is owned by anyone but root or this process's user (its owner may rename it).
///
/// The nearest directory's owner is trusted: that is whoever runs Redis.
fn open_directory(socket: &Path) -> Option<PathBuf> {
    let real = real_path(socket);
    let mut below: Option<u32> = None;
    for dir in real.ancestors().skip(1) {
        let Ok(metadata) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = metadata.permissions().mode();
        let others_write = mode & 0o002 != 0;
        let sticky = mode & 0o1000 != 0;
        let open = match below {
            None => others_write,
            Some(owner) => others_write && (!sticky || !trusted(owner)),
        };
        if open {
            return Some(dir.to_path_buf());
        }
        below = Some(metadata.uid());
    }
    None
}

/// Root, or the user this process runs as.
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// `socket` with the links of its own name followed, then its nearest existing directory made
/// canonical (every link on the way resolved); what does not exist yet is kept as written.
fn real_path(socket: &Path) -> PathBuf {
    let mut path = socket.to_path_buf();
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&path) else {
            break;
        };
        path = match path.parent() {
            Some(parent) => parent.join(target),
            None => target,
        };
    }
    for dir in path.ancestors().skip(1) {
        if let (Ok(real), Ok(rest)) = (std::fs::canonicalize(dir), path.strip_prefix(dir)) {
            return real.join(rest);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn ports_of_this_host_any_user_can_bind_are_squattable() {
        let why = squattable("redis://:pw-Secret1@127.0.0.1:6379").unwrap();
        assert!(why.contains("127.0.0.1:6379"), "{why}");
        assert!(!why.contains("pw-Secret1"), "{why}");
        assert!(
            squattable("redis://localhost")
                .unwrap()
                .contains("localhost:6379")
        );
        assert!(
            squattable("redis://[::1]:6380")
                .unwrap()
                .contains("[::1]:6380")
        );
        // Spellings the client resolves to this host.
        for local in [
            "redis://127.1:6379",
            "redis://2130706433:6379",
            "redis://0:6379",
            "redis://[::ffff:127.0.0.1]:6379",
        ] {
            assert!(squattable(local).is_some(), "{local}");
        }
        for safe in [
            "rediss://127.0.0.1:6379",
            "redis://192.0.2.7:6379",
            "redis://cache.invalid:6379",
            "not a url",
        ] {
            assert_eq!(squattable(safe), None, "{safe}");
        }
        // This host's own name, where it resolves (Debian: 127.0.1.1 in /etc/hosts).
        let name = nix::unistd::gethostname().unwrap();
        let name = name.to_string_lossy();
        if is_this_host(&name, 6379) {
            assert!(squattable(&format!("redis://{name}:6379")).is_some());
        }
        // Port 1, where only root can bind it (not where the limit is 0).
        if ports::is_privileged(1) {
            assert_eq!(squattable("redis://127.0.0.1:1"), None);
        }
    }

    fn dir_with_mode(path: &Path, mode: u32) -> PathBuf {
        std::fs::create_dir_all(path).unwrap();
        std::fs::set_permissions(path, PermissionsExt::from_mode(mode)).unwrap();
        path.to_path_buf()
    }

    fn unix(path: &Path) -> String {
        format!("unix://{}", path.display())
    }

    #[test]
    fn sockets_other_users_could_put_in_place_are_squattable() {
        let root = tempfile::tempdir().unwrap();
        dir_with_mode(root.path(), 0o755);
        let private = dir_with_mode(&root.path().join("private"), 0o750);
        assert_eq!(squattable(&unix(&private.join("redis.sock"))), None);
        // Not there yet: judged by the directory that is.
        assert_eq!(squattable(&unix(&private.join("later/redis.sock"))), None);

        let open = root.path().join("open");
        for mode in [0o777, 0o1777] {
            dir_with_mode(&open, mode);
            let why = squattable(&unix(&open.join("redis.sock"))).unwrap();
            assert!(why.contains(&open.display().to_string()), "{mode:o}: {why}");
            let later = format!("redis+unix://{}", open.join("a/redis.sock").display());
            assert!(
                squattable(&later).is_some(),
                "{mode:o}: anyone could make a/"
            );
        }
        // Further up: without the sticky bit anything below can be renamed away; with it, only
        // by its owner, who must be root or this user.
        let inner = dir_with_mode(&open.join("inner"), 0o755);
        assert_eq!(squattable(&unix(&inner.join("redis.sock"))), None);
        dir_with_mode(&open, 0o777);
        assert!(squattable(&unix(&inner.join("redis.sock"))).is_some());
        dir_with_mode(&open, 0o1777);
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&inner, Some(54_321), None).unwrap();
            let why = squattable(&unix(&inner.join("redis.sock"))).unwrap();
            assert!(why.contains(&open.display().to_string()), "{why}");
        }
    }

    #[test]
    fn links_are_judged_where_they_lead() {
        let root = tempfile::tempdir().unwrap();
        dir_with_mode(root.path(), 0o755);
        let private = dir_with_mode(&root.path().join("private"), 0o755);
        let open = dir_with_mode(&root.path().join("open"), 0o1777);
        // The socket's name links into a directory anyone can write (dangling, or not).
        symlink(open.join("redis.sock"), private.join("redis.sock")).unwrap();
        assert!(squattable(&unix(&private.join("redis.sock"))).is_some());
        // A directory on the way links into one whose parent anyone can write, unsticky.
        let shared = dir_with_mode(&root.path().join("shared"), 0o777);
        let target = dir_with_mode(&shared.join("redis"), 0o755);
        symlink(&target, private.join("redis")).unwrap();
        let why = squattable(&unix(&private.join("redis/redis.sock"))).unwrap();
        assert!(why.contains(&shared.display().to_string()), "{why}");
        // A link to a private place is fine.
        let safe = dir_with_mode(&root.path().join("safe"), 0o750);
        symlink(safe.join("redis.sock"), private.join("safe.sock")).unwrap();
        assert_eq!(squattable(&unix(&private.join("safe.sock"))), None);
    }
}
