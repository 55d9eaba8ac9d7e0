//! Per-key rate limits on one host (issue 23, local backend), against the real daemon over its
//! socket: a key's `rate_limit` and `[rate_limit] default`, exact GCRA counts, the 429 answers of
//! `/verify` and `/auth` with `Retry-After` and the draft's `RateLimit` fields, the counters
//! (metrics, `/usage`), the log line at most once a second, a malformed limit skipping its key,
//! and a reload keeping a key's state.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::hammer::{Hammered, hammer};
use heare_auth_tests::http::Request;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn write_keys(dir: &Path, keys: Value) {
    let body = serde_json::to_vec_pretty(&json!({ "keys": keys })).unwrap();
    std::fs::write(dir.join("keys.json"), body).unwrap();
}

fn start(dir: &Path, config: &str) -> Daemon {
    let store = format!("file://{}", dir.join("keys.json").display());
    DaemonBuilder::new(dir)
        .config(config)
        .args(["--store", &store, "--log-level", "debug"])
        .start()
        .unwrap()
}

fn metric(daemon: &Daemon, line_start: &str) -> Option<f64> {
    let text = daemon
        .request(&Request::new("GET", "/metrics"))
        .unwrap()
        .body;
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

fn auth(daemon: &Daemon, secret: &str) -> heare_auth_tests::http::Response {
    let request = Request::new("GET", "/auth").header("Authorization", format!("Bearer {secret}"));
    daemon.request(&request).unwrap()
}

#[test]
fn a_limited_key_gets_exactly_its_burst_then_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(
        dir.path(),
        json!([
            {"id": "key_lim", "secret": "sec_limited", "rate_limit": {"requests": 3, "per": "1h"}},
            {"id": "key_free", "secret": "sec_free"},
        ]),
    );
    let daemon = start(dir.path(), "");

    let remaining: Vec<String> = (0..3)
        .map(|_| {
            let answer = daemon.verify("sec_limited");
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(
                answer.header("ratelimit-policy"),
                Some("\"key\";q=3;w=3600")
            );
            answer.header("ratelimit").unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        remaining,
        [
            "\"key\";r=2;t=1200",
            "\"key\";r=1;t=2400",
            "\"key\";r=0;t=3600"
        ]
    );

    for _ in 0..5 {
        let refused = daemon.verify("sec_limited");
        assert_eq!(refused.status, 429, "{}", refused.body);
        let body = refused.json();
        assert_eq!(body["valid"], false);
        assert_eq!(body["error"], "Rate limit exceeded");
        assert_eq!(body["key_id"], "key_lim");
        let retry_ms = body["retry_after_ms"].as_u64().unwrap();
        assert!((1_190_000..=1_200_000).contains(&retry_ms), "{retry_ms}");
        assert_eq!(refused.header("retry-after"), Some("1200"));
        assert!(
            refused
                .header("ratelimit")
                .unwrap()
                .starts_with("\"key\";r=0;")
        );
    }

    // An unlimited key is untouched and says nothing of limits.
    for _ in 0..10 {
        let free = daemon.verify("sec_free");
        assert_eq!(free.status, 200);
        assert_eq!(free.header("ratelimit"), None);
        assert_eq!(free.header("ratelimit-policy"), None);
    }

    let rate_limited = "heare_auth_verify_requests_total{result=\"rate_limited\"}";
    assert_eq!(metric(&daemon, rate_limited), Some(5.0));
    let valid = "heare_auth_verify_requests_total{result=\"valid\"}";
    assert_eq!(metric(&daemon, valid), Some(13.0));

    // Logged once for five refusals within a second, with the key and never the secret.
    let logged = daemon.wait_events("verification_rate_limited");
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["key_id"], "key_lim");
    assert!(!daemon.log().contains("sec_limited"));

    let limited = daemon.usage_of("key_lim");
    assert_eq!(limited["verifications"], 3);
    assert_eq!(limited["rate_limited"], 5);
    let free = daemon.usage_of("key_free");
    assert!(
        free.get("rate_limited").is_none(),
        "an unlimited key has no refusal count: {free}"
    );
}

#[test]
fn auth_answers_429_with_retry_after_and_200_carries_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(
        dir.path(),
        json!([{"id": "key_fa", "secret": "sec_fa",
                "rate_limit": {"requests": 10, "per": "1m", "burst": 2}}]),
    );
    let daemon = start(dir.path(), "");
    let first = auth(&daemon, "sec_fa");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-heare-key-id"), Some("key_fa"));
    assert_eq!(first.header("ratelimit-policy"), Some("\"key\";q=10;w=60"));
    assert_eq!(first.header("ratelimit"), Some("\"key\";r=1;t=6"));
    assert_eq!(auth(&daemon, "sec_fa").status, 200);
    let refused = auth(&daemon, "sec_fa");
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("6"));
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    assert_eq!(
        refused.header("x-heare-key-id"),
        None,
        "no identity on a refusal"
    );
    assert_eq!(refused.json()["error"], "Rate limit exceeded");
    let failed = daemon.wait_events("forward_auth_failed");
    assert!(
        failed.iter().any(|l| l["reason"] == "rate_limited"),
        "{failed:?}"
    );
    // A bad key is still 401, not 429: a limit is only ever a valid key's.
    assert_eq!(auth(&daemon, "sec_nope").status, 401);
}

#[test]
fn a_malformed_limit_skips_its_key_and_never_loads_it_unlimited() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(
        dir.path(),
        json!([
            {"id": "key_bad1", "secret": "sec_bad1", "rate_limit": "100/1m"},
            {"id": "key_bad2", "secret": "sec_bad2", "rate_limit": {"requests": 0, "per": "1m"}},
            {"id": "key_bad3", "secret": "sec_bad3", "rate_limit": {"requests": 5, "per": "soon"}},
            {"id": "key_bad4", "secret": "sec_bad4", "rate_limit": {"requests": 5, "per": "1m", "brust": 9}},
            {"id": "key_ok", "secret": "sec_ok", "rate_limit": null},
        ]),
    );
    let daemon = start(dir.path(), "");
    for secret in ["sec_bad1", "sec_bad2", "sec_bad3", "sec_bad4"] {
        assert_eq!(daemon.verify(secret).status, 403, "{secret}");
    }
    assert_eq!(daemon.verify("sec_ok").status, 200);
    let warnings = daemon.status()["load_warnings"].to_string();
    for id in ["key_bad1", "key_bad2", "key_bad3", "key_bad4"] {
        assert!(
            warnings.contains(&format!("key {id} skipped: its rate_limit")),
            "{warnings}"
        );
    }
}

#[test]
fn the_configured_default_limits_keys_without_their_own() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(
        dir.path(),
        json!([
            {"id": "key_dflt", "secret": "sec_dflt"},
            {"id": "key_own", "secret": "sec_own", "rate_limit": {"requests": 4, "per": "1h"}},
        ]),
    );
    let daemon = start(dir.path(), "[rate_limit]\ndefault = \"2/1h\"\n");
    let statuses = |secret: &str, n: usize| -> Vec<u16> {
        (0..n).map(|_| daemon.verify(secret).status).collect()
    };
    assert_eq!(statuses("sec_dflt", 3), [200, 200, 429]);
    assert_eq!(statuses("sec_own", 5), [200, 200, 200, 200, 429]);
    let refusals: Vec<u64> = daemon
        .usage()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["rate_limited"].as_u64().unwrap())
        .collect();
    assert_eq!(refusals, [1, 1]);
}

#[test]
fn a_bad_rate_limit_setting_stops_the_daemon_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path(), json!([]));
    for (config, said) in [
        ("[rate_limit]\ndefault = \"lots\"\n", "rate_limit.default"),
        (
            "[rate_limit]\nbackend = \"redis\"\n",
            "rate_limit.redis_url",
        ),
        ("[rate_limit]\nbackend = \"valkey\"\n", "rate_limit.backend"),
        (
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:1\"\n",
            "rate_limit.fleet_hosts",
        ),
        ("[rate_limit]\nfleet_hosts = 3\n", "rate_limit.fleet_hosts"),
        ("[rate_limit]\ndefualt = \"1/1s\"\n", "defualt"),
    ] {
        let store = format!("file://{}", dir.path().join("keys.json").display());
        let mut daemon = DaemonBuilder::new(dir.path())
            .config(config)
            .args(["--store", &store])
            .spawn();
        let status = daemon.wait_exit(Duration::from_secs(10));
        assert!(matches!(status, Some(s) if !s.success()), "{config}");
        assert!(daemon.log().contains(said), "{config}: {}", daemon.log());
    }
}

#[test]
fn a_reload_keeps_an_exhausted_key_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let limited =
        json!({"id": "key_r", "secret": "sec_r", "rate_limit": {"requests": 2, "per": "1h"}});
    write_keys(dir.path(), json!([limited.clone()]));
    let daemon = start(dir.path(), "");
    assert_eq!(daemon.verify("sec_r").status, 200);
    assert_eq!(daemon.verify("sec_r").status, 200);
    assert_eq!(daemon.verify("sec_r").status, 429);

    // A whole load of a changed file (another key added), by SIGHUP.
    write_keys(
        dir.path(),
        json!([limited, {"id": "key_other", "secret": "sec_other"}]),
    );
    daemon.signal(Signal::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.verify("sec_other").status != 200 {
        assert!(Instant::now() < deadline, "the reload never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = daemon.verify("sec_r");
    assert_eq!(again.status, 429, "the bucket was refilled by the reload");
    assert!(again.json()["retry_after_ms"].as_u64().unwrap() > 1_700_000);
    // Refusals carried too: one before the reload, one after.
    std::thread::sleep(Duration::from_millis(200));
    let entry = daemon.usage_of("key_r");
    assert_eq!(entry["rate_limited"], 2, "{entry}");
    assert_eq!(entry["verifications"], 2);
}

#[test]
fn hammered_from_five_clients_a_key_never_gets_more_than_burst_plus_rate() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(
        dir.path(),
        json!([{"id": "key_h", "secret": "sec_h",
                "rate_limit": {"requests": 50, "per": "1s", "burst": 20}}]),
    );
    let daemon = start(dir.path(), "");
    let Hammered {
        accepted,
        seconds: elapsed,
    } = hammer(
        std::slice::from_ref(&daemon.socket),
        5,
        "sec_h",
        Duration::from_secs(2),
    );
    // Never more than the burst plus the rate over the time the clients ran (one for rounding);
    // and, the daemon being far faster than 50/s, not much less.
    let most = 20.0 + 50.0 * elapsed + 1.0;
    let least = 20.0 + 50.0 * (elapsed - 0.3);
    assert!(
        (accepted as f64) <= most && (accepted as f64) >= least,
        "{accepted} accepted in {elapsed:.2}s (between {least:.0} and {most:.0})"
    );
}
