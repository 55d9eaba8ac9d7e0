//! The fleet simulation (issue 16), small enough for CI: the real `heare-auth-fleet-sim` binary
//! runs 5 real daemons in both modes (polling every 2 s; push through moto's S3 → SNS → SQS)
//! with 3 revocations and a 6 s S3 outage, and its JSON must show every revocation reaching
//! every daemon within the targets, requests counted, and a calm recovery. Also here: the push
//! wiring itself delivers each change of the key file (and only of it) to every queue, in an SNS
//! envelope or raw. Needs `moto_server` (tests/run installs it).

use heare_auth_tests::daemon::binary;
use heare_auth_tests::fleet::moto::{Moto, block_on, s3_client, sqs_client};
use heare_auth_tests::fleet::push::wire_push;
use serde_json::Value;
use std::process::Command;

const OBJECT: &str = "keys.json";

/// Every message now in `queue` (bodies), waiting up to 1 s for the first.
fn drain(endpoint: &str, queue: &str) -> Vec<String> {
    block_on(async {
        let sqs = sqs_client(endpoint);
        let mut bodies = Vec::new();
        loop {
            let answer = sqs
                .receive_message()
                .queue_url(queue)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .expect("ReceiveMessage");
            if answer.messages().is_empty() {
                return bodies;
            }
            bodies.extend(
                answer
                    .messages()
                    .iter()
                    .filter_map(|m| m.body().map(str::to_owned)),
            );
            for message in answer.messages() {
                sqs.delete_message()
                    .queue_url(queue)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .expect("DeleteMessage");
            }
        }
    })
    .expect("a runtime")
}

fn put(endpoint: &str, bucket: &str, key: &str) {
    block_on(async {
        s3_client(endpoint)
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(b"{\"keys\": []}".to_vec().into())
            .send()
            .await
            .expect("PutObject")
    })
    .expect("a runtime");
}

/// The S3 event a message carries: the body itself (raw), or its SNS envelope's `Message`.
fn s3_event(body: &str, raw: bool) -> Value {
    let outer: Value = serde_json::from_str(body).expect("a JSON message");
    if raw {
        return outer;
    }
    assert_eq!(outer["Type"], "Notification", "{body}");
    serde_json::from_str(outer["Message"].as_str().expect("Message is a string")).expect("JSON")
}

#[test]
fn push_wiring_delivers_each_change_of_the_key_file_to_every_queue() {
    let moto = Moto::start().expect("moto_server starts");
    let endpoint = moto.endpoint();
    for (bucket, raw) in [("fleet-envelope", false), ("fleet-raw", true)] {
        block_on(async {
            s3_client(&endpoint)
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
        })
        .expect("a runtime")
        .expect("CreateBucket");
        let queues = wire_push(&endpoint, bucket, OBJECT, 3, raw).expect("wire_push");
        assert_eq!(queues.len(), 3);
        for queue in &queues {
            // S3 tests the configuration with an s3:TestEvent when it is put, as on AWS.
            let test = drain(&endpoint, queue);
            assert_eq!(test.len(), 1, "{test:?}");
            assert_eq!(s3_event(&test[0], raw)["Event"], "s3:TestEvent");
        }
        put(&endpoint, bucket, "other.json");
        put(&endpoint, bucket, OBJECT);
        for queue in &queues {
            let bodies = drain(&endpoint, queue);
            assert_eq!(
                bodies.len(),
                1,
                "one message, for {OBJECT} only: {bodies:?}"
            );
            let record = &s3_event(&bodies[0], raw)["Records"][0];
            assert_eq!(record["eventName"], "ObjectCreated:Put");
            assert_eq!(record["s3"]["bucket"]["name"], bucket);
            assert_eq!(record["s3"]["object"]["key"], OBJECT);
        }
    }
}

#[test]
fn a_small_fleet_meets_the_targets_in_both_modes() {
    let daemon = binary("heare-authd");
    let bin_dir = daemon.parent().expect("the binaries' directory");
    let output = Command::new(binary("heare-auth-fleet-sim"))
        .args(["--mode", "both", "--daemons", "5", "--revocations", "3"])
        .args(["--interval", "2", "--outage", "6", "--keys", "20", "--json"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .expect("run heare-auth-fleet-sim");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{stderr}"));
    let modes = report["modes"].as_array().expect("modes");
    assert_eq!(modes.len(), 2, "{report:#}");
    for mode in modes {
        check_mode(mode);
    }
    assert!(output.status.success(), "{}\n{stderr}", output.status);
    assert_eq!(report["targets_met"], true);
}

fn check_mode(mode: &Value) {
    let name = mode["mode"].as_str().expect("mode name");
    let number = |field: &str| mode[field].as_f64().unwrap_or(f64::NAN);
    let count = |class: &str| mode["counts"][class].as_u64().unwrap_or(0);
    assert_eq!(mode["revocations"], 3, "{name}: {mode:#}");
    assert_eq!(
        mode["reached_all"], 3,
        "{name}: a revocation missed a daemon: {mode:#}"
    );
    match name {
        "polling" => assert!(number("max_seconds") <= 1.1 * 2.0 + 1.0, "{mode:#}"),
        "push" => {
            assert!(number("p99_seconds") <= 2.0, "{mode:#}");
            let receives = count("sqs_receive_messages") + count("sqs_receive_empty");
            assert!(receives > 0, "no SQS receive counted: {mode:#}");
        }
        other => panic!("unexpected mode {other}"),
    }
    assert!(
        count("s3_get_200") + count("s3_get_304") > 0,
        "no S3 GET counted: {mode:#}"
    );
    assert!(
        count("s3_get_200") >= 3 * 5,
        "each change fetched by each daemon: {mode:#}"
    );
    let ratio = mode["recovery"]["ratio_s3"]
        .as_f64()
        .expect("a recovery figure");
    assert!(ratio <= 3.0, "{name}: the recovery bunched up: {mode:#}");
    assert_eq!(mode["exited"].as_array().map(Vec::len), Some(0), "{mode:#}");
}
