//! `--overlay N`: verify throughput with N keys changed through the change log (in the daemon's
//! overlay, not yet folded into its loaded set) against the same keys with an empty overlay.
//!
//! Two daemons of this build serve the same key file (the first key count's, at change 0): one
//! with a log of N / 1,000 change objects beside it, each changing the scopes of 1,000 keys (the
//! secrets stay, so those keys verify through the overlay), the other without. Each run measures
//! both in turn (the order alternating) at `--connections` for `--seconds`; the verifies draw on
//! every key, so about N / count of them are answered from the overlay and the rest pass it.

use super::{
    Contestant, Options, exchange, interleaved, median, socket, start_daemon, stop, write_keys,
};
use heare_auth_store::change::{KeyChange, MAX_KEYS};
use heare_auth_tests::change_cost::{at_change_zero, change_object};
use std::path::Path;

/// Runs the comparison and prints the medians and their ratio.
pub fn run(options: &Options, changed: usize) -> anyhow::Result<()> {
    let count = options.counts.first().copied().unwrap_or(100_000);
    anyhow::ensure!(
        changed <= count,
        "--overlay {changed} is more than {count} keys"
    );
    let with = tempfile::tempdir()?;
    let without = tempfile::tempdir()?;
    let (ids, secrets) = write_keys(&without.path().join("keys.json"), count)?;
    let body = at_change_zero(&std::fs::read(without.path().join("keys.json"))?);
    std::fs::write(without.path().join("keys.json"), &body)?;
    std::fs::write(with.path().join("keys.json"), &body)?;
    write_log(with.path(), &ids[..changed])?;
    let binary = std::env::current_exe()?.with_file_name("heare-authd");
    let config = "usage_path = \"none\"\n";
    let args = ["--log-level".to_string(), "warn".to_string()];
    let (mut overlaid, _) = start_daemon(with.path(), &secrets, config, &binary, &args)?;
    let (mut plain, _) = start_daemon(without.path(), &secrets, config, &binary, &args)?;
    let status = exchange(
        &socket(with.path()),
        b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
    )?;
    let wanted = format!("\"overlay_keys\":{changed},");
    let contestants = [
        Contestant {
            dir: with.path(),
            pid: overlaid.id(),
        },
        Contestant {
            dir: without.path(),
            pid: plain.id(),
        },
    ];
    let measured = match status.contains(&wanted) {
        true => interleaved(options, contestants, &secrets),
        false => Err(anyhow::anyhow!(
            "the overlay is not {changed} keys: {status}"
        )),
    };
    stop(&mut overlaid);
    stop(&mut plain);
    let [with_runs, without_runs] = measured?;
    let (a, b) = (median(&with_runs.rates), median(&without_runs.rates));
    println!(
        "{count} keys, {changed} in the overlay: {a:.0} verifies/s ({:.2} CPU µs/verify); empty overlay: {b:.0} ({:.2}); ratio {:.3}, CPU per verify {:.0}% (runs: {:.0?} vs {:.0?})",
        with_runs.cpu_per_verify,
        without_runs.cpu_per_verify,
        a / b,
        with_runs.cpu_per_verify / without_runs.cpu_per_verify * 100.0,
        with_runs.rates,
        without_runs.rates
    );
    Ok(())
}

/// The change log beside `dir`'s key file: `ids` given a scope, 1,000 keys a change object.
fn write_log(dir: &Path, ids: &[String]) -> anyhow::Result<()> {
    let log = dir.join("keys.json.changes");
    std::fs::create_dir(&log)?;
    let key_file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys.json"))?)?;
    let stored: std::collections::HashMap<&str, &serde_json::Value> = key_file["keys"]
        .as_array()
        .map(|keys| {
            keys.iter()
                .map(|k| (k["id"].as_str().unwrap_or(""), k))
                .collect()
        })
        .unwrap_or_default();
    for (n, batch) in ids.chunks(MAX_KEYS).enumerate() {
        let keys = batch
            .iter()
            .map(|id| scoped(id, stored.get(id.as_str()).copied()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let seq = n as u64 + 1;
        std::fs::write(
            log.join(format!("{seq:020}.json")),
            change_object(seq, "scopes", keys),
        )?;
    }
    Ok(())
}

/// Key `id`'s stored form with a scope: its secret as a `secret_hash`.
fn scoped(id: &str, key: Option<&serde_json::Value>) -> anyhow::Result<KeyChange> {
    let mut key = key
        .and_then(|k| k.as_object().cloned())
        .ok_or_else(|| anyhow::anyhow!("key {id} is not in the file"))?;
    let secret = key
        .remove("secret")
        .and_then(|s| s.as_str().map(str::to_owned));
    let secret = secret.ok_or_else(|| anyhow::anyhow!("key {id} has no secret"))?;
    let hash = heare_auth_store::secret_hash::SecretDigest::of_secret(&secret).to_field();
    key.insert("secret_hash".into(), hash.into());
    key.insert("scopes".into(), serde_json::json!(["read"]));
    Ok(KeyChange {
        id: id.to_string(),
        key: Some(key),
    })
}
