//! Per-key usage beyond one key set: carried into each new set at a reload ([`carry`], with the
//! rate limits' state, [`carry_rate_states`]), saved in
//! the state directory and read back at start ([`file`]), listed by `GET /usage` ([`entries`]).
//! The counting itself is the key set's ([`crate::keyset`]).

pub mod file;
pub mod fleet;

use crate::keyset::{ServedKeys, UsageReading};
use crate::state::Shared;
use heare_auth_client::wire::{KeyUsage, UsageReport};
use heare_auth_store::timestamp;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a reload waits for the requests still using the old set before carrying its usage.
const READERS_GRACE: Duration = Duration::from_secs(5);

/// Carries the usage of `old` (just replaced) into the set now served. Waits until no request
/// holds `old` any more (a verify holds it for microseconds), so no verification is lost, then
/// adds on a blocking thread (a million ids are hashed).
pub async fn carry(old: Arc<ServedKeys>, shared: &Shared) {
    let waiting = Instant::now();
    while Arc::strong_count(&old) > 1 && waiting.elapsed() < READERS_GRACE {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let new = shared.keys_full();
    let joined = tokio::task::spawn_blocking(move || {
        new.absorb_usage(old.usage());
        new.absorb_rate_states(old.rate_states(), true);
    })
    .await;
    if let Err(error) = joined {
        tracing::error!(%error, "usage_carry_failed");
    }
}

/// Gives the keys of `new` (about to be published) the rate state their ids have in `old` (still
/// served), so that a reload never refills a bucket. Requests `old` accepts meanwhile are added
/// by [`carry`] once it has no reader left (the later arrival time wins; refusals are counted
/// there, once).
pub async fn carry_rate_states(old: Arc<ServedKeys>, new: Arc<ServedKeys>) {
    let joined =
        tokio::task::spawn_blocking(move || new.absorb_rate_states(old.rate_states(), false)).await;
    if let Err(error) = joined {
        tracing::error!(%error, "rate_state_carry_failed");
    }
}

/// Every key of `set` with its usage, as `GET /usage` lists them.
pub fn entries(set: &ServedKeys) -> Vec<KeyUsage> {
    set.usage()
        .map(|(id, reading)| entry(id, reading))
        .collect()
}

/// The keys of `set` that have been used, for the state file and fleet reports.
pub fn used_entries(set: &ServedKeys) -> Vec<KeyUsage> {
    set.usage()
        .filter(|(_, reading)| reading.verifications > 0)
        .map(|(id, reading)| entry(id, reading))
        .collect()
}

/// The report of `set`'s used keys, written now by `host_id` (empty for the local state file).
pub fn report(set: &ServedKeys, host_id: &str) -> UsageReport {
    UsageReport {
        host_id: host_id.to_string(),
        written_at: timestamp::format(timestamp::now()),
        keys: used_entries(set),
    }
}

fn entry(id: &str, reading: UsageReading) -> KeyUsage {
    KeyUsage {
        key_id: id.to_string(),
        verifications: reading.verifications,
        last_verified_at: reading.last_verified_at.map(timestamp::format),
        last_used_previous_secret: reading.last_used_previous_secret,
        rate_limited: reading.rate_limited,
    }
}

/// The readings of `entries` (from a file or a report); entries with an unreadable time keep
/// their count and lose the time.
pub fn readings(entries: &[KeyUsage]) -> impl Iterator<Item = (&str, UsageReading)> {
    entries.iter().map(|entry| {
        let last = entry
            .last_verified_at
            .as_deref()
            .and_then(|at| timestamp::parse(at).ok());
        let reading = UsageReading {
            verifications: entry.verifications,
            last_verified_at: last,
            last_used_previous_secret: entry.last_used_previous_secret,
            rate_limited: None,
        };
        (entry.key_id.as_str(), reading)
    })
}
