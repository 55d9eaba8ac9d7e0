//! The daemon on a file store, driven over its real Unix socket: every verify outcome, every
//! error status, the socket file's life cycle, and the log holding no secret.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder, binary};
use heare_auth_tests::http::Request;
use heare_auth_tests::keys::{TestKey, key_file};
use nix::sys::signal::Signal;
use serde_json::json;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

const PLAIN: &str = "sec_0PlainSecretForTheEndToEndTestsAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const HASHED: &str = "sec_0HashedSecretForTheEndToEndTestsBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const EXPIRED: &str = "sec_0ExpiredSecretForTheEndToEndTestsCCCCCCCCCCCCCCCCCCCCCCCCCCC";
const FUTURE: &str = "sec_0FutureExpirySecretDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD";
const UNKNOWN: &str = "sec_0UnknownSecretNeverStoredEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE";

fn keys() -> Vec<TestKey> {
    vec![
        TestKey::new("key_plain", PLAIN),
        TestKey::new("key_hashed", HASHED).hashed(),
        TestKey::new("key_expired", EXPIRED).expires_at("2020-01-01T00:00:00Z"),
        TestKey::new("key_future", FUTURE).expires_at("2999-01-01T00:00:00+00:00"),
    ]
}

fn start(dir: &Path) -> Daemon {
    start_with(dir, &[])
}

fn start_with(dir: &Path, extra: &[&str]) -> Daemon {
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&keys())).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(["--log-level", "trace"])
        .args(extra.iter().copied())
        .start()
        .unwrap()
}

#[test]
fn verify_answers_for_every_kind_of_key() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());

    let valid = daemon.verify(PLAIN);
    assert_eq!(valid.status, 200);
    assert_eq!(valid.header("content-type"), Some("application/json"));
    assert_eq!(
        valid.json(),
        json!({"valid": true, "key_id": "key_plain", "name": "name of key_plain",
               "metadata": {"env": "test", "id": "key_plain"}, "scopes": [], "error": null})
    );
    let hashed = daemon.verify(HASHED);
    assert_eq!(hashed.status, 200);
    assert_eq!(hashed.json()["key_id"], "key_hashed");
    assert_eq!(daemon.verify(FUTURE).json()["key_id"], "key_future");

    for secret in [EXPIRED, UNKNOWN, "", "sec_", &PLAIN[..PLAIN.len() - 1]] {
        let refused = daemon.verify(secret);
        assert_eq!(refused.status, 403, "{secret}");
        assert_eq!(
            refused.json(),
            json!({"valid": false, "error": "Invalid API key"})
        );
    }

    let bearer = daemon
        .request(
            &Request::new("POST", "/verify").header("Authorization", format!("Bearer {PLAIN}")),
        )
        .unwrap();
    assert_eq!(bearer.status, 200);
    assert_eq!(bearer.json()["key_id"], "key_plain");
}

#[test]
fn bad_requests_get_json_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let cases: Vec<(Request, u16)> = vec![
        (Request::new("POST", "/verify").body("{not json"), 422),
        (Request::new("POST", "/verify").body(r#"{"key": "x"}"#), 422),
        (
            Request::new("POST", "/verify").body(r#"{"api_key": 5}"#),
            422,
        ),
        (
            Request::new("POST", "/verify").body(format!("\"{PLAIN}\"")),
            422,
        ),
        (Request::new("POST", "/verify"), 422),
        (
            Request::new("POST", "/verify").body(vec![b'a'; 64 * 1024 + 1]),
            413,
        ),
        (Request::new("GET", "/verify"), 405),
        (Request::new("DELETE", "/refresh"), 405),
        (Request::new("POST", "/health"), 405),
        (Request::new("GET", "/nope"), 404),
        (Request::new("GET", "/verify/../etc/passwd"), 404),
    ];
    for (request, status) in cases {
        let response = daemon.request(&request).unwrap();
        assert_eq!(
            response.status, status,
            "{} {}",
            request.method, request.path
        );
        let body = response.json();
        assert!(body["error"].is_string(), "{body}");
        assert!(!response.body.contains(PLAIN), "an error echoed the secret");
    }
    let not_allowed = daemon.request(&Request::new("GET", "/verify")).unwrap();
    assert_eq!(not_allowed.header("allow"), Some("POST"));
    // The daemon still serves after all of that.
    assert_eq!(daemon.verify(PLAIN).status, 200);
}

#[test]
fn health_is_opaque_and_status_describes_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let health = daemon.request(&Request::new("GET", "/health")).unwrap();
    assert_eq!(health.status, 200);
    assert_eq!(health.json(), json!({"status": "ok"}));
    let status = daemon.status();
    assert_eq!(status["keys_loaded"], 4);
    assert_eq!(status["stale"], false);
    assert_eq!(status["source"], "store");
    assert!(status["store"].as_str().unwrap().starts_with("file:///"));
    assert!(status["store_version"].is_string());
    assert!(status["last_load_at"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn socket_has_mode_0660_and_is_removed_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path());
    let metadata = std::fs::metadata(&daemon.socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);

    let status = daemon.stop().expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!daemon.socket.exists(), "socket file left behind");
    assert!(!daemon.events("shutdown_complete").is_empty());
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("heare-authd.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let daemon = start(dir.path());
    assert_eq!(daemon.verify(PLAIN).status, 200);

    let second_dir = tempfile::tempdir().unwrap();
    let mut second = DaemonBuilder::new(second_dir.path())
        .socket(socket.clone())
        .arg("--store")
        .arg(format!("file://{}", dir.path().join("keys.json").display()))
        .spawn();
    let status = second
        .wait_exit(Duration::from_secs(20))
        .expect("second daemon exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        second.log().contains("in use by a running daemon"),
        "{}",
        second.log()
    );
    assert_eq!(
        daemon.verify(PLAIN).status,
        200,
        "the first daemon is untouched"
    );
}

#[test]
fn sighup_and_refresh_reload_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // Not watched: the changes below must come through /refresh and SIGHUP alone.
    let daemon = start_with(dir.path(), &["--watch-store", "false"]);
    let store = dir.path().join("keys.json");
    let added = "sec_0AddedAfterStartFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF";
    assert_eq!(daemon.verify(added).status, 403);

    let mut more = keys();
    more.push(TestKey::new("key_added", added));
    std::fs::write(&store, key_file(&more)).unwrap();
    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 200);
    let body = refresh.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["keys_loaded"], 5);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(daemon.verify(added).json()["key_id"], "key_added");

    std::fs::write(&store, key_file(&keys()[..1])).unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(heare_auth_tests::wait_until(
        Duration::from_secs(10),
        || daemon.verify(added).status == 403
    ));
    assert_eq!(daemon.status()["keys_loaded"], 1);
}

#[test]
fn a_corrupt_file_keeps_the_previous_set_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let store = dir.path().join("keys.json");
    for corrupt in [
        format!("{{\"keys\": [{{\"id\": \"k\", \"secret\": \"{PLAIN}\""),
        "not json at all".to_string(),
        format!(
            "{{\"keys\":[{{\"id\":\"a\",\"secret\":\"{PLAIN}\"}},{{\"id\":\"b\",\"secret\":\"{PLAIN}\"}}]}}"
        ),
    ] {
        std::fs::write(&store, &corrupt).unwrap();
        let refresh = daemon.refresh();
        assert_eq!(refresh.status, 500, "{}", refresh.body);
        let body = refresh.json();
        assert_eq!(body["success"], false);
        assert_eq!(body["keys_loaded"], 4);
        assert!(!refresh.body.contains(PLAIN));
        assert_eq!(daemon.verify(PLAIN).status, 200, "previous set kept");
        let status = daemon.status();
        assert_eq!(status["stale"], true);
        assert!(status["last_error"].is_string());
    }
    std::fs::write(&store, key_file(&keys())).unwrap();
    assert_eq!(daemon.refresh().status, 200);
    assert_eq!(daemon.status()["stale"], false);
}

#[test]
fn keys_with_unusable_fields_are_skipped_and_reported_by_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(
        &store,
        format!(
            r#"{{"keys":[{{"id":"key_bad_expiry","secret":"{UNKNOWN}","expires_at":"someday"}},
                        {{"id":"key_ok","secret":"{PLAIN}"}}]}}"#
        ),
    )
    .unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    assert_eq!(daemon.verify(PLAIN).status, 200);
    assert_eq!(
        daemon.verify(UNKNOWN).status,
        403,
        "unparsable expiry does not mean never"
    );
    let warnings = daemon.status()["load_warnings"].clone();
    assert_eq!(warnings.as_array().unwrap().len(), 1);
    assert!(warnings[0].as_str().unwrap().contains("key_bad_expiry"));
    assert_eq!(
        daemon.wait_events("key_skipped")[0]["key_id"],
        "key_bad_expiry"
    );
}

#[test]
fn missing_store_file_is_created_empty() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state/keys.json");
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&store).unwrap().trim(),
        r#"{"keys": []}"#
    );
    assert_eq!(daemon.status()["keys_loaded"], 0);
    assert_eq!(daemon.verify(PLAIN).status, 403);
}

#[test]
fn check_config_validates_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "store = \"s3://b/keys.json\"\nrefresh_interval = \"5m\"\nstorage_secret = \"hunter2\"\ncache_path = \"none\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(binary("heare-authd"))
        .args(["--config", good.to_str().unwrap(), "--check-config"])
        .env_clear()
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("store = s3://b/keys.json"));
    assert!(stdout.contains("refresh_interval = 300s"));
    assert!(
        !stdout.contains("hunter2"),
        "check-config printed the storage secret"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "storage_secret = \"hunter2\"\nsocket_mod = \"0660\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(binary("heare-authd"))
        .args(["--config", bad.to_str().unwrap(), "--check-config"])
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr.contains("socket_mod"), "{stderr}");
    assert!(!stderr.contains("hunter2"));
}

#[test]
fn no_secret_reaches_the_log_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    for secret in [PLAIN, HASHED, EXPIRED, UNKNOWN] {
        daemon.verify(secret);
    }
    daemon
        .request(
            &Request::new("POST", "/verify").header("Authorization", format!("Bearer {UNKNOWN}")),
        )
        .unwrap();
    daemon
        .request(&Request::new("POST", "/verify").body(format!("[\"{UNKNOWN}\"]")))
        .unwrap();
    daemon.refresh();
    // The log is written by background threads: wait for the verifications to land.
    let landed = heare_auth_tests::wait_until(Duration::from_secs(5), || {
        daemon.events("verification_success").len() >= 2
            && daemon.events("verification_failed").len() >= 3
    });
    let log = daemon.log();
    assert!(landed, "{log}");
    let failed = daemon.events("verification_failed");
    assert!(failed.iter().any(|e| e["secret_prefix"] == "sec_"));
    for secret in [PLAIN, HASHED, EXPIRED, UNKNOWN] {
        // Anything past the 4-character prefix would be a leak; "sec_0" is shared by all of them.
        let tail = &secret[5..];
        assert!(
            !log.contains(tail),
            "secret {secret} leaked into the log:\n{log}"
        );
    }
}
