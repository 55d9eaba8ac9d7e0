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
