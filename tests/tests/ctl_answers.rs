//! What heare-authctl says about the daemon: after a write, `heare-authd reloaded: N keys` on
//! stderr (or the warning why it did not), the `daemon` field of `--json` output, and the first
//! line of `status` (`OK: …` when all is well, `ATTENTION: …` naming what is not). Against the
//! real daemon and ctl on a file store.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;

fn setup(dir: &Path) -> (Daemon, Ctl) {
    let store = dir.join("keys.json");
    std::fs::write(&store, br#"{"keys": []}"#).unwrap();
    let url = format!("file://{}", store.display());
    let daemon = DaemonBuilder::new(dir)
        .args(["--store", &url])
        .start()
        .unwrap();
    let ctl = Ctl::new(dir, &url, &daemon.socket);
    (daemon, ctl)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed; returns (stdout, stderr).
fn run(ctl: &Ctl, args: &[&str]) -> (String, String) {
    let output = ctl.run(args);
    assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr(&output),
    )
}

#[test]
fn every_write_says_the_daemon_reloaded_and_how_many_keys_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = setup(dir.path());

    let (shown, said) = run(&ctl, &["create", "--name", "first"]);
    assert!(shown.contains("Created API key:"), "{shown}");
    assert!(said.contains("heare-authd reloaded: 1 keys\n"), "{said}");

    let (out, said) = run(&ctl, &["create", "--json", "--name", "second"]);
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        created["daemon"],
        json!({"reloaded": true, "keys_loaded": 2})
    );
    assert!(said.contains("heare-authd reloaded: 2 keys\n"), "{said}");
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    assert_eq!(daemon.verify(secret).status, 200);

    let (out, said) = run(&ctl, &["rotate", id, "--json", "--grace", "0s"]);
    let rotated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rotated["daemon"],
        json!({"reloaded": true, "keys_loaded": 2})
    );
    assert!(said.contains("heare-authd reloaded: 2 keys\n"), "{said}");
    assert_eq!(daemon.verify(secret).status, 403, "the old secret is gone");

    for (args, keys) in [
        (vec!["disable", id], 2),
        (vec!["scopes", id, "--add", "read"], 2),
        (vec!["delete", id, "--yes"], 1),
    ] {
        let (_, said) = run(&ctl, &args);
        assert!(
            said.contains(&format!("heare-authd reloaded: {keys} keys\n")),
            "{args:?}: {said}"
        );
    }
}

#[test]
fn a_write_without_reload_says_why_in_its_json_and_prints_no_reload_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, ctl) = setup(dir.path());
    let (out, said) = run(
        &ctl,
        &["create", "--json", "--no-reload", "--name", "quiet"],
    );
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["daemon"]["reloaded"], false, "{created}");
    assert_eq!(created["daemon"]["reason"], "--no-reload", "{created}");
    assert!(!said.contains("reloaded"), "{said}");
}

#[test]
fn a_write_while_the_daemon_is_down_is_stored_and_says_the_daemon_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, ctl) = setup(dir.path());
    daemon.stop();
    let (out, said) = run(&ctl, &["create", "--json", "--name", "offline"]);
    let created: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(created["daemon"]["reloaded"], false, "{created}");
    let reason = created["daemon"]["reason"].as_str().unwrap();
    assert!(reason.contains("not running"), "{reason}");
    assert!(
        said.contains("warning: heare-authd is not running on"),
        "{said}"
    );
    assert!(!said.contains("heare-authd reloaded"), "{said}");
    let listed = ctl.ok(&["list", "--json"]);
    assert!(listed.contains("offline"), "the write is stored: {listed}");
}

#[test]
fn status_starts_with_a_line_saying_all_is_well() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, ctl) = setup(dir.path());
    ctl.create(&["--name", "one"]);
    let shown = ctl.ok(&["status"]);
    let first = shown.lines().next().unwrap();
    assert!(
        first.starts_with("OK: serving 1 key, fresh, last reload 20"),
        "{first}"
    );
    assert!(first.ends_with("ago), every listener up"), "{first}");
    assert!(shown.lines().nth(1).unwrap().starts_with("heare-authd "));
}

#[test]
fn status_names_a_store_that_cannot_be_read_in_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = setup(dir.path());
    ctl.create(&["--name", "one"]);
    std::fs::write(dir.path().join("keys.json"), b"{ not json").unwrap();
    assert_eq!(daemon.refresh().status, 500, "the reload fails");
    let shown = ctl.ok(&["status"]);
    let first = shown.lines().next().unwrap();
    assert!(
        first.starts_with("ATTENTION: serving 1 key, last reload "),
        "{first}"
    );
    assert!(first.contains("STALE"), "{first}");
    assert!(first.contains("last load failed: "), "{first}");
}

/// A key store with no daemon, and a socket where something else listens.
fn fake_daemon_setup(dir: &Path) -> (Ctl, std::os::unix::net::UnixListener) {
    let store = dir.join("keys.json");
    std::fs::write(&store, br#"{"keys": []}"#).unwrap();
    let socket = dir.join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let ctl = Ctl::new(dir, &format!("file://{}", store.display()), &socket);
    (ctl, listener)
}

/// The `--json` object holds the only copy of the new secret: a daemon that accepts the reload
/// and never answers must not keep it from the user (a script's timeout, Ctrl-C). ctl waits a few
/// seconds, then prints the object with the reason.
#[test]
fn a_hung_daemon_does_not_keep_the_new_secret_from_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, _listener) = fake_daemon_setup(dir.path());
    let (out, said) = run(&ctl, &["create", "--json", "--name", "kept"]);
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("sec_1"));
    assert_eq!(created["daemon"]["reloaded"], false, "{created}");
    let reason = created["daemon"]["reason"].as_str().unwrap();
    assert!(reason.contains("did not answer within 5 s"), "{reason}");
    assert!(said.contains("warning: the change is stored"), "{said}");
}

/// What the daemon answers (an S3 error it quotes, say) reaches the terminal escaped: a forged
/// "reloaded" line cannot be drawn over the warning.
#[test]
fn a_reload_error_with_terminal_escapes_is_shown_escaped() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (ctl, listener) = fake_daemon_setup(dir.path());
    let answering = std::thread::spawn(move || {
        let body = "{\"error\":\"\\u001b[2K\\rheare-authd reloaded: 7 keys\"}";
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let answer = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    let said = stderr(&ctl.run(&["create", "--name", "escaped"]));
    assert!(!said.contains('\u{1b}'), "{said:?}");
    assert!(
        said.contains("\\u{1b}[2K\\rheare-authd reloaded: 7 keys"),
        "{said:?}"
    );
    let output = ctl.run(&["reload"]);
    assert!(!output.status.success());
    let said = stderr(&output);
    assert!(!said.contains('\u{1b}'), "{said:?}");
    answering.join().unwrap();
}
