//! heare-authd's Redis client (`heare_authd::rate_limit::redis`, the fleet-wide rate-limit
//! backend) against a real `redis-server` (`heare_auth_tests::redis_server`): a full bucket takes
//! exactly the burst and refills at the rate, with the arrival time stored in whole microseconds
//! on Redis's clock; limiters share one bucket per key and prefix, and one outlives the runtime it
//! was made in; the password comes from the settings and no error shows it; Unix sockets, and
//! rediss:// with the CA file only; Redis killed or stopped costs each decision its timeout and no
//! more, and the same limiter answers again once Redis is back. The daemons themselves with
//! Redis are `rate_limits_fleet.rs`; the harness's server alone is `redis_backend.rs`; the
//! client's pure parts (limits in microseconds, replies as decisions, settings errors, secrets
//! cut out of texts) and an impostor on the port are the unit tests beside it
//! (`daemon/src/rate_limit/redis.rs`).

use heare_auth_store::rate_limit::RateLimit;
use heare_auth_tests::redis_server::{RedisOptions, RedisServer};
use heare_auth_tests::skipped;
use heare_authd::rate_limit::redis::{
    BackendError, FleetDecision, RedisLimiter, RedisSettings, STALL,
};
use redis::Client;
use std::time::Duration;
use std::time::Instant as StdInstant;

const SECOND: u64 = 1_000_000_000;

/// The slack allowed above the timeout for one failed decision.
const SLACK: Duration = Duration::from_millis(200);

fn limit(text: &str, burst: Option<u64>) -> RateLimit {
    RateLimit::parse(text, burst).unwrap()
}

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        ca_file: None,
        password: None,
        // Generous where the test is not about time: a loaded machine must not fail it.
        timeout: Duration::from_secs(2),
        prefix: "heare-auth-test:".into(),
    }
}

/// How far [`set_up`] goes before it returns the limiter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// Made: its connection is still being made (its first decision waits for it).
    Made,
    /// It has answered a decision (a probe of its own key; the test fails if it does not within
    /// 5 s).
    Answering,
}

/// A real redis-server started with `options`, and a limiter with the settings `settings_for`
/// makes for it, `ready` as said; `None` (the skip recorded) when redis-server is not installed.
async fn set_up(
    options: RedisOptions,
    settings_for: impl FnOnce(&RedisServer) -> RedisSettings,
    ready: Ready,
) -> Option<(RedisServer, RedisLimiter)> {
    if !RedisServer::available() {
        skipped!(
            "redis-server is not installed (Debian package redis-server; tests/run installs it)"
        );
        return None;
    }
    let redis = RedisServer::start_with(options).expect("redis-server starts");
    let limiter = RedisLimiter::new(settings_for(&redis)).unwrap();
    if ready == Ready::Answering {
        assert!(
            until_answered(&limiter, Duration::from_secs(5))
                .await
                .is_some(),
            "answers at first"
        );
    }
    Some((redis, limiter))
}

/// [`set_up`] of a plain server and a limiter with the test's [`settings`], `ready` as said.
async fn plain(ready: Ready) -> Option<(RedisServer, RedisLimiter)> {
    set_up(
        RedisOptions::default(),
        |redis| settings(redis.url()),
        ready,
    )
    .await
}

/// [`set_up`] of a plain server and a limiter answering, whose decisions wait at most `timeout`.
async fn answering_within(timeout: Duration) -> Option<(RedisServer, RedisLimiter)> {
    let settings_for = |redis: &RedisServer| RedisSettings {
        timeout,
        ..settings(redis.url())
    };
    set_up(RedisOptions::default(), settings_for, Ready::Answering).await
}

async fn admit(limiter: &RedisLimiter, key: &str, limit: &RateLimit) -> FleetDecision {
    match limiter.admit(key, limit).await {
        Ok(decision) => decision,
        Err(error) => panic!("no decision for {key}: {error}"),
    }
}

/// Admits until one succeeds or `within` passes; how long that took.
async fn until_answered(limiter: &RedisLimiter, within: Duration) -> Option<Duration> {
    let started = StdInstant::now();
    let generous = limit("1000000/1s", None);
    while started.elapsed() < within {
        if limiter.admit("probe", &generous).await.is_ok() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn a_full_bucket_takes_exactly_the_burst_then_refuses_until_an_interval_passes() {
    let Some((redis, limiter)) = plain(Ready::Made).await else {
        return;
    };
    let hourly = limit("5/1h", None);
    let interval = 720 * SECOND;
    for k in 1..=5u64 {
        let decision = admit(&limiter, "k1", &hourly).await;
        assert!(decision.allowed, "request {k}: {decision:?}");
        assert_eq!(decision.retry_after_nanos, 0);
        // Each moves the arrival time on by an interval (less the time since the first).
        let ahead = decision.ahead_nanos;
        assert!(
            ahead <= k * interval && ahead > k * interval - 5 * SECOND,
            "request {k}: {decision:?}"
        );
    }
    let refused = admit(&limiter, "k1", &hourly).await;
    assert!(!refused.allowed, "{refused:?}");
    assert!(
        refused.retry_after_nanos <= interval && refused.retry_after_nanos > interval - 5 * SECOND,
        "retry after ≈ 720 s: {refused:?}"
    );
    assert!(
        refused.ahead_nanos <= 5 * interval && refused.ahead_nanos > 5 * interval - 5 * SECOND,
        "{refused:?}"
    );
    // A refusal writes nothing: refused again, the same wait (less the time between).
    let again = admit(&limiter, "k1", &hourly).await;
    assert!(!again.allowed && again.retry_after_nanos <= refused.retry_after_nanos);
    // Another key has a bucket of its own.
    assert!(admit(&limiter, "k2", &hourly).await.allowed);

    // The stored arrival time is whole microseconds on Redis's clock, expiring when it passes.
    let client = Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let (seconds, micros_now): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut connection)
        .await
        .unwrap();
    let now = seconds * 1_000_000 + micros_now;
    let stored: String = redis::cmd("GET")
        .arg("heare-auth-test:k1")
        .query_async(&mut connection)
        .await
        .unwrap();
    let tat: u64 = stored.parse().unwrap_or_else(|_| panic!("{stored:?}"));
    assert!(tat > now && tat - now <= 3_600_000_000, "{tat} vs {now}");
    let pttl: i64 = redis::cmd("PTTL")
        .arg("heare-auth-test:k1")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(
        pttl > 3_590_000 && pttl <= 3_600_000,
        "expires when the bucket is full again: {pttl} ms"
    );
}

#[tokio::test]
async fn the_bucket_refills_at_the_rate() {
    let Some((_redis, limiter)) = plain(Ready::Made).await else {
        return;
    };
    // 10/1s with a burst of 1: one request, then one every 100 ms.
    let tenth = limit("10/1s", Some(1));
    assert!(admit(&limiter, "r", &tenth).await.allowed);
    let refused = admit(&limiter, "r", &tenth).await;
    assert!(!refused.allowed);
    assert!(
        refused.retry_after_nanos > 50_000_000 && refused.retry_after_nanos <= 100_000_000,
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_nanos(refused.retry_after_nanos) + Duration::from_millis(5))
        .await;
    let refilled = admit(&limiter, "r", &tenth).await;
    assert!(refilled.allowed, "{refilled:?}");
    // Over ~1.2 s of one request every 2 ms: the burst plus the rate, no more.
    let mut accepted = 0;
    let started = StdInstant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        if admit(&limiter, "s", &tenth).await.allowed {
            accepted += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let most = 1 + elapsed / 100 + 1;
    assert!(
        accepted >= 11 && accepted <= most,
        "{accepted} accepted in {elapsed} ms"
    );
}

#[test]
fn a_limiter_outlives_the_runtime_it_was_made_in() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let hourly = limit("3/1h", None);
    let first = runtime();
    let Some((_redis, limiter)) = first.block_on(async {
        let (redis, limiter) = plain(Ready::Made).await?;
        assert!(admit(&limiter, "o", &hourly).await.allowed);
        Some((redis, limiter))
    }) else {
        return;
    };
    drop(first);
    // Its connecting task and connection ended with it; the next runtime gets new ones.
    runtime().block_on(async {
        assert!(
            until_answered(&limiter, Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(admit(&limiter, "o", &hourly).await.allowed);
        assert!(admit(&limiter, "o", &hourly).await.allowed);
        assert!(
            !admit(&limiter, "o", &hourly).await.allowed,
            "the same bucket"
        );
    });
}

#[tokio::test]
async fn two_daemons_share_one_bucket_and_prefixes_keep_fleets_apart() {
    let Some((redis, one)) = plain(Ready::Made).await else {
        return;
    };
    let two = RedisLimiter::new(settings(redis.url())).unwrap();
    let hourly = limit("4/1h", None);
    let mut allowed = 0;
    for i in 0..10 {
        let limiter = if i % 2 == 0 { &one } else { &two };
        if admit(limiter, "shared", &hourly).await.allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 4, "the two daemons together accept the burst once");
    let other_fleet = RedisLimiter::new(RedisSettings {
        prefix: "heare-auth-other:".into(),
        ..settings(redis.url())
    })
    .unwrap();
    let mut theirs = 0;
    for _ in 0..6 {
        if admit(&other_fleet, "shared", &hourly).await.allowed {
            theirs += 1;
        }
    }
    assert_eq!(theirs, 4, "another prefix is another bucket");
}

#[tokio::test]
async fn the_password_comes_from_the_settings_and_no_error_shows_it() {
    let password = "redis-Pw-31x";
    let Some((redis, with)) = set_up(
        RedisOptions {
            password: Some(password.into()),
            ..RedisOptions::default()
        },
        |redis| RedisSettings {
            password: Some(password.into()),
            ..settings(redis.url())
        },
        Ready::Made,
    )
    .await
    else {
        return;
    };
    let hourly = limit("100/1h", None);
    assert!(admit(&with, "p", &hourly).await.allowed);
    // The settings' password overrides the URL's.
    let over = RedisLimiter::new(RedisSettings {
        password: Some(password.into()),
        ..settings(redis.url().replace("redis://", "redis://:wrong-Url-Pw@"))
    })
    .unwrap();
    assert!(admit(&over, "p", &hourly).await.allowed);
    let in_url = RedisLimiter::new(settings(
        redis
            .url()
            .replace("redis://", &format!("redis://:{password}@")),
    ))
    .unwrap();
    assert!(admit(&in_url, "p", &hourly).await.allowed);

    for (wrong, settings) in [
        (
            "wrong-File-Pw",
            RedisSettings {
                password: Some("wrong-File-Pw".into()),
                ..settings(redis.url())
            },
        ),
        (
            "wrong-Url-Pw",
            settings(redis.url().replace("redis://", "redis://:wrong-Url-Pw@")),
        ),
        ("-", settings(redis.url())),
    ] {
        let limiter = RedisLimiter::new(settings).unwrap();
        for _ in 0..3 {
            match limiter.admit("p", &hourly).await {
                Err(BackendError::Refused(text)) => {
                    assert!(!text.contains(wrong) && !text.contains(password), "{text}");
                    assert!(
                        text.contains("authentication failed") || text.contains("NOAUTH"),
                        "{text}"
                    );
                }
                other => panic!("{wrong}: {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_unix_socket() {
    let Some((redis, unix)) = set_up(
        RedisOptions::default(),
        |redis| settings(redis.unix_url()),
        Ready::Made,
    )
    .await
    else {
        return;
    };
    let hourly = limit("2/1h", None);
    let plus = RedisLimiter::new(settings(
        redis.unix_url().replace("unix://", "redis+unix://"),
    ))
    .unwrap();
    assert!(admit(&unix, "u", &hourly).await.allowed);
    assert!(admit(&plus, "u", &hourly).await.allowed);
    assert!(!admit(&unix, "u", &hourly).await.allowed, "one bucket");
}

#[tokio::test]
async fn rediss_with_the_ca_file_and_not_without_it() {
    if !RedisServer::tls_available() {
        skipped!("the openssl command is missing (Debian package openssl), so no certificates");
        return;
    }
    let Some((redis, trusted)) = set_up(
        RedisOptions {
            tls: true,
            ..RedisOptions::default()
        },
        |redis| RedisSettings {
            ca_file: redis.ca_file(),
            ..settings(redis.tls_url().unwrap())
        },
        Ready::Made,
    )
    .await
    else {
        return;
    };
    let url = redis.tls_url().unwrap();
    let hourly = limit("100/1h", None);
    assert!(admit(&trusted, "t", &hourly).await.allowed);
    // The system's roots do not know the throwaway CA: no connection, no decision.
    let untrusted = RedisLimiter::new(settings(url)).unwrap();
    match untrusted.admit("t", &hourly).await {
        Err(BackendError::Unavailable(text)) => {
            assert!(text.to_lowercase().contains("certificate"), "{text}")
        }
        other => panic!("{other:?}"),
    }
    // Plain redis:// to the TLS port gets no decision either, and no longer than the timeout.
    let plain = RedisLimiter::new(RedisSettings {
        timeout: Duration::from_millis(200),
        ..settings(redis.tls_url().unwrap().replace("rediss://", "redis://"))
    })
    .unwrap();
    let started = StdInstant::now();
    let decided = plain.admit("t", &hourly).await;
    assert!(decided.is_err(), "{decided:?}");
    assert!(started.elapsed() < Duration::from_millis(200) + SLACK);
}

#[tokio::test]
async fn redis_killed_fails_decisions_in_time_and_started_again_they_work() {
    let timeout = Duration::from_millis(50);
    let Some((mut redis, limiter)) = answering_within(timeout).await else {
        return;
    };
    redis.stop();
    let hourly = limit("100/1h", None);
    let mut errors = Vec::new();
    for _ in 0..20 {
        let started = StdInstant::now();
        let decided = limiter.admit("d", &hourly).await;
        let took = started.elapsed();
        assert!(took < timeout + SLACK, "{took:?}: {decided:?}");
        match decided {
            Err(error) => errors.push(error),
            Ok(decision) => panic!("a decision from a dead Redis: {decision:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        errors
            .iter()
            .any(|error| matches!(error, BackendError::Unavailable(_))),
        "{errors:?}"
    );
    redis.start_again().unwrap();
    let took = until_answered(&limiter, Duration::from_secs(5)).await;
    assert!(
        took.is_some(),
        "the same limiter answers again once Redis is back"
    );
    // Redis lost everything: a full bucket again.
    assert!(admit(&limiter, "d", &limit("1/1h", None)).await.allowed);
}

#[tokio::test]
async fn redis_stopped_costs_each_decision_the_timeout_and_no_more() {
    let timeout = Duration::from_millis(50);
    let Some((mut redis, limiter)) = answering_within(timeout).await else {
        return;
    };
    redis.pause();
    let generous = limit("1000000/1s", None);
    let started = StdInstant::now();
    let mut slowest = Duration::ZERO;
    let mut decisions = 0;
    // Past STALL too: the silent connection is dropped and made again (which waits as well).
    while started.elapsed() < STALL + Duration::from_millis(800) {
        let one = StdInstant::now();
        let decided = limiter.admit("s", &generous).await;
        let took = one.elapsed();
        slowest = slowest.max(took);
        assert_eq!(decided, Err(BackendError::Timeout), "after {took:?}");
        assert!(took >= timeout && took < timeout + SLACK, "{took:?}");
        decisions += 1;
    }
    assert!(decisions >= 10, "{decisions}");
    redis.resume();
    let took = until_answered(&limiter, Duration::from_secs(5)).await;
    assert!(took.is_some(), "answers again after SIGCONT");
    eprintln!("{decisions} decisions while stopped, the slowest {slowest:?}");
}

/// Informal: the time of one decision over localhost TCP (run with --ignored --nocapture).
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn latency_of_ten_thousand_decisions() {
    let Some((_redis, limiter)) = plain(Ready::Answering).await else {
        return;
    };
    let generous = limit("1000000000/1s", None);
    let mut times = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let started = StdInstant::now();
        let key = format!("key-{}", i % 100);
        admit(&limiter, &key, &generous).await;
        times.push(started.elapsed());
    }
    times.sort();
    eprintln!(
        "10,000 decisions: p50 {:?}, p99 {:?}, max {:?}",
        times[5_000], times[9_900], times[9_999]
    );
}
