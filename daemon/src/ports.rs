//! Which TCP ports on this host only root can bind, and whether an address is on this host.
//!
//! Any local user can bind a port at or above `net.ipv4.ip_unprivileged_port_start` (1024 by
//! default) while its owner is not holding it, and answer in its place; below it only root (or
//! `CAP_NET_BIND_SERVICE`) can. So a plain TCP peer on this host is authenticated by nothing but
//! a privileged port.
//!
//! The limit is read from `/proc/sys` where readable. The unit's `ProcSubset=pid` hides it, and
//! assuming the kernel's default (1024) there would be wrong on hosts and network namespaces that
//! lower it (containers often set 0 or 80): then the kernel is asked instead. A process without
//! `CAP_NET_BIND_SERVICE` (the daemon under its unit) tries to bind the port with `IP_FREEBIND`
//! on an address no host has (192.0.2.1, TEST-NET-1): `EACCES` means only a privileged process
//! may bind it; the probe holds nothing afterwards. A process that has the capability learns
//! nothing from binding, so it fails closed: no port counts as privileged.

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// Where the kernel publishes the first port any user may bind.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// `CAP_NET_BIND_SERVICE`'s bit in `/proc/self/status`'s `CapEff`.
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;

/// The kernel's limit, when `/proc/sys` can be read.
fn published_start() -> Option<u16> {
    std::fs::read_to_string(UNPRIVILEGED_PORT_START)
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

/// Whether only root (or a holder of `CAP_NET_BIND_SERVICE`) can bind `port` on this host (a
/// port of 0 is never protected).
pub fn is_privileged(port: u16) -> bool {
    if port == 0 {
        return false;
    }
    match published_start() {
        Some(start) => port < start,
        None if holds_bind_capability() => false,
        None => bind_is_refused(port),
    }
}

/// Whether this process may bind any port (root, or `CAP_NET_BIND_SERVICE`); when its status
/// cannot be read, it is taken to have it (which makes [`is_privileged`] fail closed).
fn holds_bind_capability() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|effective| effective & CAP_NET_BIND_SERVICE != 0)
}

/// Whether the kernel refuses this process a bind of `port` for want of privilege. Any other
/// outcome (bound, or another error) counts as "any user may bind it".
fn bind_is_refused(port: u16) -> bool {
    let Ok(probe) = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    if setsockopt(&probe, sockopt::IpFreebind, &true).is_err() {
        return false;
    }
    let nowhere = SockaddrIn::new(192, 0, 2, 1, port);
    bind(probe.as_raw_fd(), &nowhere) == Err(Errno::EACCES)
}

/// Whether `host` (a name or an address, IPv6 possibly in brackets) names this host's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_addresses() {
        for host in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.9.9.9",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "example.com",
            "localhost.example.com",
            "[::2]",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn ports_below_the_kernels_limit_are_privileged() {
        let start = published_start().expect("the tests can read /proc/sys");
        assert!(start > 0);
        assert!(!is_privileged(0));
        assert!(!is_privileged(start));
        assert!(!is_privileged(u16::MAX));
        if start > 1 {
            assert!(is_privileged(start - 1));
        }
    }

    #[test]
    fn a_process_that_may_bind_any_port_learns_nothing_from_a_probe() {
        // The tests run as root: the probe binds, so it never calls a port privileged.
        if holds_bind_capability() {
            assert!(!bind_is_refused(80));
        }
    }
}
