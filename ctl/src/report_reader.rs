//! Reading one fleet usage report (the daemon's `UsageReport`, see heare-authd's `usage::fleet`)
//! without building it: each key's usage is handed to the caller as it is parsed, so that a
//! report of a million keys never exists in memory as a million structs — only its body does,
//! and the caller's merge. A report is checked whole first ([`check`]) and only then read into
//! the merge ([`each_key`]), so that one broken at its end adds nothing.

use heare_auth_client::wire::KeyUsage;
use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// What a report says besides its keys.
#[derive(Debug, PartialEq, Eq)]
pub struct ReportHead {
    /// The host it says wrote it (empty when it does not say).
    pub host_id: String,
    /// When it says it was written.
    pub written_at: String,
}

/// Parses `body` as a whole report, keeping nothing of its keys; why it is not one, otherwise.
pub fn check(body: &[u8]) -> Result<ReportHead, String> {
    each_key(body, |_| {}).map_err(|e| {
        format!(
            "not a usage report (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

/// Parses `body` as a report, calling `each` with every key's usage in order.
pub fn each_key(body: &[u8], each: impl FnMut(KeyUsage)) -> Result<ReportHead, serde_json::Error> {
    let mut parser = serde_json::Deserializer::from_slice(body);
    let head = (&mut parser).deserialize_map(ReportVisitor { each })?;
    parser.end()?;
    Ok(head)
}

/// The report object: `host_id`, `written_at` and `keys`, in any order; other fields ignored, as
/// serde's derive does (a newer daemon may add some).
struct ReportVisitor<F> {
    each: F,
}

impl<'de, F: FnMut(KeyUsage)> Visitor<'de> for ReportVisitor<F> {
    type Value = ReportHead;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a usage report")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<ReportHead, A::Error> {
        let mut host_id: Option<String> = None;
        let mut written_at: Option<String> = None;
        let mut keys = false;
        while let Some(field) = map.next_key::<String>()? {
            match field.as_str() {
                "host_id" if host_id.is_none() => host_id = Some(map.next_value()?),
                "written_at" if written_at.is_none() => written_at = Some(map.next_value()?),
                "keys" if !keys => {
                    map.next_value_seed(KeysSeed {
                        each: &mut self.each,
                    })?;
                    keys = true;
                }
                "host_id" => return Err(de::Error::duplicate_field("host_id")),
                "written_at" => return Err(de::Error::duplicate_field("written_at")),
                "keys" => return Err(de::Error::duplicate_field("keys")),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !keys {
            return Err(de::Error::missing_field("keys"));
        }
        Ok(ReportHead {
            host_id: host_id.unwrap_or_default(),
            written_at: written_at.ok_or_else(|| de::Error::missing_field("written_at"))?,
        })
    }
}

/// The `keys` array, one element at a time.
struct KeysSeed<'a, F> {
    each: &'a mut F,
}

impl<'de, F: FnMut(KeyUsage)> DeserializeSeed<'de> for KeysSeed<'_, F> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(KeyUsage)> Visitor<'de> for KeysSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of key usages")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(usage) = seq.next_element::<KeyUsage>()? {
            (self.each)(usage);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heare_auth_client::wire::UsageReport;

    fn usage(id: &str, n: u64) -> KeyUsage {
        KeyUsage {
            key_id: id.into(),
            verifications: n,
            last_verified_at: Some("2026-01-01T00:00:00.000Z".into()),
            last_used_previous_secret: n.is_multiple_of(2),
            rate_limited: None,
        }
    }

    #[test]
    fn reads_what_the_daemon_writes_key_by_key() {
        let report = UsageReport {
            host_id: "web-1".into(),
            written_at: "2026-01-02T00:00:00.000Z".into(),
            keys: vec![usage("a", 1), usage("b", 2)],
        };
        let body = serde_json::to_vec(&report).unwrap();
        let mut seen = Vec::new();
        let head = each_key(&body, |u| seen.push(u)).unwrap();
        assert_eq!(seen, report.keys);
        assert_eq!(head.host_id, "web-1");
        assert_eq!(head.written_at, report.written_at);
        assert_eq!(check(&body).unwrap(), head);
    }

    #[test]
    fn fields_in_any_order_and_unknown_ones_are_fine() {
        let body = br#"{"keys": [], "extra": {"x": [1]}, "written_at": "t"}"#;
        let head = check(body).unwrap();
        assert_eq!(head.host_id, "");
        assert_eq!(head.written_at, "t");
    }

    #[test]
    fn anything_else_is_not_a_report() {
        for body in [
            &br#"{"written_at": "t"}"#[..],
            br#"{"keys": []}"#,
            br#"{"written_at": "t", "keys": [{"key_id": "a"}]}"#,
            br#"{"written_at": "t", "keys": [], "keys": []}"#,
            br#"{"written_at": "t", "keys": []} trailing"#,
            br#"{"written_at": "t", "keys": [{"key_id": "a", "verifications": 1}"#,
            br#"[]"#,
            b"",
        ] {
            assert!(check(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
