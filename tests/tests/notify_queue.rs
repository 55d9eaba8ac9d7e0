//! Push (issue 16): the real daemon long-polls an SQS queue on moto in server mode, wired as on
//! AWS (bucket notification → SNS topic → queue), and a revocation made by the real heare-authctl
//! (which does not reload the daemon itself) is refused within seconds although polling is at
//! its 300 s fallback. Also performed: events for other objects, forged and garbage messages sent
//! straight to the queue (nothing changes but a conditional 304 reload; every message is
//! deleted), a queue that does not exist (logged, shown in /status and /metrics, polling carries
//! on, recovery once it exists), and the settings' refusals.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder, binary};
use heare_auth_tests::fleet::moto::{Moto, block_on, s3_client, sqs_client};
use heare_auth_tests::fleet::push::wire_push;
use heare_auth_tests::http::Request;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::{ACCESS_KEY, REGION, SECRET_KEY};
use heare_auth_tests::{ctl::Ctl, wait_until};
use std::path::Path;
use std::time::{Duration, Instant};

const OBJECT: &str = "keys.json";
/// The store identity [`with_identity`] gives the key file; a change object must carry it.
const STORE_ID: &str = "store_notifytest000000000";
const KEPT: &str = "sec_0KeptNotifySecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const REVOKED: &str = "sec_0RevokedNotifySecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn keys() -> Vec<TestKey> {
    vec![
        TestKey::new("key_kept", KEPT),
        TestKey::new("key_revoked", REVOKED),
    ]
}

fn aws_env() -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A bucket on moto holding the two keys.
fn bucket_with_keys(moto: &Moto, bucket: &str) {
    let client = s3_client(&moto.endpoint());
    block_on(async { client.create_bucket().bucket(bucket).send().await })
        .unwrap()
        .unwrap();
    put_key_object(moto, bucket, with_identity(key_file(&keys())));
}

/// The key file as a log-aware heare-authctl leaves it (a store identity and `change_seq`), so
/// that a revocation is one write of the key object: on a store without an identity the first
/// write of ctl establishes it with a write of its own, which would be a second event.
fn with_identity(body: Vec<u8>) -> Vec<u8> {
    let mut document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    document["store_id"] = STORE_ID.into();
    document["change_seq"] = 0.into();
    serde_json::to_vec(&document).unwrap()
}

/// Writes `body` as the key object of `bucket` (an event follows when push is wired).
fn put_key_object(moto: &Moto, bucket: &str, body: Vec<u8>) {
    put_object(moto, bucket, OBJECT, body);
}

/// Writes `body` as object `name` of `bucket`.
fn put_object(moto: &Moto, bucket: &str, name: &str, body: Vec<u8>) {
    let client = s3_client(&moto.endpoint());
    block_on(async {
        let put = client.put_object().bucket(bucket).key(name);
        put.body(body.into()).send().await
    })
    .unwrap()
    .unwrap();
}

/// Writes a key object that does not load, and waits until the daemon serves its last good set
/// as stale and a reload the queue asked for has failed.
fn break_key_object(moto: &Moto, bucket: &str, daemon: &Daemon) {
    put_key_object(moto, bucket, b"not a key file".to_vec());
    assert!(
        wait_until(Duration::from_secs(10), || daemon.status()["stale"] == true),
        "{}",
        daemon.log()
    );
    assert!(wait_until(Duration::from_secs(10), || notify_reloads_that(
        daemon, "failure"
    ) >= 1.0));
}

/// A bucket holding the two keys, wired to one queue (`raw`: without SNS's envelope), and the
/// daemon on it, listening.
fn pushed_daemon(moto: &Moto, dir: &Path, bucket: &str, raw: bool) -> (String, Daemon) {
    bucket_with_keys(moto, bucket);
    let queue = wire_push(&moto.endpoint(), bucket, OBJECT, 1, raw).unwrap();
    let daemon = daemon(moto, dir, bucket, &queue[0], "").start().unwrap();
    daemon.wait_events("notify_queue_listening");
    (queue[0].clone(), daemon)
}

/// The daemon on moto's `bucket`, listening to `queue` (no refresh_interval: the 300 s fallback).
fn daemon(moto: &Moto, dir: &Path, bucket: &str, queue: &str, config: &str) -> DaemonBuilder {
    DaemonBuilder::new(dir)
        .args([
            "--store",
            &format!("s3://{bucket}/{OBJECT}"),
            "--s3-path-style",
        ])
        .args(["--s3-endpoint", &moto.endpoint(), "--notify-queue", queue])
        .arg("--cache")
        .arg(dir.join("keys.cache").display().to_string())
        .args(["--usage-path", "none"])
        .config(config)
        .envs(aws_env())
}

fn ctl(moto: &Moto, dir: &Path, bucket: &str) -> Ctl {
    Ctl::new(
        dir,
        &format!("s3://{bucket}/{OBJECT}"),
        &dir.join("no-daemon.sock"),
    )
    .config_text("[s3]\npath_style = true\n")
    .env(aws_env())
    .env(vec![("AWS_ENDPOINT_URL".to_string(), moto.endpoint())])
}

fn valid(daemon: &Daemon, secret: &str) -> bool {
    daemon.verify(secret).json()["valid"] == true
}

fn metrics(daemon: &Daemon) -> String {
    let response = daemon.request(&Request::new("GET", "/metrics")).unwrap();
    response.body
}

/// The value of the sample `series` (name and labels exactly as written) in `/metrics`.
fn sample(daemon: &Daemon, series: &str) -> Option<f64> {
    metrics(daemon).lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn notify_status(daemon: &Daemon) -> serde_json::Value {
    daemon.status()["notify"].clone()
}

fn messages(daemon: &Daemon, result: &str) -> u64 {
    let status = notify_status(daemon);
    let counts = status["messages"].as_array().cloned().unwrap_or_default();
    counts
        .iter()
        .find(|pair| pair[0] == result)
        .and_then(|pair| pair[1].as_u64())
        .unwrap_or(0)
}

/// Revokes with the real ctl (no reload asked), then the time until the daemon refuses the key.
fn revoke_and_time(moto: &Moto, dir: &Path, bucket: &str, daemon: &Daemon) -> Duration {
    let started = Instant::now();
    ctl(moto, dir, bucket).ok(&["delete", "key_revoked", "--yes", "--no-reload"]);
    assert!(
        wait_until(Duration::from_secs(10), || !valid(daemon, REVOKED)),
        "the revocation never reached the daemon: {}",
        daemon.log()
    );
    started.elapsed()
}

#[test]
fn a_revocation_arrives_through_sns_and_sqs_in_seconds_with_polling_at_its_fallback() {
    let moto = Moto::start().unwrap();
    for (bucket, raw) in [("notify-envelope", false), ("notify-raw", true)] {
        let dir = tempfile::tempdir().unwrap();
        let (_queue, daemon) = pushed_daemon(&moto, dir.path(), bucket, raw);
        assert!(valid(&daemon, REVOKED) && valid(&daemon, KEPT));

        let took = revoke_and_time(&moto, dir.path(), bucket, &daemon);
        assert!(took < Duration::from_secs(5), "{bucket}: took {took:?}");
        assert!(
            valid(&daemon, KEPT),
            "{bucket}: the other key still verifies"
        );
        // The write's two events (its change object, then the key object) fetch the change
        // and HEAD the key object: the whole object is fetched for neither.
        let applied = daemon.wait_events("changes_applied");
        assert!(
            applied.iter().all(|e| e["change_seq"] == 1) && !applied.is_empty(),
            "{bucket}: applied from the log: {applied:?}"
        );
        assert_eq!(
            sample(&daemon, "heare_auth_changes_applied_total"),
            Some(1.0)
        );
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            daemon.events("refresh_success").is_empty(),
            "{bucket}: the key object was not loaded again: {}",
            daemon.log()
        );
        assert_eq!(
            sample(
                &daemon,
                r#"heare_auth_reloads_total{trigger="notify",result="success"}"#
            ),
            Some(0.0)
        );
        // A queue call that fails (moto slow on a loaded machine) is retried after a backoff of
        // at most a few seconds: the queue must be up again by then.
        let up = || sample(&daemon, "heare_auth_notify_queue_up") == Some(1.0);
        assert!(
            wait_until(Duration::from_secs(15), up),
            "{bucket}: the queue is not up: {}\n{}",
            notify_status(&daemon),
            daemon.log()
        );
        assert!(messages(&daemon, "reload") >= 1);
        assert_eq!(notify_status(&daemon)["state"], "receiving");
    }
}

/// Sends `body` to the queue directly, as anyone allowed to send to it could.
fn send(moto: &Moto, queue: &str, body: &str) {
    let client = sqs_client(&moto.endpoint());
    block_on(async {
        client
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
    })
    .unwrap()
    .unwrap();
}

/// Messages in the queue, visible or in flight.
fn queued(moto: &Moto, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as Name;
    let client = sqs_client(&moto.endpoint());
    let attributes = block_on(async {
        client
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(Name::ApproximateNumberOfMessages)
            .attribute_names(Name::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
    })
    .unwrap()
    .unwrap();
    let count = |name: Name| {
        attributes
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    count(Name::ApproximateNumberOfMessages) + count(Name::ApproximateNumberOfMessagesNotVisible)
}

fn s3_event(bucket: &str, key: &str) -> String {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "eTag": "forged"}}
    }]})
    .to_string()
}

#[test]
fn forged_foreign_and_garbage_messages_change_nothing_and_are_deleted() {
    let moto = Moto::start().unwrap();
    let bucket = "notify-forged";
    let dir = tempfile::tempdir().unwrap();
    let (queue, daemon) = pushed_daemon(&moto, dir.path(), bucket, false);
    // S3's test event, sent when the notification was configured, comes first.
    assert!(wait_until(Duration::from_secs(30), || messages(
        &daemon, "ignored"
    ) >= 1));
    let ignored_before = messages(&daemon, "ignored");

    send(&moto, &queue, &s3_event(bucket, "other.json"));
    send(&moto, &queue, &s3_event("another-bucket", OBJECT));
    send(&moto, &queue, "{\"keys\": [{\"id\": \"evil\"}]}");
    send(&moto, &queue, &"[".repeat(10_000));
    assert!(
        wait_until(Duration::from_secs(10), || messages(&daemon, "invalid")
            == 2
            && messages(&daemon, "ignored") == ignored_before + 2),
        "{}",
        daemon.status()
    );
    assert!(daemon.events("refresh_success").is_empty());
    assert!(
        !daemon
            .wait_events("notify_messages_not_s3_events")
            .is_empty()
    );
    assert!(
        !daemon.log().contains("evil"),
        "a message's content was logged"
    );

    // A forged event naming our object: one conditional reload, answered 304, nothing else.
    send(&moto, &queue, &s3_event(bucket, OBJECT));
    let unchanged = r#"heare_auth_reloads_total{trigger="notify",result="unchanged"}"#;
    assert!(wait_until(Duration::from_secs(10), || sample(
        &daemon, unchanged
    ) == Some(1.0)));
    assert!(valid(&daemon, KEPT) && valid(&daemon, REVOKED));
    assert_eq!(daemon.status()["keys_loaded"], 2);
    assert!(
        wait_until(Duration::from_secs(10), || queued(&moto, &queue) == 0),
        "handled messages must be deleted"
    );
    assert_eq!(notify_status(&daemon)["errors"], 0);
}

#[test]
fn a_missing_queue_is_reported_polling_carries_on_and_the_queue_recovers() {
    let moto = Moto::start().unwrap();
    let bucket = "notify-missing";
    bucket_with_keys(&moto, bucket);
    let endpoint = moto.endpoint();
    let queue = format!("{endpoint}/123456789012/created-later");
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(
        &moto,
        dir.path(),
        bucket,
        &queue,
        "refresh_interval = \"1s\"\n",
    )
    .start()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || notify_status(&daemon)["errors"]
            .as_u64()
            .is_some_and(|n| n >= 1)),
        "{}",
        daemon.status()
    );
    let status = notify_status(&daemon);
    assert_eq!(status["state"], "failing");
    assert!(
        status["last_error"].as_str().unwrap().contains("SQS"),
        "{status}"
    );
    assert!(!daemon.wait_events("notify_queue_failed").is_empty());
    assert_eq!(sample(&daemon, "heare_auth_notify_queue_up"), Some(0.0));
    let shown = Ctl::new(
        dir.path(),
        &format!("s3://{bucket}/{OBJECT}"),
        &daemon.socket,
    )
    .ok(&["status"]);
    assert!(
        shown.contains("notify queue:") && shown.contains("(FAILING)"),
        "{shown}"
    );
    assert!(shown.contains("queue error:"), "{shown}");
    assert!(sample(&daemon, "heare_auth_notify_errors_total").unwrap() >= 1.0);

    // Polling is the fallback: the revocation still arrives, at the poll interval.
    let took = revoke_and_time(&moto, dir.path(), bucket, &daemon);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(daemon.status()["stale"] == false);

    // The queue appears: the listener recovers on its next (backed-off) try.
    let client = sqs_client(&endpoint);
    block_on(async {
        client
            .create_queue()
            .queue_name("created-later")
            .send()
            .await
    })
    .unwrap()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(40), || notify_status(&daemon)["state"]
            == "receiving"),
        "{}",
        daemon.log()
    );
    assert!(!daemon.wait_events("notify_queue_recovered").is_empty());
}

fn check_config(args: &[&str], config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("heare-authd.toml");
    std::fs::write(&file, config).unwrap();
    std::process::Command::new(binary("heare-authd"))
        .arg("--check-config")
        .arg("--config")
        .arg(&file)
        .args(["--cache", "none"])
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn queue_and_jitter_settings_are_checked() {
    let s3 = ["--store", "s3://bucket/keys.json"];
    let aws = "https://sqs.eu-west-1.amazonaws.com/123456789012/web1";
    let refused = [
        (
            vec!["--store", "file:///tmp/keys.json", "--notify-queue", aws],
            "needs an S3 store",
        ),
        (
            vec![s3[0], s3[1], "--notify-queue", "http://sqs.example.com/1/q"],
            "notify_queue",
        ),
        (
            vec![s3[0], s3[1], "--refresh-jitter", "60%"],
            "refresh_jitter",
        ),
        (
            vec![s3[0], s3[1], "--refresh-jitter", "often"],
            "refresh_jitter",
        ),
    ];
    for (args, why) in refused {
        let output = check_config(&args, "");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    let output = check_config(
        &[s3[0], s3[1]],
        &format!("notify_queue = \"{aws}\"\nrefresh_jitter = 0.25\n"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("refresh_interval = 300s"), "{stdout}");
    assert!(stdout.contains("refresh_jitter = 25%"), "{stdout}");
    let output = check_config(
        &[s3[0], s3[1]],
        &format!("notify_queue = \"{aws}\"\nrefresh_interval = 0\n"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("refresh_interval = (none)"),
        "an explicit 0 keeps polling off: {stdout}"
    );
}

/// Sends `count` copies of `body`, ten per request.
fn send_many(moto: &Moto, queue: &str, body: &str, count: usize) {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry as Entry;
    let client = sqs_client(&moto.endpoint());
    block_on(async {
        for batch in 0..count.div_ceil(10) {
            let entries = (0..10.min(count - batch * 10))
                .map(|i| {
                    Entry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            client
                .send_message_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await?;
        }
        anyhow::Ok(())
    })
    .unwrap()
    .unwrap();
}

/// The reloads the queue asked for, whatever their result.
fn notify_reloads(daemon: &Daemon) -> f64 {
    ["success", "failure", "unchanged"]
        .iter()
        .map(|result| notify_reloads_that(daemon, result))
        .sum()
}

/// The reloads the queue asked for that ended in `result` (0 before the first).
fn notify_reloads_that(daemon: &Daemon, result: &str) -> f64 {
    let series = format!(r#"heare_auth_reloads_total{{trigger="notify",result="{result}"}}"#);
    sample(daemon, &series).unwrap_or(0.0)
}

#[test]
fn a_flood_of_forged_events_costs_at_most_one_reload_a_second_and_none_while_the_store_fails() {
    let moto = Moto::start().unwrap();
    let bucket = "notify-flood";
    let dir = tempfile::tempdir().unwrap();
    let (queue, daemon) = pushed_daemon(&moto, dir.path(), bucket, false);

    let started = Instant::now();
    send_many(&moto, &queue, &s3_event(bucket, OBJECT), 200);
    assert!(wait_until(Duration::from_secs(90), || queued(
        &moto, &queue
    ) == 0));
    let seconds = started.elapsed().as_secs_f64();
    let reloads = notify_reloads(&daemon);
    assert!(reloads >= 1.0, "the events were acted on");
    assert!(
        reloads <= seconds + 1.0,
        "{reloads} reloads in {seconds:.1} s for 200 forged events"
    );
    assert_eq!(messages(&daemon, "reload"), 200);

    // The store now holds a body that does not load: forged events ask for nothing more while
    // the reloader's own backed-off retries run.
    break_key_object(&moto, bucket, &daemon);
    let before = notify_reloads(&daemon);
    send_many(&moto, &queue, &s3_event(bucket, OBJECT), 50);
    assert!(wait_until(Duration::from_secs(60), || queued(
        &moto, &queue
    ) == 0));
    let more = notify_reloads(&daemon) - before;
    assert!(
        more <= 1.0,
        "no reload storm while the store fails: {more} more"
    );
    assert!(valid(&daemon, KEPT), "the last good set is still served");
}

/// Change `seq` of the log of [`STORE_ID`] deleting `key_id`, as heare-authctl writes it (plain:
/// no storage secret), and the name it is stored under: `<key object>.changes/<20 digits>.json`.
fn deletion(seq: u64, key_id: &str) -> (String, Vec<u8>) {
    use heare_auth_store::change::{Author, Change, FORMAT, KeyChange, object_name};
    use heare_auth_store::timestamp;
    let change = Change {
        format: FORMAT.into(),
        seq,
        store_id: STORE_ID.into(),
        operation: "delete".into(),
        keys: vec![KeyChange {
            id: key_id.into(),
            key: None,
        }],
        time: timestamp::format(timestamp::now()),
        author: Author {
            user: "notifytest".into(),
            login: None,
            host: "notifytest".into(),
            aws_principal: None,
        },
        ctl_version: "notifytest".into(),
        reason: None,
    };
    (
        format!("{OBJECT}.changes/{}", object_name(seq)),
        change.encode(None),
    )
}

#[test]
fn a_revocation_in_the_change_log_is_applied_while_the_key_object_fails() {
    let moto = Moto::start().unwrap();
    let bucket = "notify-log-stale";
    let dir = tempfile::tempdir().unwrap();
    let (queue, daemon) = pushed_daemon(&moto, dir.path(), bucket, false);
    assert!(valid(&daemon, KEPT) && valid(&daemon, REVOKED));

    // The key object stops loading: its own event makes the daemon try it, and fail.
    break_key_object(&moto, bucket, &daemon);
    let notify = |result: &str| notify_reloads_that(&daemon, result);
    // After a failed reload the listener asks for none for a backed-off while (under 1 s after
    // the first failure): the change is announced after it.
    std::thread::sleep(Duration::from_millis(1500));
    let (failed_before, answered_before) = (notify("failure"), notify("unchanged"));

    // heare-authctl's revocation: change 1 of the log (the key object is not rewritten), and
    // its S3 event (the bucket's notification sends one too).
    let (name, body) = deletion(1, "key_revoked");
    put_object(&moto, bucket, &name, body);
    send(&moto, &queue, &s3_event(bucket, &name));

    assert!(
        wait_until(Duration::from_secs(10), || !valid(&daemon, REVOKED)),
        "the revocation in the log was not applied while the key object fails: {}",
        daemon.log()
    );
    assert!(valid(&daemon, KEPT), "the other key still verifies");
    let applied = daemon.wait_events("changes_applied");
    assert!(
        applied.iter().any(|e| e["change_seq"] == 1),
        "applied from the log: {applied:?}"
    );
    // The queue's request was answered from the log: not skipped (stale), not falling back to
    // the key object (which would fail).
    assert!(
        wait_until(Duration::from_secs(10), || notify("unchanged")
            > answered_before),
        "the queue's change was not answered by the log: {}",
        metrics(&daemon)
    );
    assert_eq!(notify("failure"), failed_before, "{}", daemon.log());
    let status = daemon.status();
    assert_eq!(status["change_seq"], 1, "{status}");
    assert!(
        status["stale"] == true,
        "the key object was not loaded: {status}"
    );
    assert!(
        daemon.events("refresh_success").is_empty(),
        "{}",
        daemon.log()
    );
}
