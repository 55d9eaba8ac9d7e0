//! Which TCP ports on this host only root can bind, and whether an address is on this host.
//!
//! Any local user can bind a port at or above `net.ipv4.ip_unprivileged_port_start` (1024 by
//! default) while its owner is not holding it, and answer in its place; below it only root (or
//! `CAP_NET_BIND_SERVICE`) can. So a plain TCP peer on this host is authenticated by nothing but
//! a privileged port. The limit is read from `/proc/sys` where readable; under the unit's
//! `ProcSubset=pid` it is hidden, and the kernel's default, 1024, is assumed.

use std::net::IpAddr;

/// Where the kernel publishes the first port any user may bind.
const UNPRIVILEGED_PORT_START: &str = "/proc/sys/net/ipv4/ip_unprivileged_port_start";

/// The kernel's default, assumed when `/proc/sys` cannot be read.
const DEFAULT_UNPRIVILEGED_PORT_START: u16 = 1024;

/// The first port any local user may bind.
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string(UNPRIVILEGED_PORT_START)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(DEFAULT_UNPRIVILEGED_PORT_START)
}

/// Whether only root can bind `port` on this host (a port of 0 is never protected).
pub fn is_privileged(port: u16) -> bool {
    port != 0 && port < unprivileged_port_start()
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
        let start = unprivileged_port_start();
        assert!(start > 0);
        assert!(!is_privileged(0));
        assert!(!is_privileged(start));
        assert!(!is_privileged(u16::MAX));
        if start > 1 {
            assert!(is_privileged(start - 1));
        }
    }
}
