//! Per-key rate limits in heare-authctl (issue 23), end to end with the real binary: `create
//! --rate-limit`/`--burst` writes the key file's `rate_limit` member, `rate-limit KEY LIMIT|none`
//! changes or removes it as one change of the log (and reloads the daemon), `list`/`show` and
//! their `--json` print it, a malformed limit (typed, or stored) is refused or shown as invalid,
//! never as no limit; on a file store and on S3.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::DaemonBuilder;
use heare_auth_tests::keys::secret_hash;
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ctl on a file store in `dir` with no daemon to reload.
fn file_ctl(dir: &Path) -> Ctl {
    let url = format!("file://{}", dir.join("keys.json").display());
    Ctl::new(dir, &url, &dir.join("none.sock"))
}

fn key_object(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("keys.json")).unwrap()).unwrap()
}

/// The key `id` of a key object.
fn key_in(object: &Value, id: &str) -> Value {
    object["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no key {id} in {object}"))
}

fn changes_dir(dir: &Path) -> PathBuf {
    dir.join("keys.json.changes")
}

/// The change numbered `seq` of a file store's log.
fn change(dir: &Path, seq: u64) -> Value {
    let path = changes_dir(dir).join(format!("{seq:020}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn change_count(dir: &Path) -> usize {
    std::fs::read_dir(changes_dir(dir)).map_or(0, |d| d.count())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `show` line of `field`.
fn show_line(ctl: &Ctl, id: &str, field: &str) -> String {
    let shown = ctl.ok(&["show", id]);
    let prefix = format!("{field}:");
    shown
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {field} in {shown}"))
        .to_string()
}

/// The cell of `list`'s RATE_LIMIT column on the row of key `id` (the column's text to the end
/// of the line: a limit with a burst holds spaces).
fn listed_limit(ctl: &Ctl, id: &str) -> String {
    let table = ctl.ok(&["list"]);
    let header = table.lines().next().unwrap();
    let start = header
        .find("RATE_LIMIT")
        .unwrap_or_else(|| panic!("no RATE_LIMIT column: {table}"));
    let row = table
        .lines()
        .find(|line| line.starts_with(id))
        .unwrap_or_else(|| panic!("no row of {id}: {table}"));
    row.get(start..).unwrap_or("").trim().to_string()
}

#[test]
fn create_sets_a_limit_and_rate_limit_changes_and_removes_it_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("keys.json").display());
    std::fs::write(dir.path().join("keys.json"), br#"{"keys": []}"#).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .args(["--store", &url, "--watch-store", "false"])
        .start()
        .unwrap();
    let ctl = Ctl::new(dir.path(), &url, &daemon.socket);

    let created = json_of(&ctl.ok(&[
        "create",
        "--json",
        "--name",
        "lim",
        "--rate-limit",
        "100/1m",
    ]));
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(
        created["rate_limit"],
        json!({"requests": 100, "per": "1m", "burst": 100})
    );
    let stored = key_in(&key_object(dir.path()), &id);
    assert_eq!(stored["rate_limit"], json!({"requests": 100, "per": "1m"}));
    assert_eq!(listed_limit(&ctl, &id), "100/1m");
    assert_eq!(show_line(&ctl, &id, "rate_limit"), "rate_limit:     100/1m");

    let reloads = daemon.events("refresh_success").len();
    let before = change_count(dir.path());
    let said = ctl.ok(&["rate-limit", &id, "5/1s", "--burst", "2"]);
    assert!(said.contains("rate limit: 5/1s burst 2"), "{said}");
    let limited = json!({"requests": 5, "per": "1s", "burst": 2});
    let stored = key_in(&key_object(dir.path()), &id);
    assert_eq!(stored["rate_limit"], limited);
    assert!(stored["updated_at"].is_string(), "{stored}");
    let logged = change(dir.path(), before as u64 + 1);
    assert_eq!(logged["operation"], "rate-limit");
    assert_eq!(logged["keys"][0]["id"], id.as_str());
    assert_eq!(logged["keys"][0]["key"]["rate_limit"], limited);
    assert_eq!(key_object(dir.path())["change_seq"], before as u64 + 1);
    assert!(
        wait_until(Duration::from_secs(10), || {
            daemon.events("refresh_success").len() > reloads
        }),
        "ctl asked the daemon to reload"
    );

    let listed = json_of(&ctl.ok(&["list", "--json"]));
    assert_eq!(listed[0]["rate_limit"], limited);
    let shown = json_of(&ctl.ok(&["show", &id, "--json"]));
    assert_eq!(shown["rate_limit"], limited);
    assert_eq!(listed_limit(&ctl, &id), "5/1s burst 2");
    assert_eq!(
        show_line(&ctl, &id, "rate_limit"),
        "rate_limit:     5/1s burst 2"
    );
    let log = ctl.ok(&["log", "--key", &id]);
    assert!(log.contains("rate-limit by"), "{log}");
    assert!(log.contains("rate limit 5/1s burst 2"), "{log}");

    ctl.ok(&["rate-limit", &id, "none"]);
    let stored = key_in(&key_object(dir.path()), &id);
    assert!(stored.get("rate_limit").is_none(), "{stored}");
    let shown = json_of(&ctl.ok(&["show", &id, "--json"]));
    assert_eq!(shown["rate_limit"], Value::Null);
    assert_eq!(listed_limit(&ctl, &id), "-");
    assert_eq!(show_line(&ctl, &id, "rate_limit"), "rate_limit:     -");
}

#[test]
fn setting_the_same_limit_again_is_written_as_disabling_twice_is() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    let (id, _) = ctl.create(&["--name", "again", "--no-reload", "--rate-limit", "10/1s"]);
    let created = change_count(dir.path());
    ctl.ok(&["disable", &id, "--no-reload"]);
    ctl.ok(&["disable", &id, "--no-reload"]);
    assert_eq!(
        change_count(dir.path()),
        created + 2,
        "each disable is a change"
    );
    let said = ctl.ok(&["rate-limit", &id, "10/1s", "--no-reload"]);
    assert!(said.contains("rate limit: 10/1s"), "{said}");
    assert_eq!(
        change_count(dir.path()),
        created + 3,
        "so is the same limit"
    );
    let logged = change(dir.path(), created as u64 + 3);
    assert_eq!(logged["operation"], "rate-limit");
    let stored = key_in(&key_object(dir.path()), &id);
    assert_eq!(stored["rate_limit"], json!({"requests": 10, "per": "1s"}));
}

#[test]
fn malformed_limits_and_a_burst_alone_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    let (id, _) = ctl.create(&["--name", "kept", "--no-reload", "--rate-limit", "7/1h"]);
    let before = std::fs::read(dir.path().join("keys.json")).unwrap();
    let changes = change_count(dir.path());
    let mut refusals: Vec<(Vec<&str>, i32)> = Vec::new();
    for bad in ["abc", "0/1m", "10/0s"] {
        refusals.push((vec!["create", "--name", "x", "--rate-limit", bad], 2));
        refusals.push((vec!["rate-limit", &id, bad], 2));
    }
    refusals.extend([
        (vec!["create", "--name", "x", "--burst", "2"], 2),
        (
            vec![
                "create",
                "--name",
                "x",
                "--rate-limit",
                "5/1s",
                "--burst",
                "0",
            ],
            2,
        ),
        (vec!["rate-limit", &id, "none", "--burst", "2"], 2),
        (vec!["rate-limit", &id], 2),
        (vec!["rate-limit", "key_missing", "5/1s"], 3),
    ]);
    for (args, code) in refusals {
        let output = ctl.run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?} says why");
        assert_eq!(
            std::fs::read(dir.path().join("keys.json")).unwrap(),
            before,
            "{args:?} left the key file as it was"
        );
        assert_eq!(change_count(dir.path()), changes, "{args:?} logged nothing");
    }
    let said = String::from_utf8_lossy(&ctl.run(&["rate-limit", &id, "abc"]).stderr).into_owned();
    assert!(said.contains("\"abc\" is not a rate limit"), "{said}");
}

#[test]
fn a_malformed_stored_limit_is_shown_invalid_and_can_be_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let key = |id: &str, limit: Value| {
        json!({"id": id, "name": id, "secret_hash": secret_hash(&format!("sec_{id}_0123456789")),
               "created_at": "2024-01-20T10:30:00Z", "metadata": {}, "rate_limit": limit})
    };
    let file = json!({"keys": [
        key("key_zero", json!({"requests": 0, "per": "1m"})),
        key("key_text", json!("100/1m")),
        key("key_null", Value::Null),
    ]});
    std::fs::write(dir.path().join("keys.json"), file.to_string()).unwrap();
    let ctl = file_ctl(dir.path());
    // `null` is no limit, for ctl as for the daemon.
    assert_eq!(listed_limit(&ctl, "key_null"), "-");
    let listed = json_of(&ctl.ok(&["list", "--json"]));
    for (n, id) in ["key_zero", "key_text"].iter().enumerate() {
        assert_eq!(listed[n]["id"], *id);
        assert_eq!(listed[n]["rate_limit"], "invalid", "{id}: {listed}");
        assert_eq!(listed_limit(&ctl, id), "invalid");
        assert_eq!(show_line(&ctl, id, "rate_limit"), "rate_limit:     invalid");
        let shown = json_of(&ctl.ok(&["show", id, "--json"]));
        assert_eq!(shown["rate_limit"], "invalid");
    }

    ctl.ok(&["rate-limit", "key_zero", "10/1s", "--no-reload"]);
    ctl.ok(&["rate-limit", "key_text", "none", "--no-reload"]);
    let object = key_object(dir.path());
    assert_eq!(
        key_in(&object, "key_zero")["rate_limit"],
        json!({"requests": 10, "per": "1s"})
    );
    assert!(key_in(&object, "key_text").get("rate_limit").is_none());
    assert_eq!(listed_limit(&ctl, "key_zero"), "10/1s");
    assert_eq!(listed_limit(&ctl, "key_null"), "-", "untouched");
}

#[test]
fn on_s3_the_limit_is_written_logged_and_removed() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("limits").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl = s3.ctl(
        dir.path(),
        ("limits", "keys.json"),
        &dir.path().join("none.sock"),
        &[],
    );
    let object = || -> Value {
        serde_json::from_slice(&s3.get_object("limits", "keys.json").unwrap().unwrap()).unwrap()
    };
    let (id, _) = ctl.create(&[
        "--name",
        "s3",
        "--no-reload",
        "--rate-limit",
        "10/1s",
        "--burst",
        "25",
    ]);
    let bursty = json!({"requests": 10, "per": "1s", "burst": 25});
    assert_eq!(key_in(&object(), &id)["rate_limit"], bursty);
    assert_eq!(listed_limit(&ctl, &id), "10/1s burst 25");
    let shown = json_of(&ctl.ok(&["show", &id, "--json"]));
    assert_eq!(shown["rate_limit"], bursty);

    ctl.ok(&["rate-limit", &id, "5/1s", "--burst", "2", "--no-reload"]);
    let limited = json!({"requests": 5, "per": "1s", "burst": 2});
    let written = object();
    assert_eq!(key_in(&written, &id)["rate_limit"], limited);
    let seq = written["change_seq"].as_u64().unwrap();
    let body = s3
        .get_object("limits", &format!("keys.json.changes/{seq:020}.json"))
        .unwrap()
        .unwrap_or_else(|| panic!("change {seq} missing"));
    let logged: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(logged["operation"], "rate-limit");
    assert_eq!(logged["keys"][0]["key"]["rate_limit"], limited);

    let before = s3.get_object("limits", "keys.json").unwrap();
    assert_eq!(ctl.run(&["rate-limit", &id, "0/1m"]).status.code(), Some(2));
    assert_eq!(s3.get_object("limits", "keys.json").unwrap(), before);

    ctl.ok(&["rate-limit", &id, "none", "--no-reload"]);
    assert!(key_in(&object(), &id).get("rate_limit").is_none());
    let listed = json_of(&ctl.ok(&["list", "--json"]));
    assert_eq!(listed[0]["rate_limit"], Value::Null);
}
