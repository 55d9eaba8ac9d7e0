//! Where `heare-authctl usage` gets its numbers: the local daemon (`GET /usage`) or every host's
//! report under the configured `usage_report` prefix in S3, merged — verifications summed, the
//! latest use kept, and each host's own figures for `--detailed`.

use crate::error::CtlError;
use crate::keyview::shown;
use heare_auth_client::transport;
use heare_auth_client::wire::{KeyUsage, UsageReport};
use heare_auth_store::timestamp::{self, UnixMillis};
use heare_auth_store::{Fetched, S3Options, StoreUrl};
use heare_authd::config::ReportPrefix;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Larger reports are skipped (a million used keys make a report of about 100 MB; 64 MiB holds
/// about 600,000).
const MAX_REPORT_BYTES: u64 = 64 << 20;

/// One key's usage over the hosts that reported it.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub verifications: u64,
    /// Unix milliseconds of the latest use on any host (a time that does not parse is none).
    pub last_verified_at: Option<UnixMillis>,
    pub last_used_previous_secret: bool,
    /// Per host: (host id, that host's usage).
    pub hosts: Vec<(String, KeyUsage)>,
}

impl Merged {
    fn add(&mut self, host: &str, usage: &KeyUsage) {
        self.verifications = self.verifications.saturating_add(usage.verifications);
        let at = usage
            .last_verified_at
            .as_deref()
            .and_then(|text| timestamp::parse(text).ok());
        if at > self.last_verified_at {
            self.last_verified_at = at;
            self.last_used_previous_secret = usage.last_used_previous_secret;
        }
        self.hosts.push((host.to_string(), usage.clone()));
    }
}

/// Key id → usage.
pub type UsageByKey = BTreeMap<String, Merged>;

/// The local daemon's usage.
pub fn local(socket: &Path) -> Result<UsageByKey, CtlError> {
    let answer = transport::call(socket, "GET", "/usage", b"", Duration::from_secs(60))
        .map_err(|e| CtlError::Other(e.to_string()))?;
    if answer.status != 200 {
        return Err(CtlError::Other(crate::daemon_link::describe_refusal(
            answer.status,
            &answer.body,
        )));
    }
    let listed: Vec<KeyUsage> = serde_json::from_slice(&answer.body).map_err(|_| {
        CtlError::Other("heare-authd's /usage answer is not what this version expects".into())
    })?;
    let mut merged = UsageByKey::new();
    for usage in &listed {
        merged
            .entry(usage.key_id.clone())
            .or_default()
            .add("local", usage);
    }
    Ok(merged)
}

/// Reports read at most: a fleet larger than this is a mistake in the prefix, or an attack.
const MAX_REPORTS: usize = 10_000;

/// A report's times may run this far ahead of this clock; later ones are ignored (a forged
/// "used in 9999" would keep a key out of `--unused-for` for ever).
const MAX_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// Every host's report under `prefix`, merged; unreadable reports are named on stderr and left
/// out. Returns the merge and the number of hosts read. Only `PREFIX/<host>.json` objects count
/// (a host name of letters, digits, `-`, `_` and `.`), at most [`MAX_REPORTS`] of them; a host
/// is named by its object, never by what the report says.
pub async fn fleet(prefix: &ReportPrefix, s3: &S3Options) -> Result<(UsageByKey, usize), CtlError> {
    let keys =
        heare_auth_store::list_objects(&prefix.bucket, &prefix.prefix, s3, MAX_REPORTS + 1).await?;
    if keys.len() > MAX_REPORTS {
        return Err(CtlError::Other(format!(
            "over {MAX_REPORTS} objects under {prefix}: is usage_report the prefix the daemons write?"
        )));
    }
    let now = timestamp::now();
    let mut merged = UsageByKey::new();
    let mut hosts = 0;
    for key in &keys {
        let Some(host) = host_of(&prefix.prefix, key) else {
            continue;
        };
        match read_report(&prefix.bucket, key, s3).await {
            Ok(report) => {
                hosts += 1;
                warn_if_odd(&report, &host, now);
                for usage in &report.keys {
                    let usage = believable(usage, now);
                    merged
                        .entry(usage.key_id.clone())
                        .or_default()
                        .add(&host, &usage);
                }
            }
            Err(why) => eprintln!(
                "warning: skipping {}: {why}",
                shown(&format!("s3://{}/{key}", prefix.bucket))
            ),
        }
    }
    Ok((merged, hosts))
}

async fn read_report(bucket: &str, key: &str, s3: &S3Options) -> Result<UsageReport, String> {
    let url = StoreUrl::S3 {
        bucket: bucket.to_string(),
        key: key.to_string(),
    };
    let store = heare_auth_store::open(&url, s3, MAX_REPORT_BYTES).await;
    match store.fetch(None).await.map_err(|e| e.to_string())? {
        Fetched::Body { body, .. } => serde_json::from_slice(&body).map_err(|e| {
            format!(
                "not a usage report (line {}, column {})",
                e.line(),
                e.column()
            )
        }),
        Fetched::Missing | Fetched::NotModified => Err("it went away while being read".into()),
    }
}

/// The host a report object stands for: `PREFIX/<host>.json` with a plain host name; `None` for
/// any other object (nested, other suffix, odd characters).
fn host_of(prefix: &str, key: &str) -> Option<String> {
    let name = key.strip_prefix(prefix)?.strip_suffix(".json")?;
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    plain.then(|| name.to_string())
}

/// Warns (once per report) of a report that names another host, or is over a day old.
fn warn_if_odd(report: &UsageReport, host: &str, now: UnixMillis) {
    if !report.host_id.is_empty() && report.host_id != host {
        eprintln!(
            "warning: the report of {host} says it is {}; shown as {host}",
            shown(&report.host_id)
        );
    }
    let written = timestamp::parse(&report.written_at).ok();
    if written.is_none_or(|at| now - at > 24 * 3600 * 1000) {
        eprintln!(
            "warning: the report of {host} was written at {} (over a day ago: a retired host?)",
            shown(&report.written_at)
        );
    }
}

/// `usage` with a last use more than a day in the future taken as unknown.
fn believable(usage: &KeyUsage, now: UnixMillis) -> KeyUsage {
    let future = usage
        .last_verified_at
        .as_deref()
        .and_then(|text| timestamp::parse(text).ok())
        .is_some_and(|at| at > now + MAX_AHEAD_MS);
    let mut usage = usage.clone();
    if future {
        usage.last_verified_at = None;
        usage.last_used_previous_secret = false;
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(n: u64, at: Option<&str>, previous: bool) -> KeyUsage {
        KeyUsage {
            key_id: "k".into(),
            verifications: n,
            last_verified_at: at.map(str::to_string),
            last_used_previous_secret: previous,
        }
    }

    #[test]
    fn only_plain_report_names_count() {
        assert_eq!(host_of("u/", "u/web-1.json"), Some("web-1".to_string()));
        assert_eq!(host_of("u/", "u/a/b.json"), None);
        assert_eq!(host_of("u/", "u/evil\rline.json"), None);
        assert_eq!(host_of("u/", "u/.json"), None);
        assert_eq!(host_of("u/", "u/x.txt"), None);
    }

    #[test]
    fn a_use_in_the_far_future_is_not_believed() {
        let now = timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let forged = believable(&usage(1, Some("9999-12-31T00:00:00Z"), true), now);
        assert_eq!(forged.last_verified_at, None);
        assert!(!forged.last_used_previous_secret);
        assert_eq!(forged.verifications, 1);
        let fine = believable(&usage(1, Some("2026-01-01T00:00:00Z"), false), now);
        assert!(fine.last_verified_at.is_some());
    }

    #[test]
    fn merging_sums_counts_and_keeps_the_latest_use() {
        let mut merged = Merged::default();
        merged.add("a", &usage(3, Some("2026-01-02T00:00:00.000Z"), true));
        merged.add("b", &usage(4, Some("2026-01-01T00:00:00.000Z"), false));
        merged.add("c", &usage(0, None, false));
        assert_eq!(merged.verifications, 7);
        let latest = timestamp::parse("2026-01-02T00:00:00.000Z").ok();
        assert_eq!(merged.last_verified_at, latest);
        assert!(merged.last_used_previous_secret);
        assert_eq!(merged.hosts.len(), 3);
    }
}
