//! The units in `systemd/`, checked by systemd itself: `systemd-analyze verify` must print nothing
//! (it only warns about typos, so any output fails the test), and the service's exposure score
//! must be at most 1.5 ("OK") by `systemd-analyze security --offline=yes --threshold=15`. Also the
//! split between the daemon's group and its clients' group: the socket (unit and example
//! configuration) belongs to heare-auth-clients, which sysusers creates without adding the
//! daemon's user; the service leaves the socket's directory alone and may not dump core; the TCP
//! and metrics socket units name their sockets (`tcp`, `metrics`) and activate the service. The
//! booted package test (`tests/package/run`) checks the same on an installed system.

use heare_auth_tests::daemon::binary;
use std::path::{Path, PathBuf};
use std::process::Command;

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The value a unit file gives `key` (the last assignment wins, as in systemd).
fn unit_setting(unit: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(systemd_dir().join(unit)).unwrap();
    text.lines()
        .rev()
        .filter_map(|line| line.trim().split_once('='))
        .find(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim().to_string())
}

/// The socket units: the verify socket, and the TCP and metrics listeners (not enabled).
const SOCKETS: [&str; 3] = [
    "heare-authd.socket",
    "heare-authd-tcp.socket",
    "heare-authd-metrics.socket",
];

/// The units copied to `dir`, the service's ExecStart pointing at the built binary: the service
/// and the sockets.
fn units_with_built_binary(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let source = systemd_dir();
    let service = std::fs::read_to_string(source.join("heare-authd.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/sbin/heare-authd"));
    // verify checks that ExecStart exists: point it at the binary this test run built.
    let service = service.replace(
        "/usr/sbin/heare-authd",
        &binary("heare-authd").display().to_string(),
    );
    let service_path = dir.join("heare-authd.service");
    std::fs::write(&service_path, service).unwrap();
    let sockets = SOCKETS
        .iter()
        .map(|name| {
            let path = dir.join(name);
            std::fs::copy(source.join(name), &path).unwrap();
            path
        })
        .collect();
    (service_path, sockets)
}

#[test]
fn units_verify_cleanly_and_the_service_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let (service, sockets) = units_with_built_binary(dir.path());
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&sockets)
        .arg(&service)
        .output()
        .expect("systemd-analyze (package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=15"])
        .arg(&service)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 1.5:\n{report}");
    assert!(report.contains("Overall exposure level"), "{report}");
}

#[test]
fn sysusers_snippet_parses_and_makes_the_clients_group_without_the_daemon() {
    let sysusers = Command::new("systemd-sysusers")
        .args(["--dry-run"])
        .arg(systemd_dir().join("heare-auth.sysusers"))
        .output()
        .expect("systemd-sysusers");
    let said = String::from_utf8_lossy(&sysusers.stderr);
    assert!(sysusers.status.success(), "{said}");
    assert!(
        !said.contains("Failed") && !said.contains("Syntax"),
        "{said}"
    );
    for group in ["'heare-auth'", "'heare-auth-clients'"] {
        assert!(said.contains(&format!("Creating group {group}")), "{said}");
    }
    // An `m` line would make the daemon's user a member of some group: it needs none.
    let snippet = std::fs::read_to_string(systemd_dir().join("heare-auth.sysusers")).unwrap();
    assert!(
        !snippet
            .lines()
            .any(|line| line.trim_start().starts_with('m')),
        "{snippet}"
    );
}

#[test]
fn the_socket_belongs_to_the_clients_group_and_the_service_dumps_no_core() {
    assert_eq!(
        unit_setting("heare-authd.socket", "SocketGroup").as_deref(),
        Some("heare-auth-clients")
    );
    assert_eq!(
        unit_setting("heare-authd.service", "Group").as_deref(),
        Some("heare-auth")
    );
    assert_eq!(
        unit_setting("heare-authd.service", "LimitCORE").as_deref(),
        Some("0")
    );
    // A RuntimeDirectory= would chown /run/heare-auth and the socket in it to the service's
    // user and group on the first start, taking the socket from heare-auth-clients.
    assert_eq!(
        unit_setting("heare-authd.service", "RuntimeDirectory"),
        None
    );
}

/// Every value `key` has in `unit`, in order.
fn unit_settings(unit: &str, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(systemd_dir().join(unit)).unwrap();
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .filter(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim().to_string())
        .collect()
}

/// The TCP listeners come as socket units that root binds and holds across restarts, each
/// named for the daemon to tell them apart, and activating the service. Each holds its port on
/// both loopbacks: a client of `localhost` may try ::1 first, where anyone could listen.
#[test]
fn the_tcp_socket_units_name_their_sockets_and_activate_the_service() {
    for (unit, name, port) in [
        ("heare-authd-tcp.socket", "tcp", 8080),
        ("heare-authd-metrics.socket", "metrics", 9464),
    ] {
        let setting = |key| unit_setting(unit, key);
        assert_eq!(setting("FileDescriptorName").as_deref(), Some(name));
        assert_eq!(
            unit_settings(unit, "ListenStream"),
            [format!("127.0.0.1:{port}"), format!("[::1]:{port}")]
        );
        assert_eq!(setting("FreeBind").as_deref(), Some("yes"));
        assert_eq!(setting("Service").as_deref(), Some("heare-authd.service"));
        // Wanted by the service too: `systemctl restart heare-authd` after enabling starts it.
        assert_eq!(
            setting("WantedBy").as_deref(),
            Some("sockets.target heare-authd.service")
        );
        // No other socket may join the port (SO_REUSEPORT), whoever owns it.
        assert_eq!(setting("ReusePort"), None);
    }
}

/// The example configuration, resolved by the daemon itself on a system that has the group (a
/// private /etc/group bound by bubblewrap): a daemon binding its own socket uses the clients'
/// group too.
#[test]
fn the_example_configuration_gives_the_socket_to_the_clients_group() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "bubblewrap's bind over /etc/group needs root (CI is)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut groups = std::fs::read_to_string("/etc/group").unwrap();
    groups.push_str("heare-auth-clients:x:64123:\n");
    std::fs::write(dir.path().join("group"), groups).unwrap();
    let check = Command::new("bwrap")
        .args(["--dev-bind", "/", "/", "--ro-bind"])
        .arg(dir.path().join("group"))
        .arg("/etc/group")
        .arg(binary("heare-authd"))
        .arg("--config")
        .arg(systemd_dir().join("heare-authd.toml"))
        .arg("--check-config")
        .output()
        .expect("bwrap (package bubblewrap)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{said}");
    assert!(
        said.lines()
            .any(|l| l == "socket_group = heare-auth-clients"),
        "{said}"
    );
}
