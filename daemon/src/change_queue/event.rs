//! What one queue message says about the key object: an S3 event notification naming our bucket
//! and key or one of its change log's objects (delivered directly, or wrapped in an SNS envelope — raw delivery off — on the
//! bucket → SNS topic → one queue per host fan-out), an event about something else, S3's
//! `s3:TestEvent` (sent when a notification is configured), or anything else.
//!
//! A message is only ever a hint to look: it never carries keys, and the reload it causes is
//! conditional (`If-None-Match`), so a forged one costs at most one 304. Parsing is serde_json's,
//! with its depth limit; nothing here panics on any input, and nothing of a message's content is
//! logged.

use serde::Deserialize;

/// What a message means to this daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// An event for the key object: reload.
    Ours,
    /// An S3 event for another object or bucket, or a test event: nothing to do.
    Ignored,
    /// Not an S3 event, in or out of an SNS envelope.
    Invalid,
}

impl Notice {
    pub const ALL: [Notice; 3] = [Notice::Ours, Notice::Ignored, Notice::Invalid];

    /// The `result` label of `heare_auth_notify_messages_total`.
    pub fn name(self) -> &'static str {
        match self {
            Notice::Ours => "reload",
            Notice::Ignored => "ignored",
            Notice::Invalid => "invalid",
        }
    }
}

/// An SNS notification as SNS delivers it to SQS.
#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: String,
}

/// The parts of an S3 event notification that matter here.
#[derive(Deserialize)]
struct S3Event {
    #[serde(rename = "Records", default)]
    records: Option<Vec<Record>>,
    /// `s3:TestEvent` on the test message S3 sends when a notification is configured.
    #[serde(rename = "Event", default)]
    event: Option<String>,
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventSource", default)]
    source: Option<String>,
    s3: Option<Entity>,
}

#[derive(Deserialize)]
struct Entity {
    bucket: Named,
    object: Keyed,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

#[derive(Deserialize)]
struct Keyed {
    key: String,
}

/// The longest body read: S3 events are 1–4 KiB, in an SNS envelope a little more; a longer one
/// is not parsed at all (a megabyte of `{}` records would cost tens of megabytes and tens of
/// milliseconds of a thread that also serves verifications).
pub const MAX_BODY: usize = 64 * 1024;

/// What `body` says about `bucket`/`key`.
pub fn classify(body: &str, bucket: &str, key: &str) -> Notice {
    match parse(body) {
        Some(event) => notice_of(&event, bucket, key),
        None => Notice::Invalid,
    }
}

/// What an event of ours names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// The key object.
    KeyObject,
    /// Change `n` of its log.
    Change(u64),
}

/// The objects of ours a message names (none for any other message).
pub fn named(body: &str, bucket: &str, key: &str) -> Vec<Naming> {
    let Some(event) = parse(body) else {
        return Vec::new();
    };
    let records = event.records.unwrap_or_default();
    records
        .iter()
        .filter(|record| record.source.as_deref() == Some("aws:s3"))
        .filter_map(|record| record.s3.as_ref())
        .filter(|s3| s3.bucket.name == bucket)
        .filter_map(|s3| decoded_key(&s3.object.key))
        .filter_map(|named| match named == key {
            true => Some(Naming::KeyObject),
            false => change_of(&named, key).map(Naming::Change),
        })
        .collect()
}

/// The S3 event in a message, directly or in an SNS envelope; `None` for anything else.
fn parse(body: &str) -> Option<S3Event> {
    if body.len() > MAX_BODY {
        return None;
    }
    match serde_json::from_str::<SnsEnvelope>(body) {
        Ok(envelope) if envelope.kind == "Notification" => {
            serde_json::from_str::<S3Event>(&envelope.message).ok()
        }
        _ => serde_json::from_str::<S3Event>(body).ok(),
    }
}

fn notice_of(event: &S3Event, bucket: &str, key: &str) -> Notice {
    if event.event.as_deref() == Some("s3:TestEvent") {
        return Notice::Ignored;
    }
    let Some(records) = &event.records else {
        return Notice::Invalid;
    };
    let ours = records.iter().any(|record| {
        record.source.as_deref() == Some("aws:s3")
            && record.s3.as_ref().is_some_and(|s3| {
                s3.bucket.name == bucket
                    && decoded_key(&s3.object.key).is_some_and(|named| names_ours(&named, key))
            })
    });
    if ours { Notice::Ours } else { Notice::Ignored }
}

/// An event's object key, which S3 writes form-encoded (`+` for a space, `%XX` escapes); `None`
/// when the escapes do not decode to UTF-8.
/// Whether an event's object is the key object or one of its change log's objects.
fn names_ours(named: &str, key: &str) -> bool {
    named == key || change_of(named, key).is_some()
}

/// The number of the change object `named` is in the log of `key`.
fn change_of(named: &str, key: &str) -> Option<u64> {
    named
        .strip_prefix(key)
        .and_then(|rest| rest.strip_prefix(".changes/"))
        .and_then(heare_auth_store::change::seq_of_name)
}

fn decoded_key(encoded: &str) -> Option<String> {
    let spaced = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|key| key.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3_event(bucket: &str, key: &str) -> String {
        serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                   "object": {"key": key, "size": 12, "eTag": "abc"}}
        }]})
        .to_string()
    }

    fn in_sns(message: &str) -> String {
        serde_json::json!({
            "Type": "Notification", "MessageId": "1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:keys", "Message": message,
        })
        .to_string()
    }

    #[test]
    fn an_event_for_the_object_reloads_direct_or_through_sns() {
        let event = s3_event("auth", "prod/keys.json");
        assert_eq!(classify(&event, "auth", "prod/keys.json"), Notice::Ours);
        assert_eq!(
            classify(&in_sns(&event), "auth", "prod/keys.json"),
            Notice::Ours
        );
    }

    #[test]
    fn an_event_for_a_change_object_of_the_log_reloads() {
        let change = s3_event("auth", "prod/keys.json.changes/00000000000000000042.json");
        assert_eq!(classify(&change, "auth", "prod/keys.json"), Notice::Ours);
        for other in [
            "prod/keys.json.changes/42.json",
            "prod/keys.json.changes/00000000000000000042.json.tmp",
            "prod/other.json.changes/00000000000000000042.json",
        ] {
            let event = s3_event("auth", other);
            assert_eq!(classify(&event, "auth", "prod/keys.json"), Notice::Ignored);
        }
    }

    #[test]
    fn a_message_names_the_key_object_or_its_changes() {
        let key = "prod/keys.json";
        let change = s3_event("auth", "prod/keys.json.changes/00000000000000000042.json");
        assert_eq!(named(&in_sns(&change), "auth", key), [Naming::Change(42)]);
        assert_eq!(
            named(&s3_event("auth", key), "auth", key),
            [Naming::KeyObject]
        );
        assert!(named(&s3_event("other", key), "auth", key).is_empty());
        assert!(named("garbage", "auth", key).is_empty());
    }

    #[test]
    fn events_for_other_objects_are_ignored() {
        let other_key = s3_event("auth", "prod/other.json");
        let other_bucket = s3_event("elsewhere", "prod/keys.json");
        assert_eq!(
            classify(&other_key, "auth", "prod/keys.json"),
            Notice::Ignored
        );
        assert_eq!(
            classify(&in_sns(&other_bucket), "auth", "prod/keys.json"),
            Notice::Ignored
        );
    }

    #[test]
    fn keys_are_form_decoded() {
        let event = s3_event("auth", "team+a/keys%3D1.json");
        assert_eq!(classify(&event, "auth", "team a/keys=1.json"), Notice::Ours);
        assert_eq!(
            classify(&event, "auth", "team+a/keys%3D1.json"),
            Notice::Ignored
        );
    }

    #[test]
    fn the_test_event_is_ignored() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-01T00:00:00Z","Bucket":"auth"}"#;
        assert_eq!(classify(test, "auth", "keys.json"), Notice::Ignored);
        assert_eq!(
            classify(&in_sns(test), "auth", "keys.json"),
            Notice::Ignored
        );
    }

    #[test]
    fn anything_else_is_invalid() {
        for body in [
            "",
            "not json",
            "{}",
            "[]",
            r#"{"Records": "x"}"#,
            r#"{"Type":"Notification","Message":"not json"}"#,
            &"[".repeat(100_000),
            &format!("{}{}", s3_event("auth", "keys.json"), " ".repeat(MAX_BODY)),
        ] {
            assert_eq!(
                classify(body, "auth", "keys.json"),
                Notice::Invalid,
                "{body:.40}"
            );
        }
    }

    #[test]
    fn a_record_from_another_source_does_not_count() {
        let event = s3_event("auth", "keys.json").replace("aws:s3", "aws:sqs");
        assert_eq!(classify(&event, "auth", "keys.json"), Notice::Ignored);
    }
}
