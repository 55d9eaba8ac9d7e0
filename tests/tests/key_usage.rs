//! Per-key usage against the real daemon and ctl: counted per key, listed by `GET /usage`,
//! carried across reloads (SIGHUP, /refresh, a changed key file) and restarts (the usage file,
//! 0600), a rotated key's clients seen still presenting the previous secret, `heare-authctl usage`
//! joining the key list and finding unused keys; and the usage file's attacks: a planted link is
//! refused (never written through), a garbage file is survived.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::wait_until;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn store_url(dir: &Path) -> String {
    format!("file://{}", dir.join("keys.json").display())
}

fn start(dir: &Path) -> Daemon {
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(store_url(dir))
        .start()
        .unwrap()
}

fn ctl(dir: &Path, daemon: &Daemon) -> Ctl {
    Ctl::new(dir, &store_url(dir), &daemon.socket)
}

/// `GET /usage` as key id → (verifications, last_verified_at, last_used_previous_secret).
fn usage(daemon: &Daemon) -> std::collections::HashMap<String, (u64, Value, bool)> {
    daemon
        .usage()
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let id = entry["key_id"].as_str().unwrap().to_string();
            let count = entry["verifications"].as_u64().unwrap();
            let previous = entry["last_used_previous_secret"].as_bool().unwrap();
            (id, (count, entry["last_verified_at"].clone(), previous))
        })
        .collect()
}

fn verify_n(daemon: &Daemon, secret: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(daemon.verify(secret).status, 200);
    }
}

#[test]
fn usage_is_counted_and_kept_across_reloads_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path());
    let tool = ctl(dir.path(), &daemon);
    let (busy, busy_secret) = tool.create(&["--name", "busy"]);
    let (idle, _) = tool.create(&["--name", "idle"]);
    verify_n(&daemon, &busy_secret, 5);
    let listed = usage(&daemon);
    assert_eq!(listed[&busy].0, 5);
    assert!(
        listed[&busy]
            .1
            .as_str()
            .is_some_and(|at| at.starts_with("20"))
    );
    assert_eq!(listed[&idle], (0, Value::Null, false));

    daemon.signal(Signal::SIGHUP);
    assert!(!daemon.wait_events("refresh_success").is_empty());
    assert_eq!(daemon.refresh().status, 200);
    tool.create(&["--name", "third"]);
    assert_eq!(usage(&daemon)[&busy].0, 5, "carried across three reloads");
    verify_n(&daemon, &busy_secret, 1);

    assert!(daemon.stop().is_some_and(|s| s.success()));
    let file = dir.path().join("usage.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(&busy_secret)
    );
    let daemon = start(dir.path());
    assert_eq!(usage(&daemon)[&busy].0, 6, "kept across a restart");
    verify_n(&daemon, &busy_secret, 1);
    assert_eq!(usage(&daemon)[&busy].0, 7);
}

#[test]
fn a_rotated_keys_previous_secret_still_in_use_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let tool = ctl(dir.path(), &daemon);
    let (id, old) = tool.create(&["--name", "rotating"]);
    let rotated: Value = serde_json::from_str(&tool.ok(&["rotate", &id, "--json"])).unwrap();
    let new = rotated["secret"].as_str().unwrap().to_string();
    verify_n(&daemon, &old, 2);
    assert_eq!(
        usage(&daemon)[&id],
        (2, usage(&daemon)[&id].1.clone(), true)
    );
    let table = tool.ok(&["usage"]);
    let row = table.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(row.contains("still in use"), "{table}");
    verify_n(&daemon, &new, 1);
    assert!(!usage(&daemon)[&id].2, "the client switched");
    assert_eq!(usage(&daemon)[&id].0, 3);
}

#[test]
fn ctl_usage_joins_the_key_list_and_finds_unused_keys() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let tool = ctl(dir.path(), &daemon);
    let (used, secret) = tool.create(&["--name", "used-one"]);
    let (unused, _) = tool.create(&["--name", "unused-one"]);
    verify_n(&daemon, &secret, 3);
    let rows: Vec<Value> = serde_json::from_str(&tool.ok(&["usage", "--json"])).unwrap();
    let row = |id: &str| rows.iter().find(|r| r["key_id"] == id).unwrap().clone();
    assert_eq!(row(&used)["verifications"], 3);
    assert_eq!(row(&used)["name"], "used-one");
    assert_eq!(row(&used)["state"], "active");
    assert!(row(&used)["created_at"].is_string());
    assert_eq!(row(&unused)["verifications"], 0);
    assert_eq!(row(&unused)["last_verified_at"], Value::Null);

    // Keys created within the span are not "unused for" it.
    let fresh: Vec<Value> =
        serde_json::from_str(&tool.ok(&["usage", "--json", "--unused-for", "1h"])).unwrap();
    assert!(fresh.is_empty(), "{fresh:?}");
    std::thread::sleep(Duration::from_millis(2100));
    // Both keys are now older than 2 s; only one was verified within them.
    verify_n(&daemon, &secret, 1);
    let idle: Vec<Value> =
        serde_json::from_str(&tool.ok(&["usage", "--json", "--unused-for", "2s"])).unwrap();
    let ids: Vec<&str> = idle.iter().map(|r| r["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [unused.as_str()]);
    let table = tool.ok(&["usage", "--unused-for", "2s"]);
    assert!(
        table.contains("unused-one") && table.contains("never"),
        "{table}"
    );
    assert!(!table.contains(&used), "{table}");
}

#[test]
fn usage_is_an_admin_call() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(store_url(dir.path()))
        .args(["--socket-mode", "0666"])
        .start()
        .unwrap();
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_uds-request"))
        .arg(&daemon.socket)
        .args(["GET", "/usage"])
        .output()
        .expect("setpriv (run as root, as CI does)");
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("403"));
}

/// A link planted at the usage file's name is refused, never written through; the daemon keeps
/// serving. A file of garbage is logged and counting starts from zero.
#[test]
fn a_planted_link_or_garbage_at_the_usage_file_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("usage.json")).unwrap();
    let mut daemon = start(dir.path());
    let tool = ctl(dir.path(), &daemon);
    let (_, secret) = tool.create(&["--name", "k"]);
    verify_n(&daemon, &secret, 2);
    assert!(daemon.stop().is_some_and(|s| s.success()));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        daemon.log().contains("usage_file_write_failed"),
        "{}",
        daemon.log()
    );

    std::fs::remove_file(dir.path().join("usage.json")).unwrap();
    std::fs::write(dir.path().join("usage.json"), "{not json").unwrap();
    let daemon = start(dir.path());
    assert!(!daemon.wait_events("usage_file_not_valid").is_empty());
    verify_n(&daemon, &secret, 1);
    assert!(wait_until(Duration::from_secs(2), || usage(&daemon)
        .values()
        .any(|u| u.0 == 1)));
}

/// The review's attack on the default: a local key file named `usage.json` (the default usage
/// file's name) must not be written over; a usage_path naming the key file, or a fleet report
/// that would land on the store's object, is refused at start.
#[test]
fn the_usage_file_never_replaces_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}", dir.path().join("usage.json").display());
    let mut daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(&store)
        .start()
        .unwrap();
    let tool = Ctl::new(dir.path(), &store, &daemon.socket);
    let (id, secret) = tool.create(&["--name", "kept"]);
    verify_n(&daemon, &secret, 2);
    assert!(daemon.stop().is_some_and(|s| s.success()));
    let key_file = std::fs::read_to_string(dir.path().join("usage.json")).unwrap();
    assert!(
        key_file.contains(&id) && key_file.contains("\"keys\""),
        "{key_file}"
    );
    assert!(
        !key_file.contains("written_at"),
        "the key file was replaced: {key_file}"
    );
    let state = std::fs::read_to_string(dir.path().join("heare-authd-usage.json")).unwrap();
    assert!(state.contains(&id), "{state}");

    let mut refused = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(&store)
        .arg("--usage-path")
        .arg(dir.path().join("usage.json").display().to_string())
        .spawn();
    assert_eq!(
        refused
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(2)
    );
    assert!(refused.log().contains("usage_path"), "{}", refused.log());

    let mut over_store = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg("s3://bucket/fleet/keys.json")
        .config(
            "usage_report = \"s3://bucket/fleet/\"\nhost_id = \"keys\"\ncache_path = \"none\"\n",
        )
        .spawn();
    let status = over_store
        .wait_exit(Duration::from_secs(10))
        .expect("exits");
    assert!(!status.success());
    assert!(
        over_store.log().contains("would write over the key store"),
        "{}",
        over_store.log()
    );
}
