//! Who is on the other end of a connection, and whether they may call the admin endpoints.
//!
//! On the Unix socket the kernel tells us the peer's uid, gid and pid (SO_PEERCRED); that, not
//! anything in the request, decides admin rights: uid 0, the daemon's own uid, or membership in
//! the configured admin group. On TCP there are no credentials: admin calls are refused unless
//! explicitly allowed for loopback peers. Headers such as X-Forwarded-For are never consulted.

use crate::state::AdminPolicy;
use nix::unistd::{Gid, Group, Uid, User};
use std::net::SocketAddr;

/// The peer of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
    },
    Tcp(SocketAddr),
}

impl Peer {
    /// The peer as log fields: uid and pid on the Unix socket, the address on TCP.
    pub fn log_fields(self) -> (Option<u32>, Option<i32>, Option<String>) {
        match self {
            Peer::Unix { uid, pid, .. } => (Some(uid), pid, None),
            Peer::Tcp(address) => (None, None, Some(address.to_string())),
        }
    }
}

/// Why an admin call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotAdminUser,
    TcpNotAllowed,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotAdminUser => {
                "admin endpoint: the caller is not root, the daemon's user, or in its admin_group"
            }
            Refusal::TcpNotAllowed => {
                "admin endpoint: refused on TCP (use the Unix socket, or set tcp_admin_from_loopback)"
            }
        }
    }
}

/// Decides whether `peer` may call admin endpoints.
pub fn check_admin(peer: Peer, policy: &AdminPolicy) -> Result<(), Refusal> {
    match peer {
        Peer::Unix { uid, gid, .. } => {
            if uid == 0 || uid == policy.own_uid {
                return Ok(());
            }
            match &policy.admin_group {
                Some(group) if in_group(uid, gid, group) => Ok(()),
                _ => Err(Refusal::NotAdminUser),
            }
        }
        Peer::Tcp(address) => {
            if policy.tcp_from_loopback && address.ip().is_loopback() {
                Ok(())
            } else {
                Err(Refusal::TcpNotAllowed)
            }
        }
    }
}

/// Whether the user `uid` (running with primary group `gid`) belongs to the group `name`.
fn in_group(uid: u32, gid: u32, name: &str) -> bool {
    let Ok(Some(group)) = Group::from_name(name) else {
        return false;
    };
    if group.gid == Gid::from_raw(gid) {
        return true;
    }
    match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(user)) => user.gid == group.gid || group.mem.contains(&user.name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(group: Option<&str>, tcp: bool) -> AdminPolicy {
        AdminPolicy {
            own_uid: 4242,
            admin_group: group.map(str::to_string),
            tcp_from_loopback: tcp,
        }
    }

    fn unix(uid: u32, gid: u32) -> Peer {
        Peer::Unix {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn root_and_own_uid_are_admins_others_are_not() {
        assert_eq!(check_admin(unix(0, 0), &policy(None, false)), Ok(()));
        assert_eq!(check_admin(unix(4242, 1), &policy(None, false)), Ok(()));
        assert_eq!(
            check_admin(unix(1000, 1000), &policy(None, false)),
            Err(Refusal::NotAdminUser)
        );
    }

    #[test]
    fn admin_group_by_primary_gid() {
        // Group "root" has gid 0 on every Linux system.
        assert_eq!(
            check_admin(unix(1000, 0), &policy(Some("root"), false)),
            Ok(())
        );
        assert!(check_admin(unix(1000, 1000), &policy(Some("no-such-group-x"), false)).is_err());
    }

    #[test]
    fn tcp_only_from_loopback_and_only_when_enabled() {
        let local = Peer::Tcp("127.0.0.1:5000".parse().unwrap());
        let remote = Peer::Tcp("192.0.2.7:5000".parse().unwrap());
        assert_eq!(
            check_admin(local, &policy(None, false)),
            Err(Refusal::TcpNotAllowed)
        );
        assert_eq!(check_admin(local, &policy(None, true)), Ok(()));
        assert_eq!(
            check_admin(remote, &policy(None, true)),
            Err(Refusal::TcpNotAllowed)
        );
    }
}
