//! Where `heare-authctl usage` gets its numbers: the local daemon (`GET /usage`) or every host's
//! report under the configured `usage_report` prefix in S3, merged — verifications summed, the
//! latest use kept, and each host's own figures for `--detailed`.

use crate::error::CtlError;
use heare_auth_client::transport;
use heare_auth_client::wire::{KeyUsage, UsageReport};
use heare_auth_store::timestamp::{self, UnixMillis};
use heare_auth_store::{Fetched, S3Options, StoreUrl};
use heare_authd::config::ReportPrefix;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Larger reports are skipped (a million keys' report is about 100 MB).
const MAX_REPORT_BYTES: u64 = 512 << 20;

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

/// Every host's report under `prefix`, merged; unreadable reports are named on stderr and left
/// out. Returns the merge and the number of hosts read.
pub async fn fleet(prefix: &ReportPrefix, s3: &S3Options) -> Result<(UsageByKey, usize), CtlError> {
    let keys = heare_auth_store::list_objects(&prefix.bucket, &prefix.prefix, s3).await?;
    let mut merged = UsageByKey::new();
    let mut hosts = 0;
    for key in keys.into_iter().filter(|k| k.ends_with(".json")) {
        match read_report(&prefix.bucket, &key, s3).await {
            Ok(report) => {
                hosts += 1;
                for usage in &report.keys {
                    let host = host_name(&report, &key);
                    merged
                        .entry(usage.key_id.clone())
                        .or_default()
                        .add(&host, usage);
                }
            }
            Err(why) => eprintln!("warning: skipping s3://{}/{key}: {why}", prefix.bucket),
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

/// The report's host id, else its object name without the prefix and `.json`.
fn host_name(report: &UsageReport, key: &str) -> String {
    if !report.host_id.is_empty() {
        return report.host_id.clone();
    }
    let name = key.rsplit('/').next().unwrap_or(key);
    name.trim_end_matches(".json").to_string()
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
