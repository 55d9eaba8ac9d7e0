//! Whether a local user could answer in place of the Redis the rate limits are kept in.
//!
//! The daemon believes whatever answers at `redis_url`: an answer refusing a key is a 429 (for at
//! most one interval, see `rate_limit::redis`), one accepting it lets the request through, and
//! the connection carries the password. On this host two endpoints are open to any local user
//! while Redis is down or restarting: a plain `redis://` loopback port at or above
//! `net.ipv4.ip_unprivileged_port_start` (anyone may bind it), and a Unix socket in a directory
//! anyone may write (anyone may create a socket there once Redis has removed its own). Holding
//! either, they could refuse every limited key for as long as they hold it. Both are refused at
//! start unless `redis_insecure = true`. `rediss://` checks the server's certificate, a port
//! below the limit only root can bind, and a Redis on another host is not a local user's to
//! answer for (the network between is TLS's to protect).

use crate::ports;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

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
        Endpoint::Plain { host, port } => (ports::is_loopback_host(&host)
            && !ports::is_privileged(port))
        .then(|| {
            format!("plain redis:// to {host}:{port}, a port any local user can bind while Redis is down")
        }),
        Endpoint::Socket(path) => writable_by_anyone(&path).map(|dir| {
            format!(
                "the socket {} is in {}, a directory any local user can write, where they can put a socket of their own while Redis is down",
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

/// The directory above `socket` in which anyone may put a socket of their own or swap the path
/// to it: the nearest existing one writable by others (sticky or not: the socket's name is free
/// while Redis is down), or one further up writable by others without the sticky bit (a
/// directory on the way can be renamed away and replaced). Directories that do not exist yet
/// are skipped: whoever may create them is judged by the one above.
fn writable_by_anyone(socket: &Path) -> Option<PathBuf> {
    let mut nearest = true;
    for dir in socket.ancestors().skip(1) {
        let Ok(metadata) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = metadata.permissions().mode();
        let others_write = mode & 0o002 != 0;
        let sticky = mode & 0o1000 != 0;
        if others_write && (nearest || !sticky) {
            return Some(dir.to_path_buf());
        }
        nearest = false;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ports_any_user_can_bind_are_squattable() {
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
        for safe in [
            "rediss://127.0.0.1:6379",
            "redis://10.0.0.7:6379",
            "redis://cache.example:6379",
            "not a url",
        ] {
            assert_eq!(squattable(safe), None, "{safe}");
        }
        // Port 1, where only root can bind it (not where the limit is 0).
        if ports::is_privileged(1) {
            assert_eq!(squattable("redis://127.0.0.1:1"), None);
        }
    }

    #[test]
    fn sockets_in_directories_anyone_can_write_are_squattable() {
        let root = tempfile::tempdir().unwrap();
        let private = root.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(root.path(), PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&private, PermissionsExt::from_mode(0o750)).unwrap();
        let url = |path: &Path| format!("unix://{}", path.display());
        assert_eq!(squattable(&url(&private.join("redis.sock"))), None);
        // Not there yet: judged by the directory that is.
        assert_eq!(squattable(&url(&private.join("later/redis.sock"))), None);

        let open = root.path().join("open");
        std::fs::create_dir(&open).unwrap();
        for mode in [0o777, 0o1777] {
            std::fs::set_permissions(&open, PermissionsExt::from_mode(mode)).unwrap();
            let why = squattable(&url(&open.join("redis.sock"))).unwrap();
            assert!(why.contains(&open.display().to_string()), "{mode:o}: {why}");
            let missing = squattable(&format!(
                "redis+unix://{}",
                open.join("a/redis.sock").display()
            ));
            assert!(
                missing.is_some(),
                "{mode:o}: a directory anyone could create"
            );
        }
        // Further up, the sticky bit protects what others made; without it, anything below
        // can be renamed away.
        let inner = open.join("inner");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&open, PermissionsExt::from_mode(0o1777)).unwrap();
        assert_eq!(squattable(&url(&inner.join("redis.sock"))), None);
        std::fs::set_permissions(&open, PermissionsExt::from_mode(0o777)).unwrap();
        assert!(squattable(&url(&inner.join("redis.sock"))).is_some());
    }
}
