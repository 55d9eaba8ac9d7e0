//! When the real daemon asks S3 (issue 16): polls spread over `refresh_interval` ±
//! `refresh_jitter`, the first poll after start at a random offset within one interval (daemons
//! started together do not poll together), and a failing store retried after exponential
//! backoff with full jitter. Timed from the daemon's own log lines (their timestamps), against
//! the in-process S3 server behind the fault proxy.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::fault_proxy::{Fault, FaultProxy};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use nix::sys::signal::Signal;
use std::path::Path;
use std::time::Duration;

const BUCKET: &str = "heare-auth-schedule";
const OBJECT: &str = "keys.json";
const SECRET: &str = "sec_0ScheduleSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn s3() -> S3Server {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &key_file(&[TestKey::new("k", SECRET)]))
        .unwrap();
    s3
}

fn daemon(s3: &S3Server, dir: &Path, config: &str) -> DaemonBuilder {
    s3.daemon(dir, BUCKET, OBJECT)
        .args(["--log-level", "debug", "--usage-path", "none"])
        .config(&format!("{config}\n[s3]\ntimeout = \"2s\"\n"))
}

/// Seconds since the epoch of each log line with `event` (and `trigger`, when given).
fn times(daemon: &Daemon, event: &str, trigger: Option<&str>) -> Vec<f64> {
    daemon
        .events(event)
        .iter()
        .filter(|line| trigger.is_none_or(|t| line["trigger"] == t))
        .filter_map(|line| line["timestamp"].as_str().map(seconds))
        .collect()
}

/// A log line's RFC 3339 timestamp as Unix seconds (millisecond precision).
fn seconds(stamp: &str) -> f64 {
    heare_auth_store::timestamp::parse(stamp).map_or(f64::NAN, |ms| ms as f64 / 1000.0)
}

fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

fn spread(values: &[f64]) -> f64 {
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    let min = values.iter().cloned().fold(f64::MAX, f64::min);
    max - min
}

/// The gaps between the polls of a daemon polling every second with `jitter`.
fn poll_gaps(s3: &S3Server, jitter: &str) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("refresh_interval = \"1s\"\nrefresh_jitter = \"{jitter}\"");
    let daemon = daemon(s3, dir.path(), &config).start().unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        times(&daemon, "refresh_unchanged", Some("poll")).len() >= 9
    }));
    gaps(&times(&daemon, "refresh_unchanged", Some("poll")))
}

#[test]
fn polls_spread_over_the_jitter_and_not_without_it() {
    let s3 = s3();
    let steady = poll_gaps(&s3, "0%");
    assert!(
        steady.iter().all(|g| (0.9..1.2).contains(g)),
        "without jitter every wait is the interval: {steady:?}"
    );
    let jittered = poll_gaps(&s3, "50%");
    assert!(
        jittered.iter().all(|g| (0.45..1.7).contains(g)),
        "each wait within 1 s ± 50%: {jittered:?}"
    );
    assert!(
        spread(&jittered) > 0.3,
        "waits drawn over the range, not one value: {jittered:?}"
    );
}

#[test]
fn daemons_started_together_first_poll_at_different_moments() {
    let s3 = s3();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = "refresh_interval = \"4s\"\nrefresh_jitter = \"0%\"";
    let daemons: Vec<Daemon> = dirs
        .iter()
        .map(|dir| daemon(&s3, dir.path(), config).spawn())
        .collect();
    let mut offsets = Vec::new();
    for daemon in &daemons {
        assert!(wait_until(Duration::from_secs(15), || {
            !times(daemon, "refresh_unchanged", Some("poll")).is_empty()
        }));
        let ready = times(daemon, "ready", None)[0];
        let first = times(daemon, "refresh_unchanged", Some("poll"))[0];
        offsets.push(first - ready);
    }
    assert!(
        offsets.iter().all(|o| (-0.1..4.2).contains(o)),
        "the first poll within one interval of the start: {offsets:?}"
    );
    assert!(
        spread(&offsets) > 0.3,
        "not in lockstep (a fixed first wait would put them all at 4 s): {offsets:?}"
    );
}

#[test]
fn a_failing_store_is_retried_with_growing_jittered_waits_then_recovers() {
    let s3 = s3();
    let proxy = FaultProxy::start(&s3.endpoint()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = s3
        .daemon(dir.path(), BUCKET, OBJECT)
        .args(["--s3-endpoint", &proxy.endpoint(), "--usage-path", "none"])
        .args(["--log-level", "debug"])
        .start()
        .unwrap();
    proxy.set(Fault::Status(503));
    daemon.signal(Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(30), || {
        times(&daemon, "refresh_failed", Some("retry")).len() >= 4
    }));
    let failed = times(&daemon, "refresh_failed", None);
    // The n-th retry comes within [0, 2^(n-1) s) of the failure before it (plus the time the
    // failing call itself takes: two attempts 200 ms apart).
    for (n, gap) in gaps(&failed).iter().enumerate().take(4) {
        let window = f64::from(1u32 << n);
        assert!(
            *gap < window + 0.6,
            "retry {}: {gap} s (window {window} s)",
            n + 1
        );
    }
    proxy.set(Fault::Pass);
    assert!(wait_until(
        Duration::from_secs(40),
        || daemon.status()["stale"] == false
    ));
    assert!(
        wait_until(Duration::from_secs(5), || !times(
            &daemon,
            "refresh_unchanged",
            Some("retry")
        )
        .is_empty()),
        "a retry brought it back"
    );
}
