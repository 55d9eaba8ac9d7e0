//! S3 faults between the daemon and a real S3 server, injected by the test suite's own proxy
//! (`fault_proxy`): errors, slowness past the daemon's S3 timeout, cut connections, truncated and
//! stalled bodies, bad bodies, a store that is down or hanging at start, and a cache directory
//! that is full or read-only. After each fault the daemon keeps verifying with the previous set,
//! `/status` names what failed, and the next good load recovers.

use heare_auth_store::codec::{StorageSecret, encode_encrypted};
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::fault_proxy::{Fault, FaultProxy};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BUCKET: &str = "heare-auth-faults";
const OBJECT: &str = "keys.json";
const FIRST: &str = "sec_0FirstFaultSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const SECOND: &str = "sec_0SecondFaultSecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const STORAGE_SECRET: &str = "storage-secret-of-the-fault-tests";
/// The daemon's S3 timeout in these tests (`[s3] timeout`), short so faults resolve quickly.
const S3_TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of the S3 timeout before a load that has not ended counts as hanging: process
/// scheduling on a busy 2-core machine, and the answer's way back over the socket.
const HANG_SLACK: Duration = Duration::from_secs(3);

fn first_key() -> Vec<TestKey> {
    vec![TestKey::new("key_first", FIRST)]
}

fn both_keys() -> Vec<TestKey> {
    vec![
        TestKey::new("key_first", FIRST),
        TestKey::new("key_second", SECOND).hashed(),
    ]
}

/// A real S3 server holding `keys`, and a fault proxy in front of it.
fn s3_behind_proxy(keys: &[TestKey]) -> (S3Server, FaultProxy) {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &key_file(keys)).unwrap();
    let proxy = FaultProxy::start(&s3.endpoint()).unwrap();
    (s3, proxy)
}

/// A daemon reading S3 through `proxy`, with its cache at `cache` and a 1 s S3 timeout.
fn daemon_via(s3: &S3Server, proxy: &FaultProxy, dir: &Path, cache: &Path) -> DaemonBuilder {
    DaemonBuilder::new(dir)
        .args([
            "--store",
            &format!("s3://{BUCKET}/{OBJECT}"),
            "--s3-path-style",
            "--s3-endpoint",
            &proxy.endpoint(),
        ])
        .arg("--cache")
        .arg(cache.display().to_string())
        .config(&format!(
            "[s3]\ntimeout = \"{}ms\"\n",
            S3_TIMEOUT.as_millis()
        ))
        .envs(s3.env_for_client())
}

/// `POST /refresh`, and how long it took.
fn timed_refresh(daemon: &Daemon) -> (heare_auth_tests::http::Response, Duration) {
    let started = Instant::now();
    let answer = daemon.refresh();
    (answer, started.elapsed())
}

/// Injects `fault`, checks that a reload fails without touching the served set and that `/status`
/// names the failure (its `last_error` contains every one of `error_words`, case-insensitively),
/// then lifts the fault and checks that the next reload recovers.
fn fault_keeps_the_set_then_recovers(fault: Fault, error_words: &[&str]) {
    let (s3, proxy) = s3_behind_proxy(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_via(&s3, &proxy, dir.path(), &dir.path().join("keys.cache"))
        .start()
        .unwrap();
    assert_eq!(daemon.verify(FIRST).status, 200);
    // The object changes while the fault is on: a load that got through would serve SECOND.
    s3.put_object(BUCKET, OBJECT, &key_file(&both_keys()))
        .unwrap();
    let seen = proxy.requests();
    proxy.set(fault);

    let (refresh, took) = timed_refresh(&daemon);
    println!(
        "{fault:?}: refresh answered {} in {took:?}: {}",
        refresh.status, refresh.body
    );
    assert_eq!(refresh.status, 500, "{fault:?}: {}", refresh.body);
    assert_eq!(refresh.json()["success"], false);
    assert_eq!(
        refresh.json()["keys_loaded"],
        1,
        "{fault:?}: previous set kept"
    );
    assert!(
        took < S3_TIMEOUT + HANG_SLACK,
        "{fault:?}: the reload took {took:?}, past the S3 timeout of {S3_TIMEOUT:?}"
    );
    assert!(
        proxy.requests() > seen,
        "{fault:?}: the fault was on the path"
    );
    assert_eq!(
        daemon.verify(FIRST).status,
        200,
        "{fault:?}: old set served"
    );
    assert_eq!(
        daemon.verify(SECOND).status,
        403,
        "{fault:?}: new set not half-loaded"
    );

    let status = daemon.status();
    assert_eq!(status["stale"], true, "{fault:?}: {status}");
    assert_eq!(status["keys_loaded"], 1);
    let error = status["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        error.contains(&format!("s3://{BUCKET}/{OBJECT}")),
        "{fault:?}: /status names the store: {error}"
    );
    for word in error_words {
        assert!(
            error.contains(&word.to_lowercase()),
            "{fault:?}: /status last_error should mention {word:?}: {error}"
        );
    }
    assert_eq!(
        refresh.json()["error"].as_str().map(str::to_lowercase),
        Some(error.clone()),
        "{fault:?}: /refresh and /status report the same error"
    );
    assert!(!daemon.wait_events("refresh_failed").is_empty());

    proxy.set(Fault::Pass);
    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 200, "{fault:?}: recovers: {}", refresh.body);
    assert_eq!(refresh.json()["keys_loaded"], 2);
    assert_eq!(daemon.verify(SECOND).json()["key_id"], "key_second");
    let status = daemon.status();
    assert_eq!(status["stale"], false, "{status}");
    assert_eq!(status["last_error"], serde_json::Value::Null, "{status}");
    assert_eq!(status["source"], "store");
}

#[test]
fn s3_answering_500_keeps_the_set_then_recovers() {
    fault_keeps_the_set_then_recovers(Fault::Status(500), &["500", "InternalError"]);
}

#[test]
fn s3_answering_503_keeps_the_set_then_recovers() {
    fault_keeps_the_set_then_recovers(Fault::Status(503), &["503", "SlowDown"]);
}

#[test]
fn s3_slower_than_the_timeout_fails_the_load_in_time_then_recovers() {
    fault_keeps_the_set_then_recovers(Fault::Delay(Duration::from_secs(5)), &["timeout"]);
}

#[test]
fn cut_connection_keeps_the_set_then_recovers() {
    fault_keeps_the_set_then_recovers(Fault::Cut, &["connection"]);
}

#[test]
fn body_cut_off_in_transit_keeps_the_set_then_recovers() {
    fault_keeps_the_set_then_recovers(Fault::Truncate(40), &["cut off"]);
}

#[test]
fn body_stalling_in_transit_fails_the_load_in_time_then_recovers() {
    fault_keeps_the_set_then_recovers(Fault::Stall(40), &["timeout"]);
}

#[test]
fn s3_stopped_is_named_in_status_then_recovers() {
    // No proxy: the daemon talks to S3 directly, and S3's port stops listening.
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &key_file(&first_key()))
        .unwrap();
    let mut s3 = s3;
    let dir = tempfile::tempdir().unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .args([
            "--store",
            &format!("s3://{BUCKET}/{OBJECT}"),
            "--s3-path-style",
        ])
        .args(["--cache", "none"])
        .config("[s3]\ntimeout = \"1s\"\n")
        .envs(s3.env_for_client())
        .start()
        .unwrap();
    s3.stop();
    let (refresh, took) = timed_refresh(&daemon);
    println!(
        "S3 stopped: refresh answered {} in {took:?}: {}",
        refresh.status, refresh.body
    );
    assert_eq!(refresh.status, 500);
    assert!(took < S3_TIMEOUT + HANG_SLACK, "took {took:?}");
    assert_eq!(daemon.verify(FIRST).status, 200);
    let error = daemon.status()["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("cannot reach S3") && error.contains("Connection refused"),
        "{error}"
    );

    s3.restart().unwrap();
    // moto loses its data on restart; s3s keeps it.
    s3.create_bucket(BUCKET).ok();
    s3.put_object(BUCKET, OBJECT, &key_file(&both_keys()))
        .unwrap();
    assert_eq!(daemon.refresh().status, 200);
    assert_eq!(daemon.verify(SECOND).status, 200);
    assert_eq!(daemon.status()["last_error"], serde_json::Value::Null);
}

#[test]
fn bad_bodies_are_named_in_status_and_the_next_good_one_recovers() {
    let (s3, proxy) = s3_behind_proxy(&first_key());
    // With a storage secret configured only encrypted bodies load: each bad body is encrypted
    // with it, so that what is wrong with it is the one thing named.
    let secret = StorageSecret::new(STORAGE_SECRET);
    let encrypted = |json: &[u8]| encode_encrypted(json, &secret);
    s3.put_object(BUCKET, OBJECT, &encrypted(&key_file(&first_key())))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_via(&s3, &proxy, dir.path(), &dir.path().join("keys.cache"))
        .env("STORAGE_SECRET", STORAGE_SECRET)
        .start()
        .unwrap();
    let good = key_file(&both_keys());
    let bodies: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "truncated object",
            encrypted(&good[..good.len() / 2]),
            &["json"],
        ),
        (
            "not JSON",
            encrypted(b"<html>503 Service Unavailable</html>"),
            &["json"],
        ),
        (
            "encrypted with another secret",
            encode_encrypted(&good, &StorageSecret::new("another-storage-secret")),
            &["could not be decrypted", "storage_secret does not match"],
        ),
        (
            "duplicate secret",
            encrypted(&key_file(&[
                TestKey::new("key_a", FIRST),
                TestKey::new("key_b", FIRST).hashed(),
            ])),
            &["same secret"],
        ),
        (
            "duplicate id",
            encrypted(&key_file(&[
                TestKey::new("key_a", FIRST),
                TestKey::new("key_a", SECOND),
            ])),
            &["key_a", "ids must be unique"],
        ),
        (
            "plaintext while a storage secret is configured",
            good.clone(),
            &["not encrypted", "migrate --encrypt"],
        ),
    ];
    for (what, body, words) in bodies {
        s3.put_object(BUCKET, OBJECT, &body).unwrap();
        let refresh = daemon.refresh();
        println!("{what}: {}", refresh.body);
        assert_eq!(refresh.status, 500, "{what}: {}", refresh.body);
        assert_eq!(daemon.verify(FIRST).status, 200, "{what}: old set served");
        assert_eq!(daemon.verify(SECOND).status, 403, "{what}");
        let status = daemon.status();
        assert_eq!(status["stale"], true, "{what}");
        let error = status["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(
            error.starts_with(&format!("s3://{BUCKET}/{OBJECT} version \"")),
            "{what}: /status names the object and its version: {error}"
        );
        for word in words {
            assert!(
                error.contains(word),
                "{what}: /status should mention {word:?}: {error}"
            );
        }
        for secret in [FIRST, SECOND, STORAGE_SECRET, "another-storage-secret"] {
            assert!(
                !error.contains(&secret.to_lowercase()),
                "{what}: a secret in /status"
            );
        }

        // The next good object recovers, and the one after the fault is served.
        s3.put_object(BUCKET, OBJECT, &encrypted(&key_file(&first_key())))
            .unwrap();
        let refresh = daemon.refresh();
        assert_eq!(refresh.status, 200, "{what}: recovers: {}", refresh.body);
        let status = daemon.status();
        assert_eq!(status["stale"], false, "{what}: {status}");
        assert_eq!(status["last_error"], serde_json::Value::Null);
    }
    let log = daemon.log();
    assert!(!log.contains(STORAGE_SECRET) && !log.contains(&FIRST[5..]));
}

#[test]
fn start_with_s3_hanging_serves_the_cache_as_stale_then_recovers() {
    let (s3, proxy) = s3_behind_proxy(&both_keys());
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("keys.cache");
    let mut first = daemon_via(&s3, &proxy, dir.path(), &cache).start().unwrap();
    assert_eq!(first.stop().and_then(|s| s.code()), Some(0));
    assert_eq!(std::fs::read(&cache).unwrap(), key_file(&both_keys()));

    // While S3 hangs, the store moves on (SECOND revoked): the cache still has SECOND.
    s3.put_object(BUCKET, OBJECT, &key_file(&first_key()))
        .unwrap();
    proxy.set(Fault::Delay(Duration::from_secs(30)));
    let started = Instant::now();
    let daemon = daemon_via(&s3, &proxy, dir.path(), &cache).start().unwrap();
    let took = started.elapsed();
    println!("start with S3 hanging: serving the cache after {took:?}");
    assert!(
        took < S3_TIMEOUT + HANG_SLACK,
        "start took {took:?} with a {S3_TIMEOUT:?} S3 timeout"
    );
    assert_eq!(daemon.verify(SECOND).status, 200, "served from the cache");
    let status = daemon.status();
    assert_eq!(status["source"], "cache", "{status}");
    assert_eq!(status["stale"], true, "{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("timeout of 1s"), "{error}");
    assert!(!daemon.wait_events("serving_stale_cache").is_empty());

    // S3 answers again: the retry timer loads the store's version by itself.
    proxy.set(Fault::Pass);
    assert!(
        wait_until(Duration::from_secs(20), || daemon.status()["stale"]
            == false),
        "recovered: {}",
        daemon.status()
    );
    assert_eq!(daemon.status()["source"], "store");
    assert_eq!(daemon.verify(SECOND).status, 403, "the store's version now");
    assert_eq!(daemon.verify(FIRST).status, 200);
}

#[test]
fn start_with_s3_failing_and_no_cache_exits_1_naming_both_causes() {
    for (fault, cause) in [
        (Fault::Status(503), "S3 answered HTTP 503 SlowDown"),
        (Fault::Delay(Duration::from_secs(30)), "timeout of 1s"),
    ] {
        let (s3, proxy) = s3_behind_proxy(&first_key());
        proxy.set(fault);
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let mut daemon =
            daemon_via(&s3, &proxy, dir.path(), &dir.path().join("keys.cache")).spawn();
        let status = daemon.wait_exit(Duration::from_secs(30)).expect("exits");
        let took = started.elapsed();
        println!("{fault:?}, no cache: exited with {status} after {took:?}");
        assert_eq!(status.code(), Some(1), "{fault:?}");
        assert!(
            took < S3_TIMEOUT + HANG_SLACK,
            "{fault:?}: exit took {took:?}"
        );
        let log = daemon.log();
        assert!(
            log.contains(&format!("cannot load keys from s3://{BUCKET}/{OBJECT}")),
            "{log}"
        );
        assert!(log.contains(cause), "{fault:?}: {log}");
        assert!(log.contains("last-known-good cache"), "{log}");
        assert!(!daemon.socket.exists(), "socket removed on a failed start");
    }
}

/// A filesystem mounted for one test (tmpfs, or a read-only bind mount), lazily unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// Mounts with `mount ARGS… PATH`, or says why it cannot (not root, no mount privilege).
    fn new(path: &Path, args: &[&str]) -> Result<Mount, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Mount(path.to_path_buf()))
    }

    fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        Mount::new(
            path,
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ],
        )
    }

    fn read_only(path: &Path) -> Result<Mount, String> {
        let bound = Mount::new(path, &["--bind", &path.display().to_string()])?;
        let remount = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !remount.status.success() {
            return Err(format!(
                "remount read-only failed: {}",
                String::from_utf8_lossy(&remount.stderr).trim()
            ));
        }
        Ok(bound)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while file.write_all(&block).is_ok() {}
    // Pages may still be free below a whole block: top up byte by byte.
    while file.write_all(&[0]).is_ok() {}
    path
}

/// Checks that a daemon whose cache cannot be written keeps serving across `reloads` refreshes,
/// logs `cache_write_failed` exactly once per successful load, and shows the failure, with
/// `cause` in it, as `/status` `cache_error`: `failed_at_start` says whether the load at start
/// failed to write it too.
fn unwritable_cache_keeps_serving(
    daemon: &Daemon,
    s3: &S3Server,
    reloads: usize,
    failed_at_start: bool,
    cause: &str,
) {
    for round in 0..reloads {
        let keys = if round % 2 == 0 {
            both_keys()
        } else {
            first_key()
        };
        s3.put_object(BUCKET, OBJECT, &key_file(&keys)).unwrap();
        let refresh = daemon.refresh();
        assert_eq!(refresh.status, 200, "round {round}: {}", refresh.body);
        let second = if round % 2 == 0 { 200 } else { 403 };
        assert_eq!(daemon.verify(SECOND).status, second, "round {round}");
        assert_eq!(daemon.verify(FIRST).status, 200, "round {round}");
    }
    let loads = usize::from(failed_at_start) + reloads;
    assert!(wait_until(Duration::from_secs(10), || daemon
        .events("cache_write_failed")
        .len()
        >= loads));
    // Give a duplicate line the time to show up before counting.
    std::thread::sleep(Duration::from_millis(300));
    let failures = daemon.events("cache_write_failed");
    assert_eq!(failures.len(), loads, "one line per load: {failures:?}");
    assert_eq!(daemon.events("refresh_success").len(), reloads);
    println!("cache_write_failed: {}", failures[0]);
    let status = daemon.status();
    assert_eq!(
        status["stale"], false,
        "a cache failure is not a load failure"
    );
    assert_eq!(status["last_error"], serde_json::Value::Null);
    let cache_error = status["cache_error"].as_str().unwrap_or_default();
    assert!(
        cache_error.contains("cannot write the cache") && cache_error.contains(cause),
        "{status}"
    );
    assert_eq!(
        daemon
            .request(&heare_auth_tests::http::Request::new("GET", "/health"))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn full_disk_under_the_cache_keeps_serving_and_logs_once_per_reload() {
    let (s3, proxy) = s3_behind_proxy(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let _mount = match Mount::tmpfs(&cache_dir, "64k") {
        Ok(mount) => mount,
        Err(reason) => {
            heare_auth_tests::skipped!("cannot mount a small tmpfs: {reason}");
            return;
        }
    };
    let cache = cache_dir.join("keys.cache");
    let mut daemon = daemon_via(&s3, &proxy, dir.path(), &cache).start().unwrap();
    assert_eq!(std::fs::read(&cache).unwrap(), key_file(&first_key()));
    // The disk fills up after the first good cache was written.
    assert_eq!(daemon.status()["cache_error"], serde_json::Value::Null);
    let filler = fill(&cache_dir);
    unwritable_cache_keeps_serving(&daemon, &s3, 3, false, "No space left");
    assert_eq!(
        std::fs::read(&cache).unwrap(),
        key_file(&first_key()),
        "the last good cache is intact"
    );
    let failure = &daemon.events("cache_write_failed")[0];
    assert!(
        failure["error"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left"),
        "{failure}"
    );
    let mut left: Vec<_> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["filler", "keys.cache"],
        "no temporary file left on the full disk"
    );

    // Space comes back: the next load writes the cache again (SIGHUP: /refresh would only
    // confirm the unchanged object with a HEAD, which brings no body to write).
    std::fs::remove_file(&filler).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || daemon.status()["cache_error"]
            == serde_json::Value::Null),
        "a successful write clears the cache error"
    );
    let body = std::fs::read(&cache).unwrap();
    assert!(body == key_file(&both_keys()) || body == key_file(&first_key()));
    assert_eq!(
        daemon.stop().and_then(|s| s.code()),
        Some(0),
        "never crashed"
    );
}

#[test]
fn read_only_cache_directory_keeps_serving_and_logs_once_per_reload() {
    let (s3, proxy) = s3_behind_proxy(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let _mount = match Mount::read_only(&cache_dir) {
        Ok(mount) => mount,
        Err(reason) => {
            heare_auth_tests::skipped!("cannot bind-mount a read-only directory: {reason}");
            return;
        }
    };
    let mut daemon = daemon_via(&s3, &proxy, dir.path(), &cache_dir.join("keys.cache"))
        .start()
        .unwrap();
    assert!(
        daemon.status()["cache_error"]
            .as_str()
            .is_some_and(|error| error.contains("Read-only file system")),
        "the write at start failed too"
    );
    unwritable_cache_keeps_serving(&daemon, &s3, 3, true, "Read-only file system");
    // The operator's view: `heare-authctl status` names the failure.
    let ctl =
        heare_auth_tests::ctl::Ctl::new(dir.path(), "file:///unused/keys.json", &daemon.socket);
    let shown = ctl.ok(&["status"]);
    assert!(
        shown
            .lines()
            .any(|line| line.trim_start().starts_with("cache error:")
                && line.contains("Read-only file system")),
        "{shown}"
    );
    let failure = &daemon.events("cache_write_failed")[0];
    assert!(
        failure["error"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only file system"),
        "{failure}"
    );
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 0);
    assert_eq!(
        daemon.stop().and_then(|s| s.code()),
        Some(0),
        "never crashed"
    );
}

/// The daemon's peak resident memory (VmHWM), in KiB.
fn peak_rss_kib(daemon: &Daemon) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[test]
fn an_answer_without_content_length_is_refused_at_max_store_bytes_without_buffering_it() {
    const LIMIT: u64 = 1 << 20;
    let (s3, proxy) = s3_behind_proxy(&first_key());
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon_via(&s3, &proxy, dir.path(), &dir.path().join("keys.cache"))
        .config(&format!(
            "max_store_bytes = {LIMIT}\n[s3]\ntimeout = \"20s\"\n"
        ))
        .start()
        .unwrap();
    assert_eq!(daemon.verify(FIRST).status, 200);
    // A valid key file of 48 MiB (padding in a metadata field), sent chunked: its size is only
    // known once it has been read, so the limit must be enforced while reading.
    let padding = "x".repeat(48 << 20);
    let big = format!(
        "{{\"keys\": [{{\"id\": \"key_big\", \"secret\": \"{SECOND}\", \"metadata\": {{\"pad\": \"{padding}\"}}}}]}}"
    );
    s3.put_object(BUCKET, OBJECT, big.as_bytes()).unwrap();
    drop((big, padding));
    proxy.set(Fault::Chunked);
    let before = peak_rss_kib(&daemon);

    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 500, "{}", refresh.body);
    let error = daemon.status()["last_error"].as_str().unwrap().to_string();
    assert!(error.contains("max_store_bytes"), "{error}");
    assert_eq!(daemon.verify(FIRST).status, 200, "the previous set is kept");
    assert_eq!(daemon.verify(SECOND).status, 403);
    let grew = peak_rss_kib(&daemon).saturating_sub(before);
    println!("peak RSS grew by {grew} KiB while refusing a 48 MiB chunked answer");
    assert!(
        grew < 16 << 10,
        "the answer was buffered: peak RSS grew by {grew} KiB for a {LIMIT}-byte limit"
    );

    // The same answer under the limit, chunked, still loads.
    s3.put_object(BUCKET, OBJECT, &key_file(&both_keys()))
        .unwrap();
    assert_eq!(daemon.refresh().status, 200);
    assert_eq!(daemon.verify(SECOND).status, 200);
}
