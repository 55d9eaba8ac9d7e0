//! `/metrics` against the real daemon: every verify result counted under its contract name, the
//! text accepted by promtool, the admin rule on the socket, the `metrics_listen` listener serving
//! only `/metrics` and `/health`, and a real Prometheus server scraping it and answering, through
//! its query API, the number of verifies this test made. `heare-authctl status` shows verifies by
//! result. promtool and prometheus come from Debian's `prometheus` package (tests/run installs it).

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::{Request, send_tcp};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::process::Group;
use heare_auth_tests::{free_port, wait_until};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const VALID: &str = "sec_0MetricsValidSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const EXPIRED: &str = "sec_0MetricsExpiredSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn start(dir: &Path, extra: &[&str]) -> Daemon {
    let store = dir.join("keys.json");
    let keys = [
        TestKey::new("key_metrics_valid", VALID),
        TestKey::new("key_metrics_expired", EXPIRED).expires_at("2020-01-01T00:00:00Z"),
    ];
    std::fs::write(&store, key_file(&keys)).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(extra.iter().copied())
        .start()
        .unwrap()
}

/// The value of the sample line `name` (with its labels, as written) in exposition `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn metrics_over_socket(daemon: &Daemon) -> String {
    let answer = daemon.request(&Request::new("GET", "/metrics")).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body.clone());
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    answer.body.clone()
}

#[test]
fn every_verify_result_is_counted_and_promtool_accepts_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &[]);
    for _ in 0..3 {
        assert_eq!(daemon.verify(VALID).status, 200);
    }
    assert_eq!(daemon.verify(EXPIRED).status, 403);
    let unknown = format!("sec_0{}", "U".repeat(59));
    let bad_checksum = format!("sec_1{}", "A".repeat(59));
    for secret in [&unknown, &unknown, &bad_checksum] {
        assert_eq!(daemon.verify(secret).status, 403);
    }
    let malformed = Request::new("POST", "/verify").body("{not json");
    assert_eq!(daemon.request(&malformed).unwrap().status, 422);
    assert_eq!(
        daemon
            .request(&Request::new("GET", "/health"))
            .unwrap()
            .status,
        200
    );

    let text = metrics_over_socket(&daemon);
    let count = |result: &str| {
        sample(
            &text,
            &format!("heare_auth_verify_requests_total{{result=\"{result}\"}}"),
        )
    };
    assert_eq!(count("valid"), Some(3.0), "{text}");
    assert_eq!(count("expired"), Some(1.0));
    assert_eq!(count("unknown"), Some(2.0));
    assert_eq!(count("bad_checksum"), Some(1.0));
    assert_eq!(count("malformed"), Some(1.0));
    assert_eq!(count("stale"), Some(0.0));
    assert_eq!(
        sample(&text, "heare_auth_verify_duration_seconds_count"),
        Some(8.0)
    );
    assert_eq!(sample(&text, "heare_auth_keys"), Some(2.0));
    assert_eq!(sample(&text, "heare_auth_key_set_stale"), Some(0.0));
    let started = "heare_auth_reloads_total{trigger=\"start\",result=\"success\"}";
    assert_eq!(sample(&text, started), Some(1.0));
    assert!(sample(&text, "heare_auth_connections_open").is_some_and(|n| n >= 1.0));
    assert!(sample(&text, "process_resident_memory_bytes").is_some_and(|n| n > 0.0));
    assert!(sample(&text, "process_open_fds").is_some_and(|n| n > 0.0));
    let last = sample(&text, "heare_auth_last_reload_success_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 120.0, "{last} vs {now}");
    promtool_check(&text);

    // A /refresh is counted under its trigger: the key file is unchanged, so it is confirmed
    // (/refresh follows the change log and loads the key object only when it holds more).
    assert_eq!(daemon.refresh().status, 200);
    let text = metrics_over_socket(&daemon);
    let refreshed = "heare_auth_reloads_total{trigger=\"http\",result=\"unchanged\"}";
    assert_eq!(sample(&text, refreshed), Some(1.0));

    // heare-authctl status shows the verifies by result.
    let store = format!("file://{}", dir.path().join("keys.json").display());
    let shown = Ctl::new(dir.path(), &store, &daemon.socket).ok(&["status"]);
    assert!(
        shown.contains("verifies:      8 since start (valid 3, unknown 2, expired 1, bad_checksum 1, malformed 1)"),
        "{shown}"
    );
}

/// `promtool check metrics` (reads the text on stdin) must pass without a complaint.
fn promtool_check(text: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; tests/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool complained: {said}");
}

#[test]
fn metrics_are_an_admin_call_on_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let daemon = start(dir.path(), &["--socket-mode", "0666"]);
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_uds-request"))
        .arg(&daemon.socket)
        .args(["GET", "/metrics"])
        .output()
        .expect("setpriv (run as root, as CI does)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("403"), "{stdout}");
    assert!(!stdout.contains("heare_auth_verify"));
}

#[test]
fn the_metrics_listener_serves_only_metrics_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let daemon = start(dir.path(), &["--metrics-listen", &address]);
    assert_eq!(daemon.verify(VALID).status, 200);
    let answer = send_tcp(&address, &Request::new("GET", "/metrics")).unwrap();
    assert_eq!(answer.status, 200);
    let valid = "heare_auth_verify_requests_total{result=\"valid\"}";
    assert_eq!(sample(&answer.body.clone(), valid), Some(1.0));
    let health = send_tcp(&address, &Request::new("GET", "/health")).unwrap();
    assert_eq!(health.status, 200);
    for (method, path) in [
        ("POST", "/verify"),
        ("GET", "/status"),
        ("POST", "/refresh"),
    ] {
        let refused = send_tcp(&address, &Request::new(method, path).body("{}")).unwrap();
        assert_eq!(refused.status, 404, "{method} {path}");
    }
    let by_bearer =
        Request::new("POST", "/verify").header("authorization", format!("Bearer {VALID}"));
    assert_eq!(send_tcp(&address, &by_bearer).unwrap().status, 404);

    // Scrapers have a table of their own: twenty idle connections to the metrics listener take
    // no slot of the verifying clients, and a scrape still gets through.
    let idle: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let text = metrics_over_socket(&daemon);
    assert_eq!(
        sample(&text, "heare_auth_connections_open"),
        Some(1.0),
        "{text}"
    );
    let scraped = send_tcp(&address, &Request::new("GET", "/metrics")).unwrap();
    assert_eq!(scraped.status, 200);
    drop(idle);
}

/// A real Prometheus scrapes `metrics_listen` every second; its query API must return the number
/// of valid verifies made here.
#[test]
fn prometheus_scrapes_the_verify_count() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let daemon = start(dir.path(), &["--metrics-listen", &address]);
    const VERIFIES: usize = 7;
    for _ in 0..VERIFIES {
        assert_eq!(daemon.verify(VALID).status, 200);
    }
    let web = format!("127.0.0.1:{}", free_port());
    let _prometheus = prometheus(dir.path(), &address, &web);
    let query = "/api/v1/query?query=heare_auth_verify_requests_total%7Bresult%3D%22valid%22%7D";
    let mut last = String::new();
    let scraped = wait_until(Duration::from_secs(60), || {
        let Ok(answer) = send_tcp(&web, &Request::new("GET", query)) else {
            return false;
        };
        last = answer.body.clone();
        let json: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let value = json["data"]["result"][0]["value"][1].as_str();
        value.and_then(|v| v.parse::<usize>().ok()) == Some(VERIFIES)
    });
    assert!(scraped, "Prometheus never answered {VERIFIES}: {last}");
}

/// A Prometheus server with a private data directory; its process group is stopped when dropped.
fn prometheus(dir: &Path, target: &str, web: &str) -> Group {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: heare-authd\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    Group::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("prometheus (Debian package prometheus; tests/run installs it)")
}
