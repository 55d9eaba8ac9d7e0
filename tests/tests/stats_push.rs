//! The stats push against real parts: the real `heare-stats-server` (PyPI `heare-stats-client`,
//! installed by tests/run) receives the daemon's StatsD stream over UDP and forwards its batches
//! over HTTP to a test collector, whose counters must say exactly the verifies made; the HTTP
//! protocol (plain, and https on port 443) is checked for path, basic auth, body shape and names;
//! a collector that is down, refuses or never answers costs verification nothing and is counted.
//! The daemon reads the Python deployment's environment (`PROTOCOL`, `DEST_HOST`, `DEST_PORT`,
//! `SECRET`) or the `[stats]` table.

use base64::Engine;
use heare_auth_tests::collector::Collector;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::Request;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::process::Group;
use heare_auth_tests::{free_port, privileged_listener, wait_until};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const VALID: &str = "sec_0StatsPushValidSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const COLLECTOR_SECRET: &str = "collector-secret-Zq8vW3";

/// The daemon serving two keys (`VALID` and one other), with `env` and `config`.
fn daemon(dir: &Path, env: &[(&str, String)], config: &str) -> Daemon {
    let keys = [
        TestKey::new("key_stats_valid", VALID),
        TestKey::new("key_stats_other", &format!("sec_0{}", "O".repeat(59))),
    ];
    daemon_serving(dir, &key_file(&keys), env, config)
}

/// The daemon serving the key file `keys` from `dir`, with `env` and `config`.
fn daemon_serving(dir: &Path, keys: &[u8], env: &[(&str, String)], config: &str) -> Daemon {
    let store = dir.join("keys.json");
    std::fs::write(&store, keys).unwrap();
    let mut builder = DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .config(config);
    for (name, value) in env {
        builder = builder.env(*name, value.clone());
    }
    builder.start().unwrap()
}

fn python_env(protocol: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("PROTOCOL", protocol.to_string()),
        ("DEST_HOST", "127.0.0.1".to_string()),
        ("DEST_PORT", port.to_string()),
        ("SECRET", COLLECTOR_SECRET.to_string()),
    ]
}

const FAST_FLUSH: &str = "[stats]\nflush_interval = \"200ms\"\n";

fn verify_times(daemon: &Daemon, valid: usize, unknown: usize) {
    for _ in 0..valid {
        assert_eq!(daemon.verify(VALID).status, 200);
    }
    for _ in 0..unknown {
        assert_eq!(
            daemon.verify(&format!("sec_0{}", "U".repeat(59))).status,
            403
        );
    }
}

/// heare-stats-server, listening for StatsD on UDP `port`, forwarding to `collector` every 0.5 s,
/// returned once it has had the time to bind its UDP socket (a moment after it starts). Its
/// process group is stopped when dropped.
fn stats_server(port: u16, collector: &Collector) -> Group {
    let server = Group::spawn(
        Command::new("heare-stats-server")
            .arg("--listen_host=127.0.0.1")
            .arg(format!("--listen_port={port}"))
            .arg("--remote_host=127.0.0.1")
            .arg(format!("--remote_port={}", collector.port))
            .arg(format!("--secret={COLLECTOR_SECRET}"))
            .arg("--flush_interval=0.5")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("heare-stats-server (pip heare-stats-client; tests/run installs it)");
    std::thread::sleep(Duration::from_millis(1500));
    server
}

#[test]
fn heare_stats_server_forwards_exactly_the_verifies_made_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let statsd_port = free_port();
    let _server = stats_server(statsd_port, &collector);
    let daemon = daemon(dir.path(), &python_env("udp", statsd_port), FAST_FLUSH);
    verify_times(&daemon, 25, 4);
    let health = daemon.request(&Request::new("GET", "/health")).unwrap();
    assert_eq!(health.status, 200);

    let total = |name: &str| collector.counter_total(name);
    let arrived = wait_until(Duration::from_secs(20), || {
        total("heare-auth.verify.requests") >= 29.0 && total("heare-auth.health.requests") >= 1.0
    });
    assert!(arrived, "forwarded: {:?}", collector.received());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(total("heare-auth.verify.requests"), 29.0);
    assert_eq!(total("heare-auth.verify.success"), 25.0);
    assert_eq!(total("heare-auth.verify.failed"), 4.0);
    assert_eq!(total("heare-auth.startup.success"), 1.0);
    let received = collector.received();
    assert!(
        received
            .iter()
            .any(|r| r.body["gauges"]["heare-auth.keys.count"] == 2.0)
    );
    let timers: usize = received
        .iter()
        .filter_map(|r| r.body["timers"]["heare-auth.verify.duration"].as_array())
        .map(Vec::len)
        .sum();
    assert!((1..=29).contains(&timers), "{timers} timer values");
}

/// A key limited to 3 verifies an hour, verified 5 times: 3 answers 200 and 2 answer 429, and
/// heare-stats-server forwards `verify.rate_limited` = 2 beside `verify.success` = 3 and
/// `verify.failed` = 2 (the push counts every verify that was not valid as failed, rate-limited
/// ones included: `verify.failed` = `verify.requests` - `verify.success`).
#[test]
fn heare_stats_server_forwards_the_rate_limited_verifies_over_udp() {
    const LIMITED: &str = "sec_0StatsPushLimitedSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let statsd_port = free_port();
    let _server = stats_server(statsd_port, &collector);
    let keys = serde_json::json!({"keys": [
        {"id": "key_stats_limited", "secret": LIMITED, "rate_limit": {"requests": 3, "per": "1h"}},
    ]});
    let daemon = daemon_serving(
        dir.path(),
        &serde_json::to_vec_pretty(&keys).unwrap(),
        &python_env("udp", statsd_port),
        FAST_FLUSH,
    );
    let statuses: Vec<u16> = (0..5).map(|_| daemon.verify(LIMITED).status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    let total = |name: &str| collector.counter_total(name);
    let arrived = wait_until(Duration::from_secs(20), || {
        total("heare-auth.verify.requests") >= 5.0 && total("heare-auth.verify.rate_limited") >= 2.0
    });
    assert!(arrived, "forwarded: {:?}", collector.received());
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(total("heare-auth.verify.requests"), 5.0);
    assert_eq!(total("heare-auth.verify.success"), 3.0);
    assert_eq!(total("heare-auth.verify.rate_limited"), 2.0);
    assert_eq!(total("heare-auth.verify.failed"), 2.0);
    assert!(
        collector
            .received()
            .iter()
            .any(|r| r.body["gauges"]["heare-auth.keys.count"] == 1.0),
        "the limited key was served: {:?}",
        collector.received()
    );
}

#[test]
fn the_http_protocol_posts_the_python_body_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start_privileged();
    let mut daemon = daemon(dir.path(), &python_env("http", collector.port), FAST_FLUSH);
    verify_times(&daemon, 6, 1);
    let total = |name: &str| collector.counter_total(name);
    assert!(wait_until(Duration::from_secs(10), || total(
        "heare-auth.verify.requests"
    ) >= 7.0));
    let first = &collector.received()[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/http");
    assert_eq!(first.header("content-type"), Some("application/json"));
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{COLLECTOR_SECRET}:"));
    assert_eq!(
        first.header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    let groups: Vec<&String> = first.body.as_object().unwrap().keys().collect();
    assert!(
        groups
            .iter()
            .all(|g| ["counters", "gauges", "timers"].contains(&g.as_str())),
        "{groups:?}"
    );
    assert_eq!(first.body["counters"]["heare-auth.startup.success"], 1);
    assert!(first.body["timers"]["heare-auth.startup.duration"][0].is_number());
    assert_eq!(total("heare-auth.verify.success"), 6.0);
    assert_eq!(total("heare-auth.refresh.requests"), 0.0);

    assert_eq!(daemon.refresh().status, 200);
    assert!(wait_until(Duration::from_secs(10), || total(
        "heare-auth.refresh.success"
    ) >= 1.0));
    assert_eq!(total("heare-auth.refresh.requests"), 1.0);
    assert!(
        collector
            .received()
            .iter()
            .any(|r| r.body["timers"]["heare-auth.refresh.duration"].is_array())
    );

    daemon.stop();
    assert_eq!(total("heare-auth.shutdown"), 1.0, "a last flush at SIGTERM");
    assert!(
        !daemon.log().contains(COLLECTOR_SECRET),
        "the secret was logged"
    );
}

#[test]
fn https_on_port_443_with_the_table_and_a_prefix() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "binds port 443: run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (collector, cert) = Collector::start_tls(443);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert).unwrap();
    let config = format!(
        "[stats]\nprotocol = \"http\"\ndest_host = \"localhost\"\ndest_port = 443\nsecret = \"{COLLECTOR_SECRET}\"\nprefix = \"edge\"\nflush_interval = \"1s\"\n"
    );
    // A flush may take at most its interval: 1 s, not 200 ms, leaves room for the first TLS
    // handshake of a debug build on a loaded machine (a flush past it is dropped, counts and all).
    let daemon = daemon(
        dir.path(),
        &[("SSL_CERT_FILE", ca.display().to_string())],
        &config,
    );
    verify_times(&daemon, 3, 0);
    let arrived = wait_until(Duration::from_secs(10), || {
        collector.counter_total("edge.verify.success") >= 3.0
    });
    assert!(arrived, "{:?}\n{}", collector.received(), daemon.log());
    assert_eq!(collector.received()[0].path, "/http");
}

/// A collector that refuses, one that is not there, and one that never answers: verifies stay
/// fast, the failures are counted in /metrics and logged once, without the secret.
#[test]
fn a_collector_that_is_down_or_slow_never_slows_verification() {
    let dir = tempfile::tempdir().unwrap();
    let silent = privileged_listener();
    let silent_port = silent.local_addr().unwrap().port();
    let config = "[stats]\nflush_interval = \"100ms\"\n";
    let stalled = daemon(dir.path(), &python_env("http", silent_port), config);
    // Connections queue in the backlog and are never answered: every flush times out.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(2) {
        let one = Instant::now();
        assert_eq!(stalled.verify(VALID).status, 200);
        slowest = slowest.max(one.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a verify took {slowest:?}"
    );
    let failed = || {
        let text = stalled
            .request(&Request::new("GET", "/metrics"))
            .unwrap()
            .body;
        text.lines()
            .find_map(|l| l.strip_prefix("heare_auth_stats_flushes_failed_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || failed() >= 3.0),
        "{}",
        failed()
    );
    assert_eq!(
        stalled.wait_events("stats_push_failed").len(),
        1,
        "logged once, not per flush"
    );
    drop(silent);

    let refusing = Collector::start_privileged();
    refusing.answer_with(500);
    let dir = tempfile::tempdir().unwrap();
    let refused = daemon(dir.path(), &python_env("http", refusing.port), FAST_FLUSH);
    verify_times(&refused, 2, 0);
    assert!(!refused.wait_events("stats_push_failed").is_empty());
    assert!(!refused.log().contains(COLLECTOR_SECRET));
}

/// The review's attack: a collector answering 200 with a body that never ends. The daemon reads
/// only the head, so its memory stays where it was while flushes go on.
#[test]
fn a_collector_answering_without_end_costs_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start_privileged();
    collector.answer_endlessly();
    let daemon = daemon(dir.path(), &python_env("http", collector.port), FAST_FLUSH);
    let rss = || {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", daemon.pid().as_raw())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_string();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let before = rss();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        assert_eq!(daemon.verify(VALID).status, 200);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(collector.received().len() >= 5, "flushes went on");
    let after = rss();
    assert!(
        after < before + 50_000,
        "RSS grew from {before} to {after} KiB"
    );
}

/// A secret to a collector elsewhere over plain http is refused at start (https only on 443,
/// as the Python client): said clearly, the secret not shown.
#[test]
fn the_secret_is_never_sent_in_the_clear_off_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = python_env("http", 8080);
    env[1].1 = "192.0.2.7".to_string();
    let mut builder = DaemonBuilder::new(dir.path());
    for (name, value) in &env {
        builder = builder.env(*name, value.clone());
    }
    let mut refused = builder.spawn();
    let status = refused.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(2));
    assert!(refused.log().contains("unencrypted"), "{}", refused.log());
    assert!(!refused.log().contains(COLLECTOR_SECRET));
}

/// The review's attack: a local user holds the collector's unprivileged loopback port while the
/// collector is down and waits for `Authorization: Basic base64(SECRET:)`. Plain http with a secret
/// goes only to a loopback port below `ip_unprivileged_port_start`: anything else is refused at
/// start (exit 2, naming `insecure_http = true`) and the squatter is never reached; with
/// `insecure_http = true` the operator means it.
#[test]
fn the_secret_never_goes_in_the_clear_to_a_port_any_local_user_can_bind() {
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    squatter.set_nonblocking(true).unwrap();
    let port = squatter.local_addr().unwrap().port();
    for host in ["127.0.0.1", "localhost"] {
        let dir = tempfile::tempdir().unwrap();
        let mut env = python_env("http", port);
        env[1].1 = host.to_string();
        let mut builder = DaemonBuilder::new(dir.path());
        for (name, value) in &env {
            builder = builder.env(*name, value.clone());
        }
        let mut refused = builder.spawn();
        let status = refused.wait_exit(Duration::from_secs(10)).expect("exits");
        assert_eq!(status.code(), Some(2), "{host}: {}", refused.log());
        assert!(
            refused.log().contains("insecure_http = true"),
            "{}",
            refused.log()
        );
        assert!(!refused.log().contains(COLLECTOR_SECRET));
    }
    assert_eq!(
        squatter.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "the squatter was never reached"
    );

    let dir = tempfile::tempdir().unwrap();
    let meant = format!("{FAST_FLUSH}insecure_http = true\n");
    let daemon = daemon(dir.path(), &python_env("http", port), &meant);
    verify_times(&daemon, 1, 0);
    assert!(
        wait_until(Duration::from_secs(10), || squatter.accept().is_ok()),
        "insecure_http = true sends as configured"
    );
}

/// A collector that never answers holds neither the stop nor the last flush past their bound.
#[test]
fn a_silent_collector_does_not_hold_up_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let silent = privileged_listener();
    let port = silent.local_addr().unwrap().port();
    let mut daemon = daemon(
        dir.path(),
        &python_env("http", port),
        "[stats]\nflush_interval = \"1s\"\n",
    );
    verify_times(&daemon, 1, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    assert!(daemon.stop().is_some_and(|s| s.success()));
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "stop took {:?}",
        started.elapsed()
    );
}

#[test]
fn half_a_destination_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = DaemonBuilder::new(dir.path())
        .env("DEST_HOST", "127.0.0.1")
        .spawn();
    let status = daemon.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(!status.success());
    assert!(daemon.log().contains("dest_port"), "{}", daemon.log());
    let mut daemon = DaemonBuilder::new(dir.path())
        .config("[stats]\ndest_host = \"h\"\ndest_port = 1\nprotocol = \"ws\"\n")
        .spawn();
    assert!(
        !daemon
            .wait_exit(Duration::from_secs(10))
            .expect("exits")
            .success()
    );
    assert!(daemon.log().contains("not supported"), "{}", daemon.log());
}

/// The review's attack on the fallback: the unit's `ProcSubset=pid` hides
/// `ip_unprivileged_port_start`, and a network namespace (a container) may have lowered it to 0,
/// so any user can bind port 80 and receive the secret. The daemon, as an unprivileged user with
/// `/proc/sys` hidden, asks the kernel instead of assuming 1024: `--check-config` refuses the
/// secret to 127.0.0.1:80 where any user may bind it, and accepts it where only root may.
#[test]
fn with_proc_sys_hidden_the_kernel_is_asked_which_ports_are_privileged() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("heare-authd.toml");
    std::fs::write(&config, "").unwrap();
    let daemon = heare_auth_tests::daemon::binary("heare-authd");
    for (start, expected) in [(0, 2), (1024, 0)] {
        let script = format!(
            "sysctl -qw net.ipv4.ip_unprivileged_port_start={start} && \
             mount -t proc -o subset=pid proc /proc && test ! -e /proc/sys && \
             exec setpriv --reuid 65534 --regid 65534 --clear-groups {} --config {} --check-config",
            daemon.display(),
            config.display()
        );
        let output = Command::new("unshare")
            .args(["--net", "--mount", "--fork", "sh", "-c", &script])
            .envs(python_env("http", 80))
            .output()
            .expect("unshare (util-linux)");
        let text = String::from_utf8_lossy(&output.stderr).to_string()
            + &String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(expected),
            "start {start}: {text}"
        );
        if expected == 2 {
            assert!(text.contains("insecure_http = true"), "{text}");
        }
        assert!(!text.contains(COLLECTOR_SECRET), "{text}");
    }
}
