//! The daemon's systemd contract, without a booted systemd: readiness, reload and stop
//! notifications read from a NOTIFY_SOCKET the test owns, socket activation through
//! `systemd-socket-activate` (package systemd), which passes a listening socket as LISTEN_FDS, and
//! log lines written for the journal's stream when JOURNAL_STREAM says stdout is it.

use heare_auth_tests::daemon::{DaemonBuilder, binary};
use heare_auth_tests::http::{Request, send};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::process::Group;
use heare_auth_tests::wait_until;
use nix::sys::signal::Signal;
use std::os::unix::fs::MetadataExt;
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
        // The watcher's own (conditional) reloads send READY=1 too: only SIGHUP's are wanted.
        .args(["--watch-store", "false"])
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

/// The log's lines split into their syslog priority prefix (`<6>`) and their JSON object.
fn prefixed_lines(log: &str) -> Vec<(String, serde_json::Value)> {
    log.lines()
        .filter_map(|line| {
            let (priority, json) = line.split_at_checked(line.find('>')? + 1)?;
            Some((priority.to_string(), serde_json::from_str(json).ok()?))
        })
        .collect()
}

/// Under systemd stdout is the journal's stream, and JOURNAL_STREAM names its device and inode:
/// the daemon still writes JSON lines there through its batched writer (never a send per event
/// from the request path), each starting with the syslog priority of its level for journald to
/// take off and record. With stdout elsewhere the lines have no prefix.
#[test]
fn log_lines_carry_syslog_priorities_when_stdout_is_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_sd", SECRET)])).unwrap();
    // The builder appends the daemon's stdout and stderr to this file.
    let log = dir.path().join("daemon.log");
    std::fs::write(&log, "").unwrap();
    let stream = std::fs::metadata(&log).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .env(
            "JOURNAL_STREAM",
            format!("{}:{}", stream.dev(), stream.ino()),
        )
        .start()
        .unwrap();
    assert_eq!(daemon.verify(SECRET).status, 200);
    assert_eq!(daemon.verify("sec_0NotAKnownSecret").status, 403);
    let mut lines = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            lines = prefixed_lines(&daemon.log());
            lines
                .iter()
                .any(|(_, line)| line["event"] == "verification_failed")
        }),
        "{}",
        daemon.log()
    );
    let text = daemon.log();
    assert_eq!(
        lines.len(),
        text.lines().count(),
        "every line is a priority and a JSON object: {text}"
    );
    for (priority, line) in &lines {
        let expected = match line["level"].as_str() {
            Some("error") => "<3>",
            Some("warn") => "<4>",
            Some("info") => "<6>",
            _ => "<7>",
        };
        assert_eq!(priority, expected, "{line}");
    }
    let priority_of = |event: &str| {
        lines
            .iter()
            .find(|(_, line)| line["event"] == event)
            .map(|(priority, _)| priority.as_str())
    };
    assert_eq!(priority_of("verification_success"), Some("<6>"));
    assert_eq!(priority_of("verification_failed"), Some("<4>"));
    assert!(!text.contains(SECRET));

    // The same daemon with stdout not the journal: plain JSON lines.
    let other = tempfile::tempdir().unwrap();
    let plain = DaemonBuilder::new(other.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .env("JOURNAL_STREAM", "1:1")
        .start()
        .unwrap();
    assert_eq!(plain.verify(SECRET).status, 200);
    assert_eq!(plain.wait_events("verification_success").len(), 1);
    assert!(plain.log().lines().all(|line| line.starts_with('{')));
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
    // Its own process group: stopped (with the daemon it became) even when an assertion fails.
    let mut activator = Group::spawn(
        Command::new(activate)
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
            .stderr(log),
    )
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
    activator.stop().unwrap();
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|path| path.exists())
        .ok_or(())
}
