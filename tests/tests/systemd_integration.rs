//! The daemon's systemd contract, without a booted systemd: readiness, reload and stop
//! notifications read from a NOTIFY_SOCKET the test owns, and socket activation through
//! `systemd-socket-activate` (package systemd), which passes a listening socket as LISTEN_FDS.

use heare_auth_tests::daemon::{DaemonBuilder, binary};
use heare_auth_tests::http::{Request, send};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::wait_until;
use nix::sys::signal::Signal;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "sec_0SystemdTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn notifications(socket: &UnixDatagram, until: &str) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(read) = socket.recv(&mut buffer) {
        let message = String::from_utf8_lossy(&buffer[..read]).into_owned();
        let done = message.contains(until);
        seen.push(message);
        if done {
            break;
        }
    }
    seen
}

#[test]
fn notifies_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_sd", SECRET)])).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .env("NOTIFY_SOCKET", notify_path.display().to_string())
        .start()
        .unwrap();
    let ready = notifications(&notify, "READY=1");
    let ready = ready.last().unwrap();
    assert!(
        ready.contains("READY=1") && ready.contains("STATUS=serving 1 keys from file://"),
        "{ready}"
    );

    daemon.signal(Signal::SIGHUP);
    let reload = notifications(&notify, "READY=1").join("|");
    assert!(
        reload.contains("RELOADING=1") && reload.contains("MONOTONIC_USEC="),
        "{reload}"
    );

    daemon.stop();
    let stop = notifications(&notify, "STOPPING=1").join("|");
    assert!(stop.contains("STOPPING=1"), "{stop}");
}

#[test]
fn accepts_a_socket_passed_by_socket_activation() {
    let Ok(activate) = which("systemd-socket-activate") else {
        panic!("systemd-socket-activate not found: install the systemd package (.ci/run does)");
    };
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_sd", SECRET)])).unwrap();
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let socket = dir.path().join("activated.sock");
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut activator = Command::new(activate)
        .arg("--listen")
        .arg(&socket)
        .arg(binary("heare-authd"))
        .arg("--config")
        .arg(dir.path().join("empty.toml"))
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .arg("--socket")
        .arg(dir.path().join("unused.sock"))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    // The first request starts the daemon, which serves it on the inherited socket.
    let answer = send(&socket, &Request::verify(SECRET)).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let log_path = dir.path().join("daemon.log");
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || read_log()
            .contains("\"socket_activated\":true")),
        "{}",
        read_log()
    );
    assert!(
        !dir.path().join("unused.sock").exists(),
        "the daemon did not bind its own socket"
    );
    let _ = activator.kill();
    let _ = activator.wait();
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|path| path.exists())
        .ok_or(())
}
