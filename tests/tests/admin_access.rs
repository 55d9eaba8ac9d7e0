//! Who may call what: admin endpoints are decided by the peer's credentials on the Unix socket
//! (SO_PEERCRED) and refused on TCP unless enabled for loopback; verify is open to whoever can
//! open the socket. A non-admin peer is played by `uds-request` run as `nobody` with setpriv,
//! which needs root (as CI is); as another user these tests say so and fail.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::{Request, send_tcp};
use heare_auth_tests::keys::{TestKey, key_file};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const SECRET: &str = "sec_0AdminAccessTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn start(dir: &Path, extra: &[&str], config: &str) -> Daemon {
    // `nobody` must be able to reach the socket: open the directory and the socket to all.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_admin_test", SECRET)])).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(["--socket-mode", "0666"])
        .args(extra.iter().copied())
        .config(config)
        .start()
        .unwrap()
}

/// Runs `uds-request` as uid/gid 65534 (nobody/nogroup); returns (status, body).
fn as_nobody(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches to uid 65534 with setpriv and must run as root (CI does)"
    );
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_uds-request"))
        .arg(socket)
        .args([method, path]);
    if let Some(body) = body {
        command.arg(body);
    }
    let output = command.output().expect("run setpriv");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "uds-request failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (status, body) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    (status.trim().parse().unwrap(), body.trim().to_string())
}

#[test]
fn a_non_admin_peer_may_verify_but_not_refresh_or_read_status() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &[], "");
    let body = format!("{{\"api_key\":\"{SECRET}\"}}");
    let (status, answer) = as_nobody(&daemon.socket, "POST", "/verify", Some(&body));
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("key_admin_test"));

    let (status, answer) = as_nobody(&daemon.socket, "POST", "/refresh", None);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("admin"));
    let (status, _) = as_nobody(&daemon.socket, "GET", "/status", None);
    assert_eq!(status, 403);
    let rejected = daemon.wait_events("refresh_rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["peer_uid"], 65534);

    // Root (the test itself) is an admin.
    assert_eq!(daemon.refresh().status, 200);
}

#[test]
fn members_of_the_admin_group_may_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &["--admin-group", "nogroup"], "");
    let (status, answer) = as_nobody(&daemon.socket, "POST", "/refresh", None);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"success\":true"));
}

/// Runs `uds-request` with the given setpriv credentials; returns the HTTP status.
fn status_as(socket: &Path, credentials: &[&str], path: &str) -> u16 {
    let output = Command::new("setpriv")
        .args(credentials)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_uds-request"))
        .arg(socket)
        .args(["GET", path])
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().next().unwrap_or("0").trim().parse().unwrap()
}

/// admin_group is decided from the peer's kernel credentials (SO_PEERCRED + SO_PEERGROUPS), not
/// the group database: the daemon runs with a private /etc/group (bubblewrap) where group
/// `heare-test-admins` (gid 4242) lists `nobody`. A process holding the gid only as a
/// supplementary group (uid 4343, in no database) is an admin; `nobody`, listed in the group but
/// running without it, is not.
#[test]
fn admin_group_is_the_peers_kernel_groups_not_the_group_database() {
    let dir = tempfile::tempdir().unwrap();
    let group_file = dir.path().join("group");
    let mut groups = std::fs::read_to_string("/etc/group").unwrap();
    groups.push_str("heare-test-admins:x:4242:nobody\n");
    std::fs::write(&group_file, groups).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_admin_test", SECRET)])).unwrap();
    let group_path = group_file.display().to_string();
    let daemon = DaemonBuilder::new(dir.path())
        .wrapped_in([
            "bwrap",
            "--bind",
            "/",
            "/",
            "--bind",
            &group_path,
            "/etc/group",
            "--dev",
            "/dev",
            "--die-with-parent",
            "--",
        ])
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args([
            "--socket-mode",
            "0666",
            "--admin-group",
            "heare-test-admins",
        ])
        .start()
        .unwrap();
    let supplementary = ["--reuid=4343", "--regid=4343", "--groups=4242"];
    assert_eq!(status_as(&daemon.socket, &supplementary, "/status"), 200);
    let primary = ["--reuid=4343", "--regid=4242", "--clear-groups"];
    assert_eq!(status_as(&daemon.socket, &primary, "/status"), 200);
    let dropped = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    assert_eq!(
        status_as(&daemon.socket, &dropped, "/status"),
        403,
        "listed in /etc/group but not holding the group"
    );
    assert_eq!(status_as(&daemon.socket, &dropped, "/health"), 200);
}

#[test]
fn a_peer_without_socket_permission_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("k", SECRET)])).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_uds-request"))
        .arg(&daemon.socket)
        .args(["GET", "/health"])
        .output()
        .expect("run setpriv");
    assert!(!output.status.success(), "mode 0660 must keep others out");
    assert!(String::from_utf8_lossy(&output.stderr).contains("ermission denied"));
}

#[test]
fn tcp_serves_python_clients_and_refuses_admin_calls_unless_enabled() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &["--listen-tcp", &address], "");

    // What the Python service's clients send: JSON body, content type, a user agent.
    let request = Request::new("POST", "/verify")
        .header("Content-Type", "application/json")
        .header("User-Agent", "python-requests/2.31.0")
        .header("X-Forwarded-For", "127.0.0.1")
        .body(format!("{{\"api_key\": \"{SECRET}\"}}"));
    let answer = send_tcp(&address, &request).unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["key_id"], "key_admin_test");
    assert_eq!(answer.json()["error"], serde_json::Value::Null);
    let denied = send_tcp(&address, &Request::verify("sec_wrong")).unwrap();
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json()["valid"], false);
    let success = daemon.wait_events("verification_success");
    assert_eq!(success[0]["user_agent"], "python-requests/2.31.0");
    assert!(
        success[0]["peer_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // X-Forwarded-For must not make a TCP peer an admin (the Python service's bug).
    let refresh = Request::new("POST", "/refresh").header("X-Forwarded-For", "127.0.0.1");
    assert_eq!(send_tcp(&address, &refresh).unwrap().status, 403);
    assert_eq!(
        send_tcp(&address, &Request::new("GET", "/status"))
            .unwrap()
            .status,
        403
    );
    drop(daemon);

    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let _daemon = start(
        dir.path(),
        &["--listen-tcp", &address],
        "tcp_admin_from_loopback = true\n",
    );
    let refresh = send_tcp(&address, &Request::new("POST", "/refresh")).unwrap();
    assert_eq!(refresh.status, 200, "{}", refresh.body);
}

/// `tcp_admin_from_loopback` trusts loopback peers only: the same daemon, reached on a
/// non-loopback address of this host, refuses refresh and status but still verifies.
#[test]
fn tcp_admin_from_loopback_refuses_a_non_loopback_peer() {
    let Some(address) = non_loopback_address() else {
        panic!("this test needs a non-loopback IPv4 address on the host (CI has eth0)");
    };
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = start(
        dir.path(),
        &["--listen-tcp", &format!("0.0.0.0:{port}")],
        "tcp_admin_from_loopback = true\n",
    );
    let outside = format!("{address}:{port}");
    let loopback = format!("127.0.0.1:{port}");
    for (method, path) in [("POST", "/refresh"), ("GET", "/status")] {
        let refused = send_tcp(&outside, &Request::new(method, path)).unwrap();
        assert_eq!(refused.status, 403, "{method} {path} from {address}");
        let allowed = send_tcp(&loopback, &Request::new(method, path)).unwrap();
        assert_eq!(allowed.status, 200, "{method} {path} from loopback");
    }
    let verify = send_tcp(&outside, &Request::verify(SECRET)).unwrap();
    assert_eq!(verify.status, 200);
}

/// An IPv4 address of this host that is not loopback.
fn non_loopback_address() -> Option<std::net::Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|interface| {
        let address = interface.address?.as_sockaddr_in()?.ip();
        (!address.is_loopback()).then_some(address)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
