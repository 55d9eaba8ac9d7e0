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
//! - a Unix socket another user could put in place ([`open_directory`]): the path is walked as
//!   the kernel walks it, one name at a time with every link followed, and each directory that
//!   holds a name on the way is judged (by its mode, its owner, and the owner of the name).
//!
//! The check runs once, at start: what it judges (modes, owners, links) only their owners can
//! change later, but a name that resolves elsewhere later, an address this host gains later, or a
//! root-owned directory removed and left for anyone to make again is not seen.
//! Holding either, they could refuse every limited key for as long as they hold it. `rediss://`
//! checks the server's certificate, a port below the limit only root can bind, and a Redis on
//! another host is not a local user's to answer for (the network between is TLS's to protect).
//! A name that does not resolve at start is judged by its spelling alone (`localhost`, a
//! loopback address).

use crate::ports;
use nix::ifaddrs::getifaddrs;
use std::ffi::OsString;
use std::net::{IpAddr, ToSocketAddrs};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Links followed at most on the socket's path (the kernel's own limit).
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
                "the socket {} is reached through {}, a directory another user can change, where they can put a socket of their own while Redis is down",
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
    let Ok(addresses) = (bare, port).to_socket_addrs() else {
        return ports::is_loopback_host(host);
    };
    let own = own_addresses();
    let mut ips = addresses.map(|address| address.ip().to_canonical());
    ips.any(|ip| ip.is_loopback() || ip.is_unspecified() || own.contains(&ip))
        || ports::is_loopback_host(host)
}

/// The addresses of this host's interfaces (a link-local one without its scope).
fn own_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = getifaddrs() else {
        return Vec::new();
    };
    interfaces
        .filter_map(|interface| {
            let address = interface.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                return Some(IpAddr::V4(v4.ip()));
            }
            address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        })
        .collect()
}

/// One directory the kernel goes through to reach the socket, and the name it looks up there.
struct Step {
    dir: PathBuf,
    mode: u32,
    owner: u32,
    /// The owner of the name looked up; `None` when nothing has that name yet.
    entry_owner: Option<u32>,
    /// Whether the name is the socket's own (or missing: what follows is made later).
    last: bool,
    /// Whether the name is the socket's own name, as written or as a link led to it.
    own_name: bool,
}

/// The directory on the way to `socket` that lets another user put a socket of their own at it,
/// or one that cannot be read (judged open). Every step's directory must be owned by root or
/// this process's user, except the socket's own directory, which may be Redis's user's (only
/// when the walk reaches the socket's name there: a walk that stops early, at a missing name or a
/// link, ends in a directory whose owner proves nothing). Others may write a directory (group
/// or world) only when it is sticky and the name looked up there is not the socket's, exists and
/// is owned by root or this process's user (the sticky bit stops everyone but the name's owner
/// from renaming it away; a free name is anyone's).
fn open_directory(socket: &Path) -> Option<PathBuf> {
    let steps = match walk(socket) {
        Ok(steps) => steps,
        Err(unreadable) => return Some(unreadable),
    };
    let us = nix::unistd::geteuid().as_raw();
    let trusted = |uid: u32| uid == 0 || uid == us;
    let socket_dir = steps.len().checked_sub(1)?;
    steps.iter().enumerate().find_map(|(index, step)| {
        let others_write = step.mode & 0o022 != 0;
        let sticky = step.mode & 0o1000 != 0;
        let held = !step.last && step.entry_owner.is_some_and(trusted);
        let redis_dir = index == socket_dir && step.own_name;
        let open = !(trusted(step.owner) || redis_dir) || (others_write && !(sticky && held));
        open.then(|| step.dir.clone())
    })
}

/// The steps of the kernel's walk to `socket` (an absolute path), links followed; `Err` with the
/// path that could not be read, or that links too often.
fn walk(socket: &Path) -> Result<Vec<Step>, PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, socket);
    let mut resolved = PathBuf::from("/");
    let mut steps = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        match name.to_str() {
            Some(".") => continue,
            Some("..") => {
                resolved.pop();
                continue;
            }
            _ => {}
        }
        let entry = resolved.join(&name);
        let dir = std::fs::metadata(&resolved).map_err(|_| resolved.clone())?;
        let mut step = Step {
            dir: resolved.clone(),
            mode: dir.permissions().mode(),
            owner: dir.uid(),
            entry_owner: None,
            last: pending.is_empty(),
            own_name: pending.is_empty(),
        };
        let found = match std::fs::symlink_metadata(&entry) {
            Ok(found) => found,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                step.last = true;
                steps.push(step);
                return Ok(steps);
            }
            Err(_) => return Err(entry),
        };
        step.entry_owner = Some(found.uid());
        steps.push(step);
        if found.file_type().is_symlink() {
            links += 1;
            let target = std::fs::read_link(&entry).map_err(|_| entry.clone())?;
            if links > MAX_LINKS {
                return Err(entry);
            }
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            push_components(&mut pending, &target);
        } else {
            resolved = entry;
        }
    }
    Ok(steps)
}

/// Puts `path`'s names on `pending` so that the first is popped first.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let names = path.components().filter_map(|component| match component {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some("..".into()),
        Component::CurDir => Some(".".into()),
        Component::RootDir | Component::Prefix(_) => None,
    });
    let names: Vec<OsString> = names.collect();
    pending.extend(names.into_iter().rev());
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
        // An address of one of this host's interfaces, where it has one besides loopback.
        if let Some(own) = own_addresses()
            .into_iter()
            .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        {
            assert!(
                squattable(&format!("redis://{own}:6379")).is_some(),
                "{own}"
            );
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
        // Writable by the directory's group: its other members may replace the socket.
        let grouped = dir_with_mode(&root.path().join("grouped"), 0o775);
        assert!(squattable(&unix(&grouped.join("redis.sock"))).is_some());
        if nix::unistd::geteuid().is_root() {
            // A directory further up owned by another user than Redis's, root or ours.
            let theirs = dir_with_mode(&root.path().join("theirs"), 0o755);
            let redis = dir_with_mode(&theirs.join("redis"), 0o755);
            std::os::unix::fs::chown(&theirs, Some(54_321), None).unwrap();
            let why = squattable(&unix(&redis.join("redis.sock"))).unwrap();
            assert!(why.contains(&theirs.display().to_string()), "{why}");
            // ... however its owner makes the walk end in a directory of theirs: the socket's
            // directory moved away, made again, or a link back.
            std::os::unix::fs::chown(&redis, Some(54_322), None).unwrap();
            std::fs::rename(&redis, theirs.join("old")).unwrap();
            assert!(squattable(&unix(&redis.join("redis.sock"))).is_some());
            dir_with_mode(&redis, 0o755);
            std::os::unix::fs::chown(&redis, Some(54_321), None).unwrap();
            assert!(squattable(&unix(&redis.join("redis.sock"))).is_some());
            std::fs::remove_dir(&redis).unwrap();
            symlink(".", &redis).unwrap();
            assert!(squattable(&unix(&redis.join("redis.sock"))).is_some());
            std::fs::remove_file(&redis).unwrap();
            std::fs::rename(theirs.join("old"), &redis).unwrap();
            // Redis's own user may own the socket's directory.
            std::os::unix::fs::chown(&theirs, Some(0), None).unwrap();
            assert_eq!(squattable(&unix(&redis.join("redis.sock"))), None);
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
        // The socket's name is a link, in a directory anyone can write: anyone can replace the
        // link, whatever it points to.
        let sticky = dir_with_mode(&root.path().join("sticky"), 0o1777);
        symlink(private.join("x.sock"), sticky.join("redis.sock")).unwrap();
        assert!(squattable(&unix(&sticky.join("redis.sock"))).is_some());
        // A directory link leading to a name not made yet in a directory anyone can write.
        symlink(open.join("later"), private.join("later")).unwrap();
        let why = squattable(&unix(&private.join("later/redis.sock"))).unwrap();
        assert!(why.contains(&open.display().to_string()), "{why}");
        // A link to a private place is fine.
        let safe = dir_with_mode(&root.path().join("safe"), 0o750);
        symlink(safe.join("redis.sock"), private.join("safe.sock")).unwrap();
        assert_eq!(squattable(&unix(&private.join("safe.sock"))), None);
    }
}
