//! Scopes (issue 15, first part): a key's `scopes` in the key file, set by `heare-authctl create
//! --scope` and `heare-authctl scopes --add/--remove` (conditional writes like every change),
//! shown by `list`/`show`; `POST /verify` with `require_scopes` answers 403 `Insufficient scope`
//! for a valid key without one (its own result in /metrics and the log) and lists the key's scopes
//! in its 200 body.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::Request;
use serde_json::{Value, json};
use std::path::Path;

fn start(dir: &Path) -> (Daemon, Ctl) {
    let store = format!("file://{}", dir.join("keys.json").display());
    let daemon = DaemonBuilder::new(dir)
        .arg("--store")
        .arg(&store)
        .start()
        .unwrap();
    let ctl = Ctl::new(dir, &store, &daemon.socket);
    (daemon, ctl)
}

fn verify_requiring(daemon: &Daemon, secret: &str, scopes: &[&str]) -> (u16, Value) {
    let body = json!({"api_key": secret, "require_scopes": scopes}).to_string();
    let answer = daemon
        .request(&Request::new("POST", "/verify").body(body))
        .unwrap();
    (answer.status, answer.json())
}

#[test]
fn require_scopes_refuses_a_key_without_them_and_ctl_changes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = start(dir.path());
    let (id, secret) = ctl.create(&["--name", "scoped", "--scope", "read", "--scope", "write"]);

    let (status, body) = verify_requiring(&daemon, &secret, &["write"]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scopes"], json!(["read", "write"]));
    assert_eq!(body["key_id"], id.as_str());
    let plain = daemon.verify(&secret);
    assert_eq!(plain.json()["scopes"], json!(["read", "write"]));

    let (status, body) = verify_requiring(&daemon, &secret, &["write", "admin"]);
    assert_eq!(status, 403);
    assert_eq!(body, json!({"valid": false, "error": "Insufficient scope"}));
    let logged = daemon.wait_events("verification_failed");
    assert!(
        logged
            .iter()
            .any(|l| l["reason"] == "insufficient_scope" && l["key_id"] == id.as_str())
    );
    let metrics = daemon
        .request(&Request::new("GET", "/metrics"))
        .unwrap()
        .body;
    assert!(metrics.contains("heare_auth_verify_requests_total{result=\"insufficient_scope\"} 1"));

    ctl.ok(&["scopes", &id, "--remove", "write", "--add", "admin"]);
    let (status, _) = verify_requiring(&daemon, &secret, &["write"]);
    assert_eq!(status, 403, "write was removed (ctl reloaded the daemon)");
    let (status, body) = verify_requiring(&daemon, &secret, &["admin", "read"]);
    assert_eq!(status, 200);
    assert_eq!(body["scopes"], json!(["read", "admin"]));

    let shown: Value = serde_json::from_str(&ctl.ok(&["show", &id, "--json"])).unwrap();
    assert_eq!(shown["scopes"], json!(["read", "admin"]));
    let listed = ctl.ok(&["list"]);
    assert!(
        listed.contains("SCOPES") && listed.contains("read,admin"),
        "{listed}"
    );

    ctl.ok(&["scopes", &id, "--remove", "read", "--remove", "admin"]);
    let stored = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
    assert!(
        !stored.contains("\"scopes\""),
        "an empty list removes the field: {stored}"
    );
}

#[test]
fn bad_scopes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = start(dir.path());
    let (id, secret) = ctl.create(&["--name", "k"]);
    let before = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
    for bad in [
        "two words",
        "",
        "quo\"te",
        "back\\slash",
        "\u{1b}[2J",
        "with,comma",
    ] {
        let output = ctl.run(&["scopes", &id, "--add", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        let output = ctl.run(&["create", "--name", "x", "--scope", bad]);
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        assert!(!String::from_utf8_lossy(&output.stderr).contains('\u{1b}'));
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("keys.json")).unwrap(),
        before
    );
    let body = json!({"api_key": secret, "require_scopes": ["two words"]}).to_string();
    let answer = daemon
        .request(&Request::new("POST", "/verify").body(body))
        .unwrap();
    assert_eq!(answer.status, 422);
    // A key without scopes meets no requirement, and an empty requirement is no requirement.
    assert_eq!(verify_requiring(&daemon, &secret, &["read"]).0, 403);
    assert_eq!(verify_requiring(&daemon, &secret, &[]).0, 200);
}

/// A key file with a scope that is not a token (written by hand, or by someone else) loads
/// without that key, which is reported by id, never with the scope dropped.
#[test]
fn a_key_with_a_malformed_scope_is_skipped_not_widened() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("sec_0{}", "S".repeat(59));
    let file =
        json!({"keys": [{"id": "key_bad_scope", "secret": secret, "scopes": ["ok", "not ok"]}]});
    std::fs::write(dir.path().join("keys.json"), file.to_string()).unwrap();
    let (daemon, _) = start(dir.path());
    assert_eq!(daemon.verify(&secret).status, 403);
    let status = daemon.status();
    assert!(
        status["load_warnings"][0]
            .as_str()
            .unwrap()
            .contains("key_bad_scope")
    );
}
