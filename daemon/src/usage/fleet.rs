//! The fleet usage report: every `usage_report_interval` (jittered) and at shutdown, this daemon
//! writes its keys' usage to `s3://BUCKET/PREFIX/<host id>.json`, where `heare-authctl usage
//! --fleet` reads and merges every host's. S3 is the only shared part; each host writes only its
//! own object (unconditionally: it has one writer), and a failed write is logged and retried at
//! the next interval.

use crate::config::{ReportPrefix, UsageSettings};
use crate::keyset::ServedKeys;
use crate::schedule::{self, Jitter};
use crate::state::Shared;
use heare_auth_store::{S3Options, StoreUrl, WriteCondition};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the host's id comes from when `host_id` is not configured.
const MACHINE_ID: &str = "/etc/machine-id";

/// The report's name: `host_id`, else `/etc/machine-id`.
pub fn host_id(settings: &UsageSettings) -> anyhow::Result<String> {
    if let Some(id) = &settings.host_id {
        return Ok(id.clone());
    }
    let text = std::fs::read_to_string(MACHINE_ID).map_err(|error| {
        anyhow::anyhow!(
            "usage_report needs a host id: cannot read {MACHINE_ID} ({error}); set host_id"
        )
    })?;
    let id = text.trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        anyhow::bail!("usage_report needs a host id: {MACHINE_ID} is empty or odd; set host_id");
    }
    Ok(id.to_string())
}

/// Where this host's report goes.
pub fn report_url(prefix: &ReportPrefix, host_id: &str) -> StoreUrl {
    StoreUrl::S3 {
        bucket: prefix.bucket.clone(),
        key: format!("{}{host_id}.json", prefix.prefix),
    }
}

/// Refuses a report that would be written over the key store's own object.
pub fn check_not_the_store(
    settings: &UsageSettings,
    store: &StoreUrl,
    host_id: &str,
) -> anyhow::Result<()> {
    if let Some(prefix) = &settings.report
        && report_url(prefix, host_id) == *store
    {
        anyhow::bail!(
            "usage_report with host id {host_id:?} would write over the key store {store}: choose another prefix"
        );
    }
    Ok(())
}

/// Writes the report on its schedule until `stop` turns true, then once more.
pub fn spawn_reporter(
    prefix: ReportPrefix,
    s3: S3Options,
    host_id: String,
    interval: Duration,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let url = report_url(&prefix, &host_id);
        let store = heare_auth_store::open(&url, &s3, 0).await;
        // The first report at a random point of the first interval, so hosts restarted together
        // do not write together; then every interval, give or take a tenth.
        let mut wait = schedule::first_poll(interval);
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = stop.changed() => true,
            };
            let (id, set) = (host_id.clone(), shared.keys_full());
            let body = tokio::task::spawn_blocking(move || report_body(&id, &set))
                .await
                .unwrap_or_default();
            match store.put(body, WriteCondition::Always).await {
                Ok(_) => tracing::debug!(report = %url, "usage_report_written"),
                Err(error) => tracing::warn!(report = %url, %error, "usage_report_failed"),
            }
            if stopping {
                return;
            }
            wait = schedule::poll_wait(interval, Jitter::DEFAULT);
        }
    })
}

/// The report of `set`'s usage (built off the async threads: a million keys take a moment).
fn report_body(host_id: &str, set: &ServedKeys) -> Vec<u8> {
    let report = super::report(set, host_id);
    serde_json::to_vec(&report).unwrap_or_default()
}
