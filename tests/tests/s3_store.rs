//! The daemon on a real S3 server (in-process s3s, or moto with HEARE_TEST_S3=moto): loading,
//! reloading on refresh, SIGHUP and polling, and keeping the last good set through every way the
//! store can fail — stopped, corrupt, wrongly encrypted — then recovering.

use heare_auth_store::codec::{StorageSecret, encode_encrypted};
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

const BUCKET: &str = "heare-auth-test";
const OBJECT: &str = "keys.json";
const FIRST: &str = "sec_0FirstS3SecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const SECOND: &str = "sec_0SecondS3SecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const STORAGE_SECRET: &str = "storage-secret-for-the-tests";

fn s3_with(keys: &[TestKey]) -> S3Server {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &key_file(keys)).unwrap();
    s3
}

fn daemon_on(s3: &S3Server, dir: &Path) -> DaemonBuilder {
    s3.daemon(dir, BUCKET, OBJECT)
}

fn first_key() -> Vec<TestKey> {
    vec![TestKey::new("key_first", FIRST)]
}

fn both_keys() -> Vec<TestKey> {
    vec![
        TestKey::new("key_first", FIRST),
        TestKey::new("key_second", SECOND).hashed(),
    ]
}

#[test]
fn loads_from_s3_and_refresh_picks_up_a_change() {
    let s3 = s3_with(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(daemon.verify(FIRST).json()["key_id"], "key_first");
    assert_eq!(daemon.verify(SECOND).status, 403);
    let etag = daemon.status()["store_version"]
        .as_str()
        .unwrap()
        .to_string();

    s3.put_object(BUCKET, OBJECT, &key_file(&both_keys()))
        .unwrap();
    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 200, "{}", refresh.body);
    assert_eq!(refresh.json()["keys_loaded"], 2);
    assert_eq!(daemon.verify(SECOND).json()["key_id"], "key_second");
    assert_ne!(daemon.status()["store_version"], etag.as_str());
    // The cache now holds the second version, byte for byte.
    let cache = std::fs::read(dir.path().join("keys.cache")).unwrap();
    assert_eq!(cache, key_file(&both_keys()));
}

#[test]
fn sighup_reloads() {
    let s3 = s3_with(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_on(&s3, dir.path()).start().unwrap();
    s3.put_object(BUCKET, OBJECT, &key_file(&both_keys()))
        .unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || daemon
        .verify(SECOND)
        .status
        == 200));
    assert_eq!(
        daemon.wait_events("refresh_success")[0]["trigger"],
        "sighup"
    );
}

#[test]
fn polling_uses_the_etag_and_picks_up_changes() {
    let s3 = s3_with(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_on(&s3, dir.path())
        .args(["--refresh-interval", "300ms", "--log-level", "debug"])
        .start()
        .unwrap();
    // Unchanged polls are 304s: logged as unchanged, no new load.
    assert!(wait_until(Duration::from_secs(10), || daemon
        .events("refresh_unchanged")
        .len()
        >= 2));
    assert!(daemon.events("refresh_success").is_empty());
    s3.put_object(BUCKET, OBJECT, &key_file(&both_keys()))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || daemon
        .verify(SECOND)
        .status
        == 200));
    assert_eq!(daemon.wait_events("refresh_success")[0]["trigger"], "poll");
}

#[test]
fn s3_stopped_mid_run_keeps_the_set_then_recovers() {
    let mut s3 = s3_with(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_on(&s3, dir.path()).start().unwrap();
    s3.stop();
    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 500);
    assert_eq!(refresh.json()["keys_loaded"], 1);
    assert_eq!(
        daemon.verify(FIRST).status,
        200,
        "old set kept while S3 is down"
    );
    let status = daemon.status();
    assert_eq!(status["stale"], true);
    assert!(
        status["last_error"].as_str().unwrap().contains("s3://"),
        "{status}"
    );

    s3.restart().unwrap();
    // moto loses its data on restart; s3s keeps it. Either way, upload the new version.
    if s3.get_object(BUCKET, OBJECT).ok().flatten().is_none() {
        s3.create_bucket(BUCKET).ok();
    }
    s3.put_object(BUCKET, OBJECT, &key_file(&both_keys()))
        .unwrap();
    // The retry timer recovers on its own, without another trigger.
    assert!(wait_until(
        Duration::from_secs(15),
        || daemon.status()["stale"] == false
    ));
    assert_eq!(daemon.verify(SECOND).status, 200);
    assert_eq!(daemon.status()["last_error"], serde_json::Value::Null);
}

#[test]
fn corrupt_truncated_or_wrongly_encrypted_objects_keep_the_set() {
    let s3 = s3_with(&first_key());
    let secret = StorageSecret::new(STORAGE_SECRET);
    // With a storage secret configured only encrypted objects load (encryption_integrity.rs).
    let first = encode_encrypted(&key_file(&first_key()), &secret);
    s3.put_object(BUCKET, OBJECT, &first).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_on(&s3, dir.path())
        .env("STORAGE_SECRET", STORAGE_SECRET)
        .start()
        .unwrap();
    let full = key_file(&both_keys());
    let other_secret = encode_encrypted(&full, &StorageSecret::new("some-other-secret"));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", full[..full.len() / 2].to_vec()),
        ("not json", b"<html>503 Service Unavailable</html>".to_vec()),
        ("other secret", other_secret),
        (
            "duplicate secret",
            encode_encrypted(
                &key_file(&[TestKey::new("a", FIRST), TestKey::new("b", FIRST)]),
                &secret,
            ),
        ),
    ];
    for (what, body) in bodies {
        s3.put_object(BUCKET, OBJECT, &body).unwrap();
        let refresh = daemon.refresh();
        assert_eq!(refresh.status, 500, "{what}: {}", refresh.body);
        assert_eq!(daemon.verify(FIRST).status, 200, "{what}: old set kept");
        assert_eq!(daemon.verify(SECOND).status, 403, "{what}");
        assert_eq!(daemon.status()["stale"], true, "{what}");
        assert!(!refresh.body.contains(FIRST) && !refresh.body.contains(STORAGE_SECRET));
    }
    let error = daemon.status()["last_error"].as_str().unwrap().to_string();
    assert!(error.contains("same secret"), "{error}");

    let encrypted = encode_encrypted(&full, &StorageSecret::new(STORAGE_SECRET));
    s3.put_object(BUCKET, OBJECT, &encrypted).unwrap();
    assert_eq!(daemon.refresh().status, 200);
    assert_eq!(
        daemon.verify(SECOND).status,
        200,
        "encrypted object with the right secret"
    );
    let log = daemon.log();
    assert!(!log.contains(STORAGE_SECRET) && !log.contains(&FIRST[5..]));
}

#[test]
fn encrypted_object_without_the_secret_fails_start_with_a_clear_message() {
    let s3 = s3_with(&[]);
    let encrypted = encode_encrypted(&key_file(&first_key()), &StorageSecret::new(STORAGE_SECRET));
    s3.put_object(BUCKET, OBJECT, &encrypted).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon_on(&s3, dir.path()).spawn();
    let status = daemon.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(1));
    assert!(
        daemon.log().contains("no STORAGE_SECRET is configured"),
        "{}",
        daemon.log()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon_on(&s3, dir.path())
        .env("STORAGE_SECRET", "wrong")
        .spawn();
    assert_eq!(
        daemon
            .wait_exit(Duration::from_secs(20))
            .and_then(|s| s.code()),
        Some(1)
    );
    assert!(daemon.log().contains("does not match"), "{}", daemon.log());
}

#[test]
fn start_with_s3_down_serves_the_cache_as_stale() {
    let mut s3 = s3_with(&both_keys());
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(daemon.stop().and_then(|s| s.code()), Some(0));
    s3.stop();

    let daemon: Daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(daemon.verify(SECOND).status, 200, "served from the cache");
    let status = daemon.status();
    assert_eq!(status["stale"], true);
    assert_eq!(status["source"], "cache");
    assert!(!daemon.wait_events("serving_stale_cache").is_empty());
}

#[test]
fn max_stale_bounds_how_long_a_cached_set_is_trusted() {
    let mut s3 = s3_with(&both_keys());
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon_on(&s3, dir.path()).start().unwrap();
    daemon.stop();
    s3.stop();
    let daemon = daemon_on(&s3, dir.path())
        .args(["--max-stale", "1s"])
        .start()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || daemon
        .verify(FIRST)
        .status
        == 503));
    assert_eq!(daemon.verify(FIRST).json()["valid"], false);
}

#[test]
fn start_with_s3_down_and_no_cache_exits_non_zero() {
    let mut s3 = s3_with(&first_key());
    s3.stop();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon_on(&s3, dir.path()).spawn();
    let status = daemon.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(status.code(), Some(1));
    let log = daemon.log();
    assert!(log.contains("cannot load keys from s3://"), "{log}");
    assert!(log.contains("last-known-good cache"), "{log}");
    assert!(!daemon.socket.exists(), "socket removed on a failed start");
}

#[test]
fn missing_object_means_no_keys_yet() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(daemon.status()["keys_loaded"], 0);
    assert_eq!(daemon.verify(FIRST).status, 403);
    s3.put_object(BUCKET, OBJECT, &key_file(&first_key()))
        .unwrap();
    assert_eq!(daemon.refresh().json()["keys_loaded"], 1);
    assert_eq!(daemon.verify(FIRST).status, 200);
}

/// The review's attack on a plain-http endpoint: whoever answers on an unprivileged loopback
/// port (here the test's own server, as a local user squatting the port would) serves the daemon
/// a key set of their own. Without a storage secret nothing can tell, so the daemon warns at start
/// (`store_endpoint_unprotected`, naming the endpoint); with one, the squatter's plain body is
/// refused and there is nothing to warn about.
#[test]
fn a_plain_http_endpoint_is_warned_about_unless_a_storage_secret_protects_the_set() {
    let squatter = s3_with(&[TestKey::new("key_squatters_own", FIRST)]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_on(&squatter, dir.path()).start().unwrap();
    assert_eq!(daemon.verify(FIRST).json()["key_id"], "key_squatters_own");
    let warned = daemon.wait_events("store_endpoint_unprotected");
    assert_eq!(warned.len(), 1, "{}", daemon.log());
    let endpoint = warned[0]["endpoint"].as_str().unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "{endpoint}"
    );
    assert!(
        warned[0]["why"]
            .as_str()
            .unwrap_or_default()
            .contains("loopback")
    );

    // The same endpoint spelled in capitals through the S3-only variable, and given only by a
    // profile's endpoint_url in the AWS config file: both found (the review's spellings).
    let endpoint = squatter.endpoint();
    let profile = tempfile::tempdir().unwrap();
    let config_file = profile.path().join("config");
    std::fs::write(
        &config_file,
        format!("[default]\nendpoint_url = {endpoint}\n"),
    )
    .unwrap();
    let without_endpoint: Vec<(String, String)> = squatter
        .env_for_client()
        .into_iter()
        .filter(|(name, _)| name != "AWS_ENDPOINT_URL")
        .collect();
    let upper = endpoint.replacen("http://", "HTTP://", 1);
    for (variable, value) in [
        ("AWS_ENDPOINT_URL_S3", upper),
        ("AWS_CONFIG_FILE", config_file.display().to_string()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let daemon = DaemonBuilder::new(dir.path())
            .args([
                "--store",
                &format!("s3://{BUCKET}/{OBJECT}"),
                "--s3-path-style",
            ])
            .config("[s3]\ntimeout = \"2s\"\n")
            .envs(without_endpoint.clone())
            .env(variable, value)
            .start()
            .unwrap();
        assert_eq!(daemon.verify(FIRST).json()["key_id"], "key_squatters_own");
        let warned = daemon.wait_events("store_endpoint_unprotected");
        assert_eq!(warned.len(), 1, "{variable}: {}", daemon.log());
    }

    let dir = tempfile::tempdir().unwrap();
    let mut protected = daemon_on(&squatter, dir.path())
        .env("STORAGE_SECRET", STORAGE_SECRET)
        .spawn();
    let status = protected.wait_exit(Duration::from_secs(20)).expect("exits");
    assert_eq!(status.code(), Some(1), "the plain body is refused");
    assert!(!protected.log().contains("store_endpoint_unprotected"));
}
