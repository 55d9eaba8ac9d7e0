//! heare-authctl end to end: every command against a file store with a running daemon (which
//! ctl reloads after each write), concurrency without lost updates on S3 and on a file, and the
//! command-line contract (JSON output, exit codes, refusals that change nothing).

use heare_auth_store::codec::{StorageSecret, decode, encode_encrypted, is_encrypted};
use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A daemon on a file store, and ctl on it. The store is not watched (`--watch-store false`):
/// what these tests see served after a write is ctl's own reload, or its absence.
fn setup(dir: &Path, initial: &[u8]) -> (Daemon, Ctl) {
    let store = dir.join("keys.json");
    std::fs::write(&store, initial).unwrap();
    let url = format!("file://{}", store.display());
    let daemon = DaemonBuilder::new(dir)
        .args(["--store", &url, "--watch-store", "false"])
        .start()
        .unwrap();
    let ctl = Ctl::new(dir, &url, &daemon.socket);
    (daemon, ctl)
}

fn store_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("keys.json")).unwrap()).unwrap()
}

#[test]
fn create_verify_list_show_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = setup(dir.path(), br#"{"keys": []}"#);
    let (id, secret) = ctl.create(&[
        "--name", "Billing", "--meta", "env=prod", "--meta", "team=pay",
    ]);
    assert!(id.starts_with("key_0") && id.len() == 23, "{id}");
    assert!(
        secret.starts_with("sec_1") && secret.len() == 64,
        "{secret}"
    );

    // ctl reloaded the daemon: the new key verifies at once.
    let answer = daemon.verify(&secret);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["key_id"], id.as_str());
    assert_eq!(answer.json()["metadata"]["team"], "pay");

    // Only the hash is stored.
    let raw = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
    assert!(!raw.contains(&secret));
    assert!(raw.contains("sha256:"));

    let listed: Value = serde_json::from_str(&ctl.ok(&["list", "--json"])).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["name"], "Billing");
    assert!(listed[0].get("secret").is_none() && listed[0].get("secret_hash").is_none());
    let table = ctl.ok(&["list", "--detailed"]);
    assert!(table.contains("Billing") && table.contains("active") && !table.contains("sha256"));
    let shown: Value = serde_json::from_str(&ctl.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["metadata"]["env"], "prod");

    let refused = ctl.run(&["delete", &id]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "delete without --yes off a terminal"
    );
    assert_eq!(daemon.verify(&secret).status, 200);
    ctl.ok(&["delete", &id, "--yes"]);
    assert_eq!(daemon.verify(&secret).status, 403);
    assert_eq!(ctl.run(&["show", &id]).status.code(), Some(3));
    assert_eq!(ctl.run(&["delete", &id, "--yes"]).status.code(), Some(3));
}

#[test]
fn a_mistyped_generation_1_secret_is_refused_before_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = setup(dir.path(), br#"{"keys": []}"#);
    let (_, secret) = ctl.create(&["--name", "n"]);
    let mut typo = secret.clone().into_bytes();
    typo[30] = if typo[30] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(daemon.verify(&typo).status, 403);
    assert!(wait_until(Duration::from_secs(5), || daemon
        .events("verification_failed")
        .iter()
        .any(|e| e["reason"] == "bad_checksum")));
}

#[test]
fn rotate_keeps_the_old_secret_for_the_grace_period_only() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = setup(dir.path(), br#"{"keys": []}"#);
    let (id, old) = ctl.create(&["--name", "rotating"]);
    let out: Value =
        serde_json::from_str(&ctl.ok(&["rotate", &id, "--grace", "2s", "--json"])).unwrap();
    let new = out["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(daemon.verify(&new).json()["key_id"], id.as_str());
    assert_eq!(
        daemon.verify(&old).status,
        200,
        "old secret valid during grace"
    );
    // One reload after create, one after rotate; wait for both lines to be written.
    assert!(wait_until(Duration::from_secs(5), || daemon
        .events("refresh_success")
        .len()
        == 2));
    let reloads = 2;
    // No reload at the boundary: the daemon itself stops accepting the old secret.
    assert!(wait_until(Duration::from_secs(6), || daemon
        .verify(&old)
        .status
        == 403));
    assert_eq!(daemon.events("refresh_success").len(), reloads);
    assert_eq!(daemon.verify(&new).status, 200);

    // Grace 0: the old secret stops at once.
    let out: Value =
        serde_json::from_str(&ctl.ok(&["rotate", &id, "--grace", "0s", "--json"])).unwrap();
    assert_eq!(daemon.verify(&new).status, 403);
    assert_eq!(daemon.verify(out["secret"].as_str().unwrap()).status, 200);
}

#[test]
fn expire_disable_enable() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = setup(dir.path(), br#"{"keys": []}"#);
    let (id, secret) = ctl.create(&["--name", "life", "--expires-in", "30d"]);
    ctl.ok(&["disable", &id]);
    assert_eq!(daemon.verify(&secret).status, 403);
    let listed: Value = serde_json::from_str(&ctl.ok(&["list", "--json"])).unwrap();
    assert_eq!(
        listed[0]["state"], "disabled",
        "a disabled key stays listed"
    );
    ctl.ok(&["enable", &id]);
    assert_eq!(daemon.verify(&secret).status, 200);
    let refused = ctl.run(&["expire", &id, "--at", "2001-01-01T00:00:00Z"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "a past expiry needs --force"
    );
    assert_eq!(daemon.verify(&secret).status, 200);
    ctl.ok(&["expire", &id, "--now"]);
    assert_eq!(daemon.verify(&secret).status, 403);
    let shown: Value = serde_json::from_str(&ctl.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["state"], "expired");
}

#[test]
fn import_and_migrate_keep_everything_else_and_leave_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let python_key = TestKey::new(
        "key_python",
        "sec_0PythonSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let mut initial: Value =
        serde_json::from_slice(&key_file(std::slice::from_ref(&python_key))).unwrap();
    initial["keys"][0]["x-owner"] = Value::from("team-a");
    initial["schema"] = Value::from(1);
    let (daemon, ctl) = setup(dir.path(), &serde_json::to_vec_pretty(&initial).unwrap());

    let import_file = dir.path().join("import.json");
    let imported = TestKey::new(
        "key_imported",
        "sec_0ImportedSecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB",
    );
    std::fs::write(&import_file, key_file(std::slice::from_ref(&imported))).unwrap();
    let out = ctl.ok(&["import", import_file.to_str().unwrap()]);
    assert!(out.contains("imported 1 keys"), "{out}");
    assert_eq!(
        daemon.verify(&imported.secret).json()["key_id"],
        "key_imported"
    );

    // Importing again: the id is taken; nothing changes.
    let before = std::fs::read(dir.path().join("keys.json")).unwrap();
    assert_eq!(
        ctl.run(&["import", import_file.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(std::fs::read(dir.path().join("keys.json")).unwrap(), before);

    let out = ctl.ok(&["migrate", "--hash-secrets"]);
    assert!(out.starts_with("1 of 2"), "{out}");
    let stored = store_json(dir.path());
    let raw = serde_json::to_string(&stored).unwrap();
    assert!(!raw.contains(&python_key.secret) && !raw.contains("\"secret\""));
    assert_eq!(stored["schema"], 1, "top-level fields kept");
    assert_eq!(
        stored["keys"][0]["x-owner"], "team-a",
        "unknown key fields kept"
    );
    assert_eq!(stored["keys"][0]["created_at"], "2024-01-20T10:30:00Z");
    assert_eq!(
        daemon.verify(&python_key.secret).status,
        200,
        "Python secrets keep verifying"
    );
}

#[test]
fn validation_refuses_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, ctl) = setup(dir.path(), br#"{"keys": []}"#);
    let long_name = "n".repeat(201);
    for args in [
        vec!["create", "--name", ""],
        vec!["create", "--name", &long_name],
        vec!["create", "--name", "x", "--metadata", "[1,2]"],
        vec!["create", "--name", "x", "--metadata", "{not json"],
        vec!["create", "--name", "x", "--meta", "novalue"],
        vec!["create", "--name", "x", "--expires-at", "yesterday"],
        vec![
            "create",
            "--name",
            "x",
            "--expires-at",
            "2001-01-01T00:00:00Z",
        ],
        vec!["rotate", "key_missing"],
    ] {
        let output = ctl.run(&args);
        let expected = if args[0] == "rotate" { 3 } else { 2 };
        assert_eq!(output.status.code(), Some(expected), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one-line reason: {stderr}"
        );
    }
    assert_eq!(store_json(dir.path())["keys"].as_array().unwrap().len(), 0);
}

#[test]
fn a_stopped_daemon_is_a_warning_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, ctl) = setup(dir.path(), br#"{"keys": []}"#);
    daemon.stop();
    let output = ctl.run(&["create", "--name", "offline"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not running"));
    assert_eq!(store_json(dir.path())["keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        ctl.run(&["reload"]).status.code(),
        Some(1),
        "an explicit reload does fail"
    );
}

#[test]
fn encrypted_stores_stay_encrypted() {
    let dir = tempfile::tempdir().unwrap();
    let secret = StorageSecret::new("ctl-storage-secret");
    let body = encode_encrypted(br#"{"keys": []}"#, &secret);
    let store = dir.path().join("keys.json");
    std::fs::write(&store, body).unwrap();
    let url = format!("file://{}", store.display());
    let daemon = DaemonBuilder::new(dir.path())
        .args(["--store", &url])
        .env("STORAGE_SECRET", "ctl-storage-secret")
        .start()
        .unwrap();
    let ctl = Ctl::new(dir.path(), &url, &daemon.socket)
        .env(vec![("STORAGE_SECRET".into(), "ctl-storage-secret".into())]);
    let (id, key_secret) = ctl.create(&["--name", "enc"]);
    let written = std::fs::read(&store).unwrap();
    assert!(is_encrypted(&written));
    let plain = decode(&written, Some(&secret)).unwrap();
    assert!(String::from_utf8_lossy(&plain).contains(&id));
    assert_eq!(daemon.verify(&key_secret).status, 200);

    let without = Ctl::new(dir.path(), &url, &daemon.socket);
    let output = without.run(&["create", "--name", "x"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("STORAGE_SECRET"));
}

fn concurrent_creates(ctl: &Ctl, writers: usize, each: usize) {
    std::thread::scope(|scope| {
        for writer in 0..writers {
            scope.spawn(move || {
                for n in 0..each {
                    ctl.ok(&["create", "--name", &format!("w{writer}-{n}"), "--no-reload"]);
                }
            });
        }
    });
}

#[test]
fn concurrent_writers_lose_no_update_on_s3() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("ctl").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl = Ctl::new(
        dir.path(),
        "s3://ctl/keys.json",
        &dir.path().join("none.sock"),
    )
    .config_text("[s3]\npath_style = true\n")
    .env(s3.env_for_client());
    concurrent_creates(&ctl, 4, 5);
    let listed: Value = serde_json::from_str(&ctl.ok(&["list", "--json"])).unwrap();
    let mut names: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names.len(), 20, "{names:?}");
    names.dedup();
    assert_eq!(names.len(), 20);
}

#[test]
fn concurrent_writers_lose_no_update_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("keys.json").display());
    let ctl = Ctl::new(dir.path(), &url, &dir.path().join("none.sock"));
    concurrent_creates(&ctl, 4, 5);
    assert_eq!(store_json(dir.path())["keys"].as_array().unwrap().len(), 20);
}

#[test]
fn completions_and_man_page_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = Ctl::new(
        dir.path(),
        "file:///nonexistent/keys.json",
        &dir.path().join("s"),
    );
    let bash = ctl.ok(&["gen-completions", "bash"]);
    assert!(bash.contains("heare-authctl") && bash.contains("rotate"));
    let man = ctl.ok(&["gen-man"]);
    assert!(
        man.contains(".TH") && man.contains("heare\\-authctl"),
        "{}",
        &man[..200.min(man.len())]
    );
}

#[test]
fn reload_by_socket_or_signal_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = setup(dir.path(), br#"{"keys": []}"#);
    let (_, secret) = ctl.create(&["--name", "quiet", "--no-reload"]);
    assert_eq!(
        daemon.verify(&secret).status,
        403,
        "--no-reload leaves the daemon alone"
    );
    assert!(ctl.ok(&["reload"]).contains("1 keys"));
    assert_eq!(daemon.verify(&secret).status, 200);

    let (_, second) = ctl.create(&["--name", "signalled", "--no-reload"]);
    let pid = daemon.pid().to_string();
    ctl.ok(&["reload", "--signal", "--pid", &pid]);
    assert!(wait_until(Duration::from_secs(10), || daemon
        .verify(&second)
        .status
        == 200));

    let status: Value = serde_json::from_str(&ctl.ok(&["status", "--json"])).unwrap();
    assert_eq!(status["keys_loaded"], 2);
    assert_eq!(status["stale"], false);
    assert!(ctl.ok(&["status"]).contains("keys loaded:   2"));
}

/// `heare-authctl list | head -1`: the reader goes away while ctl still prints. ctl ends as other
/// tools do (SIGPIPE) instead of panicking with "failed printing to stdout".
#[test]
fn a_reader_that_goes_away_ends_ctl_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<TestKey> = (0..3_000)
        .map(|n| TestKey::new(&format!("key_pipe_{n}"), &format!("sec_0Pipe{n:0>55}")))
        .collect();
    let (_daemon, ctl) = setup(dir.path(), &key_file(&keys));
    let mut child = ctl
        .command(&["list"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}: {stderr}");
}
