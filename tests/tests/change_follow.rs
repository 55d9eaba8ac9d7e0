//! The daemon following the change log (issue 22), end to end with the real daemon and the real
//! heare-authctl on a real S3 server (s3s; moto with `HEARE_TEST_S3=moto`): a write reaches the
//! daemon as one small change object applied over the set it serves — no load of the key object,
//! usage kept — and a missing, invalid or inapplicable change, a plain one under a storage secret
//! or a daemon started while the log is ahead of the key object all end with the keys the store
//! holds, never a key that was revoked.

use heare_auth_store::codec::{StorageSecret, decode};
use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::Daemon;
use heare_auth_tests::http::Request;
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const BUCKET: &str = "follow";
const OBJECT: &str = "auth/keys.json";

fn change_object(seq: u64) -> String {
    format!("{OBJECT}.changes/{seq:020}.json")
}

/// ctl on the bucket, asking `socket`'s daemon to apply each write.
fn ctl(s3: &S3Server, dir: &Path, socket: &Path, env: &[(&str, &str)]) -> Ctl {
    s3.ctl(dir, (BUCKET, OBJECT), socket, env)
}

/// An S3 server with a bucket holding keys A and B, written by ctl (changes 1 and 2).
fn store_with_two_keys(dir: &Path, env: &[(&str, &str)]) -> (S3Server, [(String, String); 2]) {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let writer = ctl(&s3, dir, &dir.join("none.sock"), env);
    let a = writer.create(&["--name", "A", "--no-reload"]);
    let b = writer.create(&["--name", "B", "--no-reload"]);
    (s3, [a, b])
}

fn daemon(s3: &S3Server, dir: &Path, env: &[(&str, &str)]) -> Daemon {
    let mut builder = s3.daemon(dir, BUCKET, OBJECT);
    for (name, value) in env {
        builder = builder.env(*name, *value);
    }
    builder.start().unwrap()
}

fn valid(daemon: &Daemon, secret: &str) -> bool {
    daemon.verify(secret).json()["valid"] == true
}

/// The value of the sample `series` in `/metrics`; 0 when absent.
fn sample(daemon: &Daemon, series: &str) -> f64 {
    let text = daemon
        .request(&Request::new("GET", "/metrics"))
        .unwrap()
        .body;
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

fn reloads(daemon: &Daemon, trigger: &str, result: &str) -> f64 {
    let series = format!("heare_auth_reloads_total{{trigger=\"{trigger}\",result=\"{result}\"}}");
    sample(daemon, &series)
}

fn usage_of(daemon: &Daemon, id: &str) -> Vec<u64> {
    daemon
        .usage()
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["key_id"] == id)
        .map(|entry| entry["verifications"].as_u64().unwrap())
        .collect()
}

/// Whether a log line of `event` matching `wanted` appears within 10 s (the log is written by a
/// background thread).
fn logged(daemon: &Daemon, event: &str, wanted: impl Fn(&Value) -> bool) -> bool {
    let found = wait_until(Duration::from_secs(10), || {
        daemon.events(event).iter().any(&wanted)
    });
    if !found {
        eprintln!("{}", daemon.log());
    }
    found
}

fn refreshed(daemon: &Daemon) {
    let answer = daemon.refresh();
    assert_eq!(answer.status, 200, "{}", answer.body);
}

#[test]
fn a_write_is_applied_from_the_log_without_loading_the_key_object() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, [(a, sec_a), (b, sec_b)]) = store_with_two_keys(dir.path(), &[]);
    let mut daemon = daemon(&s3, dir.path(), &[]);
    let status = daemon.status();
    assert_eq!(status["change_seq"], 2, "{status}");
    assert_eq!(status["overlay_keys"], 0);
    for _ in 0..3 {
        assert!(valid(&daemon, &sec_b));
    }
    let ctl = ctl(&s3, dir.path(), &daemon.socket, &[]);

    // A revocation: ctl commits change 3 and asks /refresh, which follows the log.
    ctl.ok(&["delete", &a, "--yes"]);
    assert!(!valid(&daemon, &sec_a), "revoked");
    assert!(valid(&daemon, &sec_b));
    let status = daemon.status();
    assert_eq!(status["change_seq"], 3, "{status}");
    assert_eq!(status["overlay_keys"], 1);
    assert_eq!(status["keys_loaded"], 1);
    assert_eq!(sample(&daemon, "heare_auth_changes_applied_total"), 1.0);
    assert_eq!(sample(&daemon, "heare_auth_change_seq"), 3.0);
    assert_eq!(reloads(&daemon, "http", "success"), 0.0, "no full load");
    assert!(reloads(&daemon, "http", "unchanged") >= 1.0);
    let applied = daemon.wait_events("changes_applied");
    assert_eq!(applied.last().unwrap()["change_seq"], 3, "{applied:?}");

    // A change to B keeps B's usage; a new key lives in the overlay.
    ctl.ok(&["scopes", &b, "--add", "read"]);
    assert!(valid(&daemon, &sec_b));
    assert_eq!(usage_of(&daemon, &b), [5], "counted once, usage kept");
    let (_, sec_c) = ctl.create(&["--name", "C"]);
    assert!(valid(&daemon, &sec_c));
    let status = daemon.status();
    assert_eq!(status["change_seq"], 5, "{status}");
    assert_eq!(status["keys_loaded"], 2);
    assert_eq!(status["overlay_keys"], 3);
    assert_eq!(reloads(&daemon, "http", "success"), 0.0);
    let shown = ctl.ok(&["status"]);
    assert!(
        shown.contains("change log:    change 5 (3 keys changed"),
        "{shown}"
    );

    // Compaction while the daemon follows: the next change still arrives.
    ctl.ok(&["compact", "--keep", "0s"]);
    assert!(s3.get_object(BUCKET, &change_object(4)).unwrap().is_none());
    let (_, sec_d) = ctl.create(&["--name", "D"]);
    assert!(valid(&daemon, &sec_d));
    assert_eq!(daemon.status()["change_seq"], 6);

    // SIGHUP loads the whole key object: the overlay folds into the new base, usage with it.
    daemon.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(20), || {
        daemon.status()["overlay_keys"] == 0
    }));
    assert!(!valid(&daemon, &sec_a));
    assert!(valid(&daemon, &sec_c) && valid(&daemon, &sec_d));
    assert_eq!(usage_of(&daemon, &b), [5]);
    assert_eq!(daemon.status()["change_seq"], 6);
    daemon.stop();
}

#[test]
fn a_missing_change_makes_a_full_load_counted_as_change_gap() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, [(a, sec_a), (_, sec_b)]) = store_with_two_keys(dir.path(), &[]);
    let mut daemon = daemon(&s3, dir.path(), &[]);
    let writer = ctl(&s3, dir.path(), &dir.path().join("none.sock"), &[]);
    let (_, sec_c) = writer.create(&["--name", "C", "--no-reload"]);
    writer.ok(&["delete", &a, "--yes", "--no-reload"]);
    s3.delete_object(BUCKET, &change_object(3)).unwrap();
    refreshed(&daemon);
    assert!(!valid(&daemon, &sec_a), "the key object's delete is served");
    assert!(valid(&daemon, &sec_b) && valid(&daemon, &sec_c));
    assert_eq!(reloads(&daemon, "change_gap", "success"), 1.0);
    let status = daemon.status();
    assert_eq!(status["change_seq"], 4, "{status}");
    assert_eq!(status["overlay_keys"], 0);
    let gap_load = |e: &Value| e["trigger"] == "change_gap" && e["change_seq"] == 4;
    assert!(logged(&daemon, "refresh_success", gap_load));
    daemon.stop();
}

#[test]
fn an_invalid_change_loads_the_key_object_and_stops_following_there_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, [(_, sec_a), _]) = store_with_two_keys(dir.path(), &[]);
    let mut daemon = daemon(&s3, dir.path(), &[]);
    let writer = ctl(&s3, dir.path(), &dir.path().join("none.sock"), &[]);

    // Change 3 damaged after the key object took it in: the key object serves it.
    let (_, sec_c) = writer.create(&["--name", "C", "--no-reload"]);
    s3.put_object(BUCKET, &change_object(3), b"{\"format\": \"damaged")
        .unwrap();
    refreshed(&daemon);
    assert!(valid(&daemon, &sec_c));
    assert_eq!(reloads(&daemon, "change_gap", "success"), 1.0);
    assert_eq!(daemon.status()["change_seq"], 3);

    // An object planted at 4, which the key object does not contain: one more full load, then
    // following stops at 4 (no load per poll) and every key keeps being served.
    s3.put_object(BUCKET, &change_object(4), b"not json at all")
        .unwrap();
    refreshed(&daemon);
    assert!(logged(&daemon, "change_log_stuck", |e| e["change"] == 4));
    assert!(!daemon.log().contains("not json at all"));
    assert_eq!(reloads(&daemon, "change_gap", "success"), 2.0);
    refreshed(&daemon);
    assert_eq!(reloads(&daemon, "change_gap", "success"), 2.0, "not again");
    assert!(valid(&daemon, &sec_a) && valid(&daemon, &sec_c));

    // The operator drops it; the next write's change 4 is served.
    writer.ok(&["compact", "--drop-invalid", "4", "--yes"]);
    let (_, sec_d) = writer.create(&["--name", "D", "--no-reload"]);
    refreshed(&daemon);
    assert!(valid(&daemon, &sec_d));
    assert_eq!(daemon.status()["change_seq"], 4);
    let (_, sec_e) = writer.create(&["--name", "E", "--no-reload"]);
    refreshed(&daemon);
    assert!(valid(&daemon, &sec_e), "following again");
    assert_eq!(daemon.status()["overlay_keys"], 1);
    daemon.stop();
}

#[test]
fn a_plain_change_under_a_storage_secret_is_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STORAGE_SECRET", "storage-secret-of-the-follow-tests")];
    let (s3, [(a, sec_a), _]) = store_with_two_keys(dir.path(), &env);
    let mut daemon = daemon(&s3, dir.path(), &env);
    let writer = ctl(&s3, dir.path(), &dir.path().join("none.sock"), &env);
    writer.ok(&["disable", &a, "--no-reload"]);
    refreshed(&daemon);
    assert!(!valid(&daemon, &sec_a), "an encrypted change applies");
    assert_eq!(sample(&daemon, "heare_auth_changes_applied_total"), 1.0);
    // Someone with S3 write access but no secret plants a plain change enabling A at 4.
    let store_id = daemon_store_id(&s3);
    let forged = serde_json::json!({
        "format": "heare-auth-change/1", "seq": 4, "store_id": store_id, "operation": "enable",
        "keys": [{"id": a, "key": {"id": a, "secret_hash": sha256_field(&sec_a)}}],
        "time": "2026-12-04T00:00:00Z", "author": {"user": "mallory", "host": "h"},
        "ctl_version": "0",
    });
    s3.put_object(BUCKET, &change_object(4), forged.to_string().as_bytes())
        .unwrap();
    refreshed(&daemon);
    assert!(!valid(&daemon, &sec_a), "the plain change is refused");
    assert_eq!(sample(&daemon, "heare_auth_changes_applied_total"), 1.0);
    assert!(logged(&daemon, "change_log_stuck", |e| e["change"] == 4));
    daemon.stop();
}

/// The store identity inside the encrypted key object.
fn daemon_store_id(s3: &S3Server) -> String {
    let body = s3.get_object(BUCKET, OBJECT).unwrap().unwrap();
    let secret = StorageSecret::new("storage-secret-of-the-follow-tests");
    let json = decode(&body, Some(&secret)).unwrap();
    let object: Value = serde_json::from_slice(&json).unwrap();
    object["store_id"].as_str().unwrap().to_string()
}

fn sha256_field(secret: &str) -> String {
    heare_auth_store::secret_hash::SecretDigest::of_secret(secret).to_field()
}

#[test]
fn a_daemon_started_while_the_log_is_ahead_of_the_key_object_applies_it() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, [(a, sec_a), (_, sec_b)]) = store_with_two_keys(dir.path(), &[]);
    // A writer stopped between its commit and its rewrite: change 3 is in the log, the key object
    // is still the one of change 2.
    let before = s3.get_object(BUCKET, OBJECT).unwrap().unwrap();
    let writer = ctl(&s3, dir.path(), &dir.path().join("none.sock"), &[]);
    writer.ok(&["delete", &a, "--yes", "--no-reload"]);
    s3.put_object(BUCKET, OBJECT, &before).unwrap();
    let mut daemon = daemon(&s3, dir.path(), &[]);
    assert!(!valid(&daemon, &sec_a), "never served, not even at start");
    assert!(valid(&daemon, &sec_b));
    let status = daemon.status();
    assert_eq!(status["change_seq"], 3, "{status}");
    assert_eq!(status["overlay_keys"], 1);
    assert!(logged(&daemon, "startup", |e| e["changes_applied"] == 1));
    daemon.stop();
}

#[test]
fn a_restart_while_s3_is_down_serves_the_cache_with_the_changes_applied_since() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s3, [(a, sec_a), (_, sec_b)]) = store_with_two_keys(dir.path(), &[]);
    let mut first = daemon(&s3, dir.path(), &[]);
    ctl(&s3, dir.path(), &first.socket, &[]).ok(&["delete", &a, "--yes"]);
    assert!(!valid(&first, &sec_a));
    assert_eq!(
        reloads(&first, "http", "success"),
        0.0,
        "applied from the log"
    );
    assert!(dir.path().join("keys.cache.changes").exists());
    first.stop();
    // S3 goes away; the daemon restarts from its last-known-good cache, which holds the key
    // object as it was before the revocation, and the revocation kept beside it.
    s3.stop();
    let mut again = daemon(&s3, dir.path(), &[]);
    let status = again.status();
    assert_eq!(status["source"], "cache", "{status}");
    assert_eq!(status["change_seq"], 3, "{status}");
    assert!(!valid(&again, &sec_a), "the revoked key stays revoked");
    assert!(valid(&again, &sec_b));
    assert!(logged(
        &again,
        "serving_stale_cache",
        |e| e["changes_applied"] == 1
    ));
    again.stop();
}

#[test]
fn an_older_key_object_written_back_with_its_later_changes_deleted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("STORAGE_SECRET", "storage-secret-of-the-follow-tests")];
    let (s3, [(a, sec_a), (_, sec_b)]) = store_with_two_keys(dir.path(), &env);
    let before = s3.get_object(BUCKET, OBJECT).unwrap().unwrap();
    let mut first = daemon(&s3, dir.path(), &env);
    ctl(&s3, dir.path(), &first.socket, &env).ok(&["delete", &a, "--yes"]);
    assert!(!valid(&first, &sec_a));
    // Someone who can write the bucket but holds no secret puts back the key object the daemon
    // loaded whole (its generation is still the newest the daemon loaded) and deletes the change
    // after it; then makes the daemon load it whole.
    s3.put_object(BUCKET, OBJECT, &before).unwrap();
    s3.delete_object(BUCKET, &change_object(3)).unwrap();
    first.signal(Signal::SIGHUP);
    assert!(logged(&first, "refresh_failed", |e| e["error"]
        .as_str()
        .is_some_and(
            |error| error.contains("change 3 was already served")
        )));
    assert!(!valid(&first, &sec_a), "the revoked key stays revoked");
    assert!(valid(&first, &sec_b));
    first.stop();
    // Across a restart too: the record is kept beside the cache.
    let mut again = daemon(&s3, dir.path(), &env);
    assert!(
        !valid(&again, &sec_a),
        "refused at start: served from the cache instead"
    );
    assert_eq!(again.status()["source"], "cache");
    again.stop();
}

#[test]
fn polling_follows_the_log_and_never_fetches_the_key_object_again() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, [(a, sec_a), (_, sec_b)]) = store_with_two_keys(dir.path(), &[]);
    let mut daemon = s3
        .daemon(dir.path(), BUCKET, OBJECT)
        .config("refresh_interval = \"1s\"\n[s3]\ntimeout = \"2s\"\n")
        .start()
        .unwrap();
    let writer = ctl(&s3, dir.path(), &dir.path().join("none.sock"), &[]);
    writer.ok(&["delete", &a, "--yes", "--no-reload"]);
    assert!(
        wait_until(Duration::from_secs(20), || !valid(&daemon, &sec_a)),
        "the poll delivered the revocation"
    );
    assert!(valid(&daemon, &sec_b));
    // A few more polls: each reads the next number (404) and HEADs the key object.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sample(&daemon, "heare_auth_changes_applied_total"), 1.0);
    assert_eq!(
        reloads(&daemon, "poll", "success"),
        0.0,
        "never loaded whole"
    );
    assert!(reloads(&daemon, "poll", "unchanged") >= 2.0);
    assert_eq!(daemon.status()["change_seq"], 3);
    daemon.stop();
}

#[test]
fn past_ten_thousand_keys_the_overlay_is_folded_into_a_new_base_keeping_usage() {
    use heare_auth_store::change::KeyChange;
    use heare_auth_tests::change_cost::{STORE_ID, at_change_zero, change_object as change_body};
    use heare_auth_tests::keys::{TestKey, key_file};
    let keys: Vec<TestKey> = (0..11_000)
        .map(|n| TestKey::new(&format!("key_0fold{n:08}"), &format!("sec_0fold{n:08}")).hashed())
        .collect();
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &at_change_zero(&key_file(&keys)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon(&s3, dir.path(), &[]);
    for _ in 0..3 {
        assert!(valid(&daemon, &keys[0].secret));
    }
    // Eleven changes of 1,000 keys each give every key a scope; the key object takes them in.
    let mut object: Value = serde_json::from_slice(&key_file(&keys)).unwrap();
    for key in object["keys"].as_array_mut().unwrap() {
        key["scopes"] = serde_json::json!(["read"]);
    }
    let stored: Vec<Value> = object["keys"].as_array().unwrap().clone();
    for (n, batch) in stored.chunks(1000).enumerate() {
        let changes = batch
            .iter()
            .map(|key| KeyChange {
                id: key["id"].as_str().unwrap().to_string(),
                key: key.as_object().cloned(),
            })
            .collect();
        let seq = n as u64 + 1;
        let body = change_body(seq, "scopes", changes);
        s3.put_object(BUCKET, &change_object(seq), &body).unwrap();
    }
    object["change_seq"] = 11.into();
    object["store_id"] = STORE_ID.into();
    s3.put_object(BUCKET, OBJECT, &serde_json::to_vec(&object).unwrap())
        .unwrap();
    refreshed(&daemon);
    assert!(
        wait_until(Duration::from_secs(20), || reloads(
            &daemon, "fold", "success"
        ) == 1.0),
        "{}",
        daemon.log()
    );
    let status = daemon.status();
    assert_eq!(status["overlay_keys"], 0, "{status}");
    assert_eq!(status["change_seq"], 11);
    assert_eq!(status["keys_loaded"], 11_000);
    assert_eq!(sample(&daemon, "heare_auth_changes_applied_total"), 11.0);
    assert!(valid(&daemon, &keys[0].secret));
    assert_eq!(
        usage_of(&daemon, &keys[0].id),
        [4],
        "usage moved into the new base"
    );
    refreshed(&daemon);
    assert_eq!(reloads(&daemon, "fold", "success"), 1.0, "folded once");
    daemon.stop();
}
