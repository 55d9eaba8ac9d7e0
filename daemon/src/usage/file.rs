//! The usage state file (`usage_path`, by default `usage.json` in the state directory): written
//! every minute and at shutdown, read at start, so a restart keeps every key's count and last use.
//!
//! Written like the cache (`crate::cache`): atomically, mode 0600, a link or anything but a
//! regular file at the name refused. A file that cannot be read or parsed is logged and the daemon
//! starts counting from zero: usage is information, never a reason not to serve.

use super::readings;
use crate::cache;
use crate::keyset::ServedKeys;
use crate::state::Shared;
use heare_auth_client::wire::UsageReport;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the file is written while the daemon runs.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// Adds the usage saved at `path` to `set` (at start, before serving).
pub fn restore(path: &Path, set: &ServedKeys) {
    // What the keys of `set` can need (ids of up to a few hundred bytes), so a planted file
    // cannot hold up or exhaust the start.
    let limit = 1_048_576 + 512 * set.len() as u64;
    let body = match cache::read(path, limit) {
        Ok((body, _)) => body,
        Err(error) if error.is_not_found() => return,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "usage_file_unreadable");
            return;
        }
    };
    match serde_json::from_slice::<UsageReport>(&body) {
        Ok(report) => set.absorb_usage(readings(&report.keys)),
        Err(error) => tracing::warn!(
            path = %path.display(),
            line = error.line(),
            column = error.column(),
            "usage_file_not_valid"
        ),
    }
}

/// Writes the usage of `set` to `path`.
pub fn save(path: &Path, set: &ServedKeys) {
    let report = super::report(set, "");
    let body = serde_json::to_vec(&report).unwrap_or_default();
    if let Err(error) = cache::write(path, &body) {
        tracing::warn!(path = %path.display(), %error, "usage_file_write_failed");
    }
}

/// Saves every [`SAVE_INTERVAL`] and once more when `stop` turns true.
pub fn spawn_saver(
    path: PathBuf,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now() + SAVE_INTERVAL;
        let mut ticks = tokio::time::interval_at(start, SAVE_INTERVAL);
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                _ = stop.changed() => true,
            };
            let (path, set) = (path.clone(), shared.keys_full());
            let _ = tokio::task::spawn_blocking(move || save(&path, &set)).await;
            if stopping {
                return;
            }
        }
    })
}
