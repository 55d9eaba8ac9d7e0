//! `watch_store` against the real daemon (issue 24): a file store is watched by default, so a
//! write the daemon is not told of — heare-authctl with `--no-reload`, a file replaced by rename
//! or rewritten in place, a file deleted and recreated — is served within seconds, counted as a
//! reload with trigger `watch`; an unchanged file asks for nothing; a link put in place of the
//! key file is not followed; `--watch-store false` turns it off (and an explicit reload still
//! works). The issue's own case: the first key written by ctl on a fresh host, whose question to
//! the socket starts the daemon by socket activation (`systemd-socket-activate`) just before
//! the write, is served.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::Request;
use heare_auth_tests::http::send;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::process::Group;
use heare_auth_tests::wait_until;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const FIRST: &str = "sec_0StoreWatchFirstAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const SECOND: &str = "sec_0StoreWatchSecondBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const THIRD: &str = "sec_0StoreWatchThirdCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";

/// How long a write may take to be served: the watcher looks every second.
const SERVED_WITHIN: Duration = Duration::from_secs(5);

fn store(dir: &Path) -> PathBuf {
    dir.join("keys.json")
}

/// A daemon on `dir/keys.json` holding `keys`, with `extra` flags, and ctl on the same store.
fn start(dir: &Path, keys: &[TestKey], extra: &[&str]) -> (Daemon, Ctl) {
    std::fs::write(store(dir), key_file(keys)).unwrap();
    let url = format!("file://{}", store(dir).display());
    let daemon = DaemonBuilder::new(dir)
        .args(["--store", &url])
        .args(extra.iter().copied())
        .start()
        .unwrap();
    let ctl = Ctl::new(dir, &url, &daemon.socket);
    (daemon, ctl)
}

/// Writes `keys` beside the key file and renames it over the key file, as an editor does.
fn replace_by_rename(dir: &Path, keys: &[TestKey]) {
    let next = dir.join("keys.json.new");
    std::fs::write(&next, key_file(keys)).unwrap();
    std::fs::rename(&next, store(dir)).unwrap();
}

fn served(daemon: &Daemon, secret: &str) -> bool {
    daemon.verify(secret).status == 200
}

fn served_soon(daemon: &Daemon, secret: &str) -> bool {
    wait_until(SERVED_WITHIN, || served(daemon, secret))
}

/// `heare_auth_reloads_total{trigger="watch",result=…}`, every result added up.
fn watch_reloads(daemon: &Daemon) -> f64 {
    let metrics = daemon.request(&Request::new("GET", "/metrics")).unwrap();
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    metrics
        .body
        .lines()
        .filter(|line| line.starts_with("heare_auth_reloads_total{trigger=\"watch\","))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The sample `series` (name and labels as written) of `/metrics`; 0 when absent.
fn sample(daemon: &Daemon, series: &str) -> f64 {
    let metrics = daemon.request(&Request::new("GET", "/metrics")).unwrap();
    metrics
        .body
        .lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// The `refresh_success` log lines of reloads the watcher asked for.
fn watch_successes(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .events("refresh_success")
        .into_iter()
        .filter(|line| line["trigger"] == "watch")
        .collect()
}

fn assert_no_panic(daemon: &Daemon) {
    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_key_written_with_no_reload_is_served_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = start(dir.path(), &[], &[]);
    let (id, secret) = ctl.create(&["--name", "unannounced", "--no-reload"]);
    assert!(
        served_soon(&daemon, &secret),
        "the watcher did not reload; log:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.verify(&secret).json()["key_id"], id.as_str());
    let success = r#"heare_auth_reloads_total{trigger="watch",result="success"}"#;
    assert!(sample(&daemon, success) >= 1.0, "{}", daemon.log());
    assert!(
        wait_until(SERVED_WITHIN, || watch_successes(&daemon)
            .iter()
            .any(|line| line["keys_loaded"] == 1)),
        "{}",
        daemon.log()
    );
    let check = std::process::Command::new(heare_auth_tests::daemon::binary("heare-authd"))
        .arg("--config")
        .arg(dir.path().join("heare-authd.toml"))
        .arg("--check-config")
        .args(["--store", &ctl.store])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(said.lines().any(|l| l == "watch_store = true"), "{said}");
}

#[test]
fn with_watch_store_false_a_write_waits_for_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = start(dir.path(), &[], &["--watch-store", "false"]);
    let (_, secret) = ctl.create(&["--name", "unannounced", "--no-reload"]);
    assert!(
        !wait_until(Duration::from_secs(3), || served(&daemon, &secret)),
        "served with the watcher off"
    );
    assert_eq!(watch_reloads(&daemon), 0.0);
    assert!(ctl.ok(&["reload"]).contains("1 keys"));
    assert!(served(&daemon, &secret));
    assert!(watch_successes(&daemon).is_empty(), "{}", daemon.log());
}

#[test]
fn a_file_replaced_by_rename_or_rewritten_in_place_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestKey::new("key_watch_first", FIRST);
    let (daemon, _ctl) = start(dir.path(), std::slice::from_ref(&first), &[]);
    assert!(served(&daemon, FIRST));

    // An editor's save: a new file renamed over the old one.
    let second = TestKey::new("key_watch_second", SECOND);
    replace_by_rename(dir.path(), &[first.clone(), second]);
    assert!(served_soon(&daemon, SECOND), "{}", daemon.log());
    assert!(served(&daemon, FIRST));

    // A rewrite in place (same inode): the first key revoked, a third added.
    std::fs::write(
        store(dir.path()),
        key_file(&[TestKey::new("key_watch_third", THIRD)]),
    )
    .unwrap();
    assert!(served_soon(&daemon, THIRD), "{}", daemon.log());
    assert!(!served(&daemon, FIRST), "the revoked key is refused");
    assert_no_panic(&daemon);
}

#[test]
fn a_deleted_then_recreated_file_is_served_and_an_unchanged_one_asks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _ctl) = start(dir.path(), &[TestKey::new("key_watch_first", FIRST)], &[]);
    // The first look asks for one reload (a write between the first load and the watcher's
    // start must not be missed); the file is unchanged, so that is all.
    assert!(
        wait_until(SERVED_WITHIN, || watch_reloads(&daemon) >= 1.0),
        "{}",
        daemon.log()
    );
    let first_look = watch_reloads(&daemon);
    assert!(
        !wait_until(Duration::from_secs(3), || watch_reloads(&daemon)
            != first_look),
        "an unchanged file was reloaded: {}",
        watch_reloads(&daemon)
    );
    assert!(served(&daemon, FIRST));

    // Deleted: a missing file means no keys, as for any reload.
    std::fs::remove_file(store(dir.path())).unwrap();
    assert!(
        wait_until(SERVED_WITHIN, || !served(&daemon, FIRST)),
        "{}",
        daemon.log()
    );
    // Recreated: served again.
    std::fs::write(
        store(dir.path()),
        key_file(&[TestKey::new("key_watch_second", SECOND)]),
    )
    .unwrap();
    assert!(served_soon(&daemon, SECOND), "{}", daemon.log());
    assert_eq!(
        daemon
            .request(&Request::new("GET", "/health"))
            .unwrap()
            .status,
        200
    );
    assert_no_panic(&daemon);
}

/// Whoever can write the key file's directory puts a link to a file of their own in place of the
/// key file: the watcher sees the change, but the store opens the key file without following a
/// link, so the reload fails and the keys served stay the old ones.
#[test]
fn a_link_put_in_place_of_the_key_file_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _ctl) = start(dir.path(), &[TestKey::new("key_watch_first", FIRST)], &[]);
    let planted = dir.path().join("planted.json");
    std::fs::write(
        &planted,
        key_file(&[TestKey::new("key_watch_planted", SECOND)]),
    )
    .unwrap();
    let link = dir.path().join("keys.json.link");
    std::os::unix::fs::symlink(&planted, &link).unwrap();
    std::fs::rename(&link, store(dir.path())).unwrap();
    let failure = r#"heare_auth_reloads_total{trigger="watch",result="failure"}"#;
    assert!(
        wait_until(SERVED_WITHIN, || sample(&daemon, failure) >= 1.0),
        "{}",
        daemon.log()
    );
    assert!(!served(&daemon, SECOND), "the planted key is refused");
    assert!(served(&daemon, FIRST), "the keys loaded before stay");
    assert_eq!(daemon.status()["stale"], true);
    assert_no_panic(&daemon);
}

/// Right after the package's install: no key file, no daemon, only the socket (here
/// `systemd-socket-activate`'s). `create --no-reload` asks the socket which generation is served
/// before writing, which starts the daemon; the daemon creates an empty key file and loads it;
/// then ctl writes its key. The watcher serves it without any reload asked.
#[test]
fn the_first_key_on_a_fresh_host_is_served_though_its_question_started_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let url = format!("file://{}", store(&state).display());
    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let socket = dir.path().join("activated.sock");
    let log_path = dir.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // Its own process group: stopped (with the daemon it became) even when an assertion fails.
    let mut activator = Group::spawn(
        Command::new("systemd-socket-activate")
            .arg("--listen")
            .arg(&socket)
            .arg(heare_auth_tests::daemon::binary("heare-authd"))
            .arg("--config")
            .arg(dir.path().join("empty.toml"))
            .args(["--store", &url])
            .arg("--socket")
            .arg(dir.path().join("unused.sock"))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .expect("systemd-socket-activate (package systemd; tests/run installs it)");
    assert!(wait_until(Duration::from_secs(10), || socket.exists()));
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Nothing has started the daemon yet (systemd-socket-activate says it listens, no more).
    assert!(!store(&state).exists() && !read_log().contains("\"event\""));

    let ctl = Ctl::new(dir.path(), &url, &socket);
    let (_, secret) = ctl.create(&["--name", "fresh", "--no-reload"]);
    assert!(
        read_log().contains("created_empty_key_file"),
        "ctl's question started the daemon, which made the key file: {}",
        read_log()
    );
    let served = || send(&socket, &Request::verify(&secret)).is_ok_and(|r| r.status == 200);
    assert!(
        wait_until(SERVED_WITHIN, served),
        "the first key was not served: {}",
        read_log()
    );
    // The log is written by a background thread: the line can land just after the answer.
    let watched = || {
        read_log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .any(|line| {
                line["event"] == "refresh_success"
                    && line["trigger"] == "watch"
                    && line["keys_loaded"] == 1
            })
    };
    assert!(
        wait_until(Duration::from_secs(10), watched),
        "{}",
        read_log()
    );
    activator.stop().unwrap();
}

/// With `max_stale`, a file store (not polled by default) is confirmed by the watcher while it is
/// unchanged, so a broken save after a quiet spell longer than `max_stale` keeps the set in force
/// served (stale) instead of refusing every verify at once; without the watcher the same break
/// refuses at once, which is what the confirmation prevents.
#[test]
fn an_unchanged_file_is_confirmed_so_a_broken_save_does_not_refuse_everyone_at_once() {
    for (watching, served_after_break) in [(true, true), (false, false)] {
        let dir = tempfile::tempdir().unwrap();
        let flag = if watching { "true" } else { "false" };
        let (daemon, _ctl) = start(
            dir.path(),
            &[TestKey::new("key_first", FIRST)],
            &["--max-stale", "4s", "--watch-store", flag],
        );
        assert!(served(&daemon, FIRST));
        std::thread::sleep(Duration::from_secs(6));
        std::fs::write(store(dir.path()), b"{ \"keys\": [ not json").unwrap();
        assert_eq!(
            daemon.refresh().status,
            500,
            "the broken file does not load"
        );
        assert_eq!(
            served(&daemon, FIRST),
            served_after_break,
            "watching {watching}: {}",
            daemon.log()
        );
        assert_eq!(daemon.status()["stale"], true);
    }
}
