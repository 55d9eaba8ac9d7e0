//! Per-key rate limits across a fleet (issue 23, `backend = "redis"`): real daemons sharing one
//! real `redis-server`. The sum of what all daemons accept for a key stays within its limit;
//! Redis killed and started again, and stopped with SIGSTOP, each decided by `on_backend_error`
//! (`local`: each daemon's share; `allow`; `deny`) with every verify answered within
//! `redis_timeout` plus its own time; unlimited keys never wait for Redis; the backend's state in
//! `/metrics` and `/status`; the password from `redis_password_file`, never logged.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::hammer::{Hammered, hammer};
use heare_auth_tests::http::Request;
use heare_auth_tests::redis_server::RedisServer;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn write_keys(dir: &Path, keys: Value) {
    let body = serde_json::to_vec_pretty(&json!({ "keys": keys })).unwrap();
    std::fs::write(dir.join("keys.json"), body).unwrap();
}

/// A daemon of its own directory on `store`'s key file, with `config` as its configuration.
fn daemon(dir: &Path, store: &Path, config: &str) -> Daemon {
    let store = format!("file://{}", store.join("keys.json").display());
    DaemonBuilder::new(dir)
        .config(config)
        .args(["--store", &store, "--log-level", "debug"])
        .start()
        .unwrap()
}

/// The Redis backend on `url`. The test's redis-server listens on an unprivileged loopback port,
/// which the daemon refuses without `redis_insecure = true`
/// ([`a_redis_backend_a_local_user_could_stand_in_for_is_refused`]).
fn redis_config(url: &str, extra: &str) -> String {
    format!(
        "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{url}\"\nredis_timeout = \"50ms\"\nredis_insecure = true\n{extra}"
    )
}

fn metric(daemon: &Daemon, line_start: &str) -> Option<f64> {
    let text = daemon
        .request(&Request::new("GET", "/metrics"))
        .unwrap()
        .body;
    text.lines()
        .find_map(|line| line.strip_prefix(line_start)?.trim().parse().ok())
}

/// Three daemons of one fleet on one key file: (dirs kept alive, daemons).
fn fleet(redis: &RedisServer, keys: Value, extra: &str) -> (Vec<tempfile::TempDir>, Vec<Daemon>) {
    let store = tempfile::tempdir().unwrap();
    write_keys(store.path(), keys);
    let config = redis_config(&redis.url(), extra);
    let mut dirs = vec![];
    let mut daemons = vec![];
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        daemons.push(daemon(dir.path(), store.path(), &config));
        dirs.push(dir);
    }
    dirs.push(store);
    (dirs, daemons)
}

#[test]
fn three_daemons_share_one_limit() {
    let redis = RedisServer::start().unwrap();
    let keys = json!([
        {"id": "key_f", "secret": "sec_fleet", "rate_limit": {"requests": 6, "per": "1h"}},
        {"id": "key_u", "secret": "sec_unlimited"},
    ]);
    let (_dirs, daemons) = fleet(&redis, keys, "fleet_hosts = 3\n");
    let statuses: Vec<u16> = (0..12)
        .map(|n| daemons[n % 3].verify("sec_fleet").status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(&statuses[..6], [200; 6], "{statuses:?}");
    assert_eq!(&statuses[6..], [429; 6], "{statuses:?}");
    let refused = daemons[1].verify("sec_fleet");
    assert_eq!(refused.json()["key_id"], "key_f");
    let retry = refused.json()["retry_after_ms"].as_u64().unwrap();
    assert!((500_000..=600_000).contains(&retry), "{retry}");
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"key\";q=6;w=3600")
    );
    // /auth is decided by the same bucket.
    let auth = Request::new("GET", "/auth").header("Authorization", "Bearer sec_fleet");
    assert_eq!(daemons[2].request(&auth).unwrap().status, 429);
    for daemon in &daemons {
        assert_eq!(daemon.verify("sec_unlimited").status, 200);
        assert_eq!(
            metric(daemon, "heare_auth_rate_limit_backend_up"),
            Some(1.0)
        );
        assert_eq!(
            metric(daemon, "heare_auth_rate_limit_backend_errors_total"),
            Some(0.0)
        );
        let status = daemon.status();
        assert_eq!(status["rate_limit_backend"]["backend"], "redis");
        assert_eq!(status["rate_limit_backend"]["up"], true);
    }
}

#[test]
fn redis_killed_and_started_again_falls_back_to_each_daemons_share() {
    let mut redis = RedisServer::start().unwrap();
    let keys =
        json!([{"id": "key_k", "secret": "sec_k", "rate_limit": {"requests": 30, "per": "1h"}}]);
    let (_dirs, daemons) = fleet(&redis, keys, "fleet_hosts = 3\n");
    assert_eq!(daemons[0].verify("sec_k").status, 200, "Redis answers");
    redis.stop();
    // Each daemon now enforces its share, 30 / 3 = 10, with its own state.
    for daemon in &daemons {
        let accepted = (0..15)
            .filter(|_| daemon.verify("sec_k").status == 200)
            .count();
        assert!((9..=10).contains(&accepted), "{accepted}");
        assert_eq!(
            metric(daemon, "heare_auth_rate_limit_backend_up"),
            Some(0.0)
        );
        let errors = metric(daemon, "heare_auth_rate_limit_backend_errors_total").unwrap();
        assert!(errors >= 15.0, "{errors}");
        let status = daemon.status();
        assert_eq!(status["rate_limit_backend"]["up"], false);
        assert!(
            status["rate_limit_backend"]["last_error"].is_string(),
            "{status}"
        );
        // Logged once a minute, not once a request.
        let logged = daemon.wait_events("rate_limit_backend_error");
        assert_eq!(logged.len(), 1, "{logged:?}");
    }
    redis.start_again().unwrap();
    // Redis lost its state with the restart: the fleet's bucket is full again, and shared.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = daemons[0].verify("sec_k");
        if metric(&daemons[0], "heare_auth_rate_limit_backend_up") == Some(1.0) {
            assert_eq!(answer.status, 200);
            break;
        }
        assert!(Instant::now() < deadline, "never reconnected");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        daemons[0].wait_events("rate_limit_backend_recovered").len(),
        1
    );
    let statuses: Vec<u16> = (0..40)
        .map(|n| daemons[n % 3].verify("sec_k").status)
        .collect();
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (28..=29).contains(&accepted),
        "30 in all, one taken: {statuses:?}"
    );
}

#[test]
fn a_stopped_redis_costs_each_verify_at_most_the_timeout() {
    let mut redis = RedisServer::start().unwrap();
    let keys = json!([
        {"id": "key_s", "secret": "sec_s", "rate_limit": {"requests": 100, "per": "1h"}},
        {"id": "key_u", "secret": "sec_u"},
    ]);
    let store = tempfile::tempdir().unwrap();
    write_keys(store.path(), keys);
    let mut daemons = vec![];
    let mut dirs = vec![];
    for extra in [
        "fleet_hosts = 4\n",
        "on_backend_error = \"allow\"\n",
        "on_backend_error = \"deny\"\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        daemons.push(daemon(
            dir.path(),
            store.path(),
            &redis_config(&redis.url(), extra),
        ));
        dirs.push(dir);
    }
    for daemon in &daemons {
        assert_eq!(daemon.verify("sec_s").status, 200);
    }
    redis.pause();
    let mut slowest = Duration::ZERO;
    let mut statuses = vec![vec![]; 3];
    for _ in 0..5 {
        for (n, daemon) in daemons.iter().enumerate() {
            let asked = Instant::now();
            let answer = daemon.verify("sec_s");
            slowest = slowest.max(asked.elapsed());
            statuses[n].push((answer.status, answer.header("ratelimit").is_some()));
        }
    }
    // An unlimited key never asks Redis: answered at once.
    let asked = Instant::now();
    assert_eq!(daemons[0].verify("sec_u").status, 200);
    let unlimited = asked.elapsed();
    redis.resume();
    assert!(
        slowest < Duration::from_millis(300),
        "a verify took {slowest:?}"
    );
    assert!(unlimited < Duration::from_millis(40), "{unlimited:?}");
    assert_eq!(
        statuses[0],
        [(200, true); 5],
        "local: its share, 25 of burst"
    );
    assert_eq!(
        statuses[1],
        [(200, false); 5],
        "allow: accepted, no quota to show"
    );
    assert_eq!(statuses[2], [(429, true); 5], "deny");
    let refused = daemons[2].wait_events("verification_rate_limited");
    assert!(
        refused.is_empty(),
        "a backend error is not the key's refusal to log: {refused:?}"
    );
    // But each of deny's 429s is counted as the key's refusal, as /metrics counts it.
    let entry = daemons[2].usage_of("key_s");
    assert_eq!(entry["rate_limited"], 5, "{entry}");
}

#[test]
fn the_password_comes_from_its_file_and_is_never_logged() {
    let password = "redis-pw-Zq81xT";
    let redis = RedisServer::start_with_password(password).unwrap();
    let store = tempfile::tempdir().unwrap();
    write_keys(
        store.path(),
        json!([{"id": "key_p", "secret": "sec_p", "rate_limit": {"requests": 1, "per": "1h"}}]),
    );
    let password_file = store.path().join("redis-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let good = format!(
        "redis_password_file = \"{}\"\non_backend_error = \"deny\"\n",
        password_file.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let with = daemon(dir.path(), store.path(), &redis_config(&redis.url(), &good));
    assert_eq!(with.verify("sec_p").status, 200);
    assert_eq!(with.verify("sec_p").status, 429);
    assert_eq!(metric(&with, "heare_auth_rate_limit_backend_up"), Some(1.0));

    // Without it Redis refuses every decision, and "deny" refuses the key; the URL's own
    // password is as secret as the file's.
    let other = tempfile::tempdir().unwrap();
    let url = redis.url().replace("redis://", "redis://:wrong-pw-Kk2@");
    let without = daemon(
        other.path(),
        store.path(),
        &redis_config(&url, "on_backend_error = \"deny\"\n"),
    );
    assert_eq!(without.verify("sec_p").status, 429);
    assert_eq!(
        metric(&without, "heare_auth_rate_limit_backend_up"),
        Some(0.0)
    );
    let status = without.status().to_string();
    for daemon in [&with, &without] {
        let log = daemon.log();
        assert!(
            !log.contains(password) && !log.contains("wrong-pw-Kk2"),
            "{log}"
        );
    }
    assert!(!status.contains("wrong-pw-Kk2"), "{status}");
}

#[test]
fn hammered_on_three_daemons_the_fleet_never_gets_more_than_burst_plus_rate() {
    let redis = RedisServer::start().unwrap();
    let keys = json!([{"id": "key_h", "secret": "sec_h",
                       "rate_limit": {"requests": 50, "per": "1s", "burst": 20}}]);
    let (_dirs, daemons) = fleet(&redis, keys, "fleet_hosts = 3\n");
    let sockets: Vec<_> = daemons.iter().map(|d| d.socket.clone()).collect();
    let Hammered {
        accepted,
        seconds: elapsed,
    } = hammer(&sockets, 6, "sec_h", Duration::from_secs(2));
    let most = 20.0 + 50.0 * elapsed + 1.0;
    let least = 20.0 + 50.0 * (elapsed - 0.5);
    assert!(
        (accepted as f64) <= most && (accepted as f64) >= least,
        "{accepted} accepted in {elapsed:.2}s (between {least:.0} and {most:.0})"
    );
    for daemon in &daemons {
        assert_eq!(
            metric(daemon, "heare_auth_rate_limit_backend_errors_total"),
            Some(0.0)
        );
    }
}

/// How many times Redis ran the limiter's script (EVALSHA, and EVAL once it was not loaded).
fn script_calls(redis: &RedisServer) -> u64 {
    let stats = redis.command(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .filter(|line| line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:"))
        .filter_map(|line| {
            let calls = line.split_once("calls=")?.1;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum()
}

#[test]
fn a_key_flooded_after_its_refusal_asks_redis_once_until_the_refusal_ends() {
    let redis = RedisServer::start().unwrap();
    // 2 requests a 2 s window: the third waits about a second.
    let keys = json!([
        {"id": "key_flood", "secret": "sec_flood", "rate_limit": {"requests": 2, "per": "2s"}},
    ]);
    let (_dirs, daemons) = fleet(&redis, keys, "fleet_hosts = 3\n");
    let flooded = &daemons[0];
    assert_eq!(flooded.verify("sec_flood").status, 200);
    assert_eq!(flooded.verify("sec_flood").status, 200);
    let before = script_calls(&redis);
    let started = Instant::now();
    let mut refused = 0;
    while started.elapsed() < Duration::from_millis(500) {
        let answer = flooded.verify("sec_flood");
        assert_eq!(answer.status, 429, "{}", answer.body);
        let retry = answer.json()["retry_after_ms"].as_u64().unwrap();
        assert!((1..=1_000).contains(&retry), "{retry}");
        refused += 1;
    }
    assert!(refused >= 20, "only {refused} requests in the flood");
    let asked = script_calls(&redis) - before;
    assert_eq!(asked, 1, "{refused} refusals asked Redis {asked} times");
    // Another daemon's request still asks Redis, and Redis still refuses it.
    assert_eq!(daemons[1].verify("sec_flood").status, 429);
    assert_eq!(script_calls(&redis) - before, 2);
    // The refusal ends when Redis's did: the key is accepted again, everywhere.
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(flooded.verify("sec_flood").status, 200);
    let entry = flooded.usage_of("key_flood");
    assert_eq!(entry["rate_limited"], refused, "{entry}");
    assert_eq!(entry["verifications"], 3, "{entry}");
}

/// A local user takes the place of the Redis backend (any user can while Redis is down): the
/// plain loopback port it is configured on (also spelled `127.1`), or its Unix socket's name in a
/// directory anyone can write. The daemon refuses either configuration at start (exit 2, naming `redis_url`, never the
/// password) and never connects to the squatter; the same Redis through its Unix socket in a
/// directory of its own serves the limits.
#[test]
fn a_redis_backend_a_local_user_could_stand_in_for_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let password = "redis-pw-Squat91";
    let store = tempfile::tempdir().unwrap();
    write_keys(
        store.path(),
        json!([{"id": "key_q", "secret": "sec_q", "rate_limit": {"requests": 1, "per": "1h"}}]),
    );
    let config = |url: &str| {
        format!(
            "[rate_limit]\nbackend = \"redis\"\nredis_url = \"{url}\"\nfleet_hosts = 1\non_backend_error = \"deny\"\n"
        )
    };

    let port_squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    port_squatter.set_nonblocking(true).unwrap();
    let port = port_squatter.local_addr().unwrap().port();
    let open = tempfile::tempdir().unwrap();
    std::fs::set_permissions(open.path(), PermissionsExt::from_mode(0o1777)).unwrap();
    let socket = open.path().join("redis.sock");
    let socket_squatter = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    socket_squatter.set_nonblocking(true).unwrap();
    for (url, named) in [
        (
            format!("redis://:{password}@127.0.0.1:{port}"),
            format!("127.0.0.1:{port}"),
        ),
        // The same port spelled as the resolver reads it.
        (
            format!("redis://:{password}@127.1:{port}"),
            format!("127.1:{port}"),
        ),
        (
            format!("unix://{}?pass={password}", socket.display()),
            open.path().display().to_string(),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let keys = format!("file://{}", store.path().join("keys.json").display());
        let mut refused = DaemonBuilder::new(dir.path())
            .config(&config(&url))
            .args(["--store", &keys])
            .spawn();
        let status = refused.wait_exit(Duration::from_secs(10));
        let log = refused.log();
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{named}: {log}");
        assert!(
            log.contains("rate_limit.redis_url") && log.contains("redis_insecure = true"),
            "{log}"
        );
        assert!(log.contains(&named), "{log}");
        assert!(!log.contains(password), "{log}");
    }
    let nobody = |accepted: std::io::Result<()>| matches!(accepted, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        nobody(port_squatter.accept().map(drop)),
        "connected to the port"
    );
    assert!(
        nobody(socket_squatter.accept().map(drop)),
        "connected to the socket"
    );

    // The same Redis through its Unix socket, in a directory of its own: accepted, and decides.
    let redis = RedisServer::start().unwrap();
    let other = tempfile::tempdir().unwrap();
    let unix = daemon(other.path(), store.path(), &config(&redis.unix_url()));
    assert_eq!(unix.verify("sec_q").status, 200);
    assert_eq!(unix.verify("sec_q").status, 429);
    assert_eq!(metric(&unix, "heare_auth_rate_limit_backend_up"), Some(1.0));
}
