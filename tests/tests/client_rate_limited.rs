//! heare-auth-client against the real daemon and a key over its rate limit: the daemon's 429 is
//! `Error::RateLimited` (key id, time to wait) for the blocking and the async client — never a
//! key, never `InvalidKey` — and the body is exactly what the shared wire type writes.

use heare_auth_client::wire::{RATE_LIMIT_EXCEEDED, VerifyResponse};
use heare_auth_client::{AsyncClient, Client, Error};
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::keys::{TestKey, key_file};
use std::path::Path;
use std::time::Duration;

/// Limited to one verification an hour (the burst defaults to the request count: one).
const LIMITED: &str = "sec_0RateLimitedClientSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// No limit of its own, in the same file.
const FREE: &str = "sec_0UnlimitedClientSecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
const HOUR: Duration = Duration::from_secs(3600);

/// A daemon serving `key_limited` (1 per hour) and `key_free` (no limit).
fn start(dir: &Path) -> Daemon {
    let file = key_file(&[
        TestKey::new("key_limited", LIMITED),
        TestKey::new("key_free", FREE),
    ]);
    let mut document: serde_json::Value = serde_json::from_slice(&file).unwrap();
    document["keys"][0]["rate_limit"] = serde_json::json!({"requests": 1, "per": "1h"});
    let store = dir.join("keys.json");
    std::fs::write(&store, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap()
}

/// The wait of a `RateLimited` for `key_limited`; panics (the test fails) on anything else.
fn limited_for(result: Result<heare_auth_client::Verified, Error>) -> Duration {
    match result {
        Err(error @ Error::RateLimited { .. }) => {
            let text = format!("{error} {error:?}");
            assert!(!text.contains(LIMITED), "secret in error: {text}");
            assert!(text.contains("key_limited"), "{text}");
            assert!(text.contains("rate limit"), "{text}");
            let Error::RateLimited {
                key_id,
                retry_after,
            } = error
            else {
                unreachable!()
            };
            assert_eq!(key_id, "key_limited");
            retry_after
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

fn assert_within_the_hour(wait: Duration) {
    assert!(
        wait >= Duration::from_secs(1) && wait <= HOUR,
        "retry_after {wait:?} is not between 1 s and 1 h"
    );
}

#[test]
fn blocking_and_async_clients_see_rate_limited_with_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let client = Client::builder()
        .socket(&daemon.socket)
        .user_agent("rate-limit-test/1")
        .build();

    // The first verification is the one the hour allows.
    let key = client.verify(LIMITED).unwrap();
    assert_eq!(key.key_id, "key_limited");
    // The second is refused for now: neither a key nor InvalidKey.
    let first_wait = limited_for(client.verify(LIMITED));
    assert_within_the_hour(first_wait);
    // Asking again does not reset the wait, nor let it through.
    let again = limited_for(client.verify(LIMITED));
    assert_within_the_hour(again);
    assert!(again <= first_wait, "{again:?} > {first_wait:?}");

    // The limit is the key's own: another key of the same file verifies as often as asked, and
    // a wrong secret is still InvalidKey.
    for _ in 0..5 {
        assert_eq!(client.verify(FREE).unwrap().key_id, "key_free");
    }
    let wrong = "sec_0WrongRateLimitSecretCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC";
    assert!(matches!(client.verify(wrong), Err(Error::InvalidKey)));

    // The async client maps the same 429 the same way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = AsyncClient::unix(&daemon.socket).user_agent("rate-limit-async/1");
        let wait = limited_for(client.verify(LIMITED).await);
        assert_within_the_hour(wait);
        assert_eq!(client.verify(FREE).await.unwrap().key_id, "key_free");
    });
}

#[test]
fn the_daemons_429_is_the_wire_types_body() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    assert_eq!(daemon.verify(LIMITED).status, 200);
    let answer = daemon.verify(LIMITED);
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert!(!answer.body.contains(LIMITED), "{}", answer.body);
    let parsed: VerifyResponse = serde_json::from_str(&answer.body).unwrap();
    assert!(!parsed.valid);
    assert_eq!(parsed.error.as_deref(), Some(RATE_LIMIT_EXCEEDED));
    assert_eq!(parsed.key_id.as_deref(), Some("key_limited"));
    let retry_after_ms = parsed.retry_after_ms.expect("retry_after_ms in a 429");
    assert_within_the_hour(Duration::from_millis(retry_after_ms));
    // Byte for byte what VerifyResponse::rate_limited writes, so daemon and clients agree.
    let expected =
        serde_json::to_string(&VerifyResponse::rate_limited("key_limited", retry_after_ms))
            .unwrap();
    assert_eq!(answer.body, expected);
    // Retry-After: whole seconds, consistent with retry_after_ms.
    let seconds: u64 = answer
        .header("retry-after")
        .expect("a Retry-After header")
        .trim()
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&seconds) && seconds * 1000 + 1000 >= retry_after_ms,
        "Retry-After {seconds} s against retry_after_ms {retry_after_ms}"
    );
}
