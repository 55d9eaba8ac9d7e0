//! Who is on the other end of a connection, and whether they may call the admin endpoints.
//!
//! On the Unix socket the kernel tells us the peer's uid, gid and pid (SO_PEERCRED) and its
//! supplementary groups (SO_PEERGROUPS), as they were when it connected; that, not anything in the
//! request and not the group database, decides admin rights: uid 0, the daemon's own uid, or
//! holding the admin group's gid (resolved once at start) as primary or supplementary group. A
//! process of a user listed in the group who dropped the group is not an admin; one holding it
//! only as a supplementary group is. Nothing here calls NSS, so a slow LDAP or SSSD cannot stall
//! a worker. On TCP there are no credentials: admin calls are refused unless explicitly allowed
//! for loopback peers. Headers such as X-Forwarded-For are never consulted.

use crate::access_log::PeerFields;
use crate::server::connections::PeerKey;
use crate::state::AdminPolicy;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

/// The peer of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Unix {
        uid: u32,
        gid: u32,
        pid: Option<i32>,
        /// Whether it held the admin group (primary or supplementary) when it connected.
        in_admin_group: bool,
    },
    Tcp(SocketAddr),
}

impl Peer {
    /// The peer of a Unix connection, from the kernel's credentials.
    pub fn of_unix(
        stream: &tokio::net::UnixStream,
        admin_gid: Option<u32>,
    ) -> std::io::Result<Peer> {
        let credentials = stream.peer_cred()?;
        let gid = credentials.gid();
        let in_admin_group = match admin_gid {
            None => false,
            Some(admin) if admin == gid => true,
            // Unknown groups (an error reading them) are not the admin group: fail closed.
            Some(admin) => supplementary_groups(stream).is_ok_and(|groups| groups.contains(&admin)),
        };
        Ok(Peer::Unix {
            uid: credentials.uid(),
            gid,
            pid: credentials.pid(),
            in_admin_group,
        })
    }

    /// Who this peer counts against for the per-peer connection limits: its uid on the Unix
    /// socket; on TCP its IPv4 address, or its IPv6 /64 (one host usually holds a whole /64),
    /// and every loopback address as one (any local user can bind 127.0.0.2, .3, …).
    pub fn limit_key(self) -> PeerKey {
        match self {
            Peer::Unix { uid, .. } => PeerKey::Uid(uid),
            Peer::Tcp(address) if address.ip().to_canonical().is_loopback() => {
                PeerKey::Address(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
            }
            Peer::Tcp(address) => match address.ip().to_canonical() {
                IpAddr::V6(v6) => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    PeerKey::Address(IpAddr::V6(prefix.into()))
                }
                v4 => PeerKey::Address(v4),
            },
        }
    }

    /// The peer as log fields: uid and pid on the Unix socket, the address on TCP.
    pub fn log_fields(self) -> PeerFields {
        match self {
            Peer::Unix { uid, pid, .. } => PeerFields {
                uid: Some(uid),
                pid,
                addr: None,
            },
            Peer::Tcp(address) => PeerFields {
                uid: None,
                pid: None,
                addr: Some(address),
            },
        }
    }
}

/// SO_PEERGROUPS (Linux 4.13), the same number on every architecture this daemon is built for.
#[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
const SO_PEERGROUPS: nix::libc::c_int = 59;

/// The supplementary groups the peer of `socket` held when it connected.
fn supplementary_groups(socket: &impl AsFd) -> std::io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<nix::libc::gid_t>();
    let mut groups: Vec<nix::libc::gid_t> = vec![0; 32];
    loop {
        let mut length = (groups.len() * GID) as nix::libc::socklen_t;
        // SAFETY: the buffer holds `length` bytes of gid_t, and the kernel writes at most that
        // many, reporting in `length` what it wrote (or, with ERANGE, what it needs).
        let result = unsafe {
            nix::libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                nix::libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut length,
            )
        };
        let needed = length as usize / GID;
        if result == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(nix::libc::ERANGE)
            || needed <= groups.len()
            || needed > 65536
        {
            return Err(error);
        }
        groups.resize(needed, 0);
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
        Peer::Unix {
            uid,
            in_admin_group,
            ..
        } => {
            if uid == 0 || uid == policy.own_uid || in_admin_group {
                Ok(())
            } else {
                Err(Refusal::NotAdminUser)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tcp: bool) -> AdminPolicy {
        AdminPolicy {
            own_uid: 4242,
            tcp_from_loopback: tcp,
        }
    }

    fn unix(uid: u32, in_admin_group: bool) -> Peer {
        Peer::Unix {
            uid,
            gid: uid,
            pid: None,
            in_admin_group,
        }
    }

    #[test]
    fn root_own_uid_and_admin_group_holders_are_admins_others_are_not() {
        assert_eq!(check_admin(unix(0, false), &policy(false)), Ok(()));
        assert_eq!(check_admin(unix(4242, false), &policy(false)), Ok(()));
        assert_eq!(check_admin(unix(1000, true), &policy(false)), Ok(()));
        assert_eq!(
            check_admin(unix(1000, false), &policy(false)),
            Err(Refusal::NotAdminUser)
        );
    }

    #[tokio::test]
    async fn supplementary_groups_are_the_peers_own() {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let mine: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut seen = supplementary_groups(&ours).unwrap();
        seen.sort_unstable();
        let mut expected = mine.clone();
        expected.sort_unstable();
        assert_eq!(seen, expected);
        let gid = nix::unistd::getegid().as_raw();
        let peer = Peer::of_unix(&theirs, Some(gid)).unwrap();
        assert!(matches!(
            peer,
            Peer::Unix {
                in_admin_group: true,
                ..
            }
        ));
        let peer = Peer::of_unix(&theirs, Some(u32::MAX - 7)).unwrap();
        assert!(matches!(
            peer,
            Peer::Unix {
                in_admin_group: false,
                ..
            }
        ));
    }

    #[test]
    fn peers_are_limited_by_uid_ipv4_address_or_ipv6_64() {
        assert_eq!(unix(7, false).limit_key(), PeerKey::Uid(7));
        let v4 = Peer::Tcp("192.0.2.7:5000".parse().unwrap());
        assert_eq!(
            v4.limit_key(),
            PeerKey::Address("192.0.2.7".parse().unwrap())
        );
        let mapped = Peer::Tcp("[::ffff:192.0.2.7]:5000".parse().unwrap());
        assert_eq!(mapped.limit_key(), v4.limit_key());
        let a = Peer::Tcp("[2001:db8:1:2:aaaa::1]:1".parse().unwrap());
        let b = Peer::Tcp("[2001:db8:1:2:bbbb::2]:1".parse().unwrap());
        let c = Peer::Tcp("[2001:db8:1:3::1]:1".parse().unwrap());
        assert_eq!(a.limit_key(), b.limit_key());
        assert_ne!(a.limit_key(), c.limit_key());
        let loopback = |text: &str| Peer::Tcp(text.parse().unwrap()).limit_key();
        assert_eq!(loopback("127.0.0.2:1"), loopback("127.0.0.1:2"));
        assert_eq!(loopback("127.255.0.9:1"), loopback("[::1]:2"));
    }

    #[test]
    fn tcp_only_from_loopback_and_only_when_enabled() {
        let local = Peer::Tcp("127.0.0.1:5000".parse().unwrap());
        let remote = Peer::Tcp("192.0.2.7:5000".parse().unwrap());
        assert_eq!(
            check_admin(local, &policy(false)),
            Err(Refusal::TcpNotAllowed)
        );
        assert_eq!(check_admin(local, &policy(true)), Ok(()));
        assert_eq!(
            check_admin(remote, &policy(true)),
            Err(Refusal::TcpNotAllowed)
        );
    }
}
