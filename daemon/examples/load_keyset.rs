//! Times building a key set from a key file: `cargo run --release -p heare-authd --example
//! load_keyset -- FILE` (the file as `heare-auth-bench` writes it). Splits parse+index time from
//! the read, so load-time regressions can be found without starting the daemon.

use heare_authd::keyset::KeySet;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: load_keyset FILE"))?;
    let started = Instant::now();
    let body = std::fs::read(&path)?;
    let read = started.elapsed();
    let started = Instant::now();
    let (keys, skipped) = KeySet::from_json(&body)?;
    let built = started.elapsed();
    println!(
        "{} keys ({} skipped) from {} MB: read {:?}, parse+index {:?}, heap {} B/key",
        keys.len(),
        skipped.len(),
        body.len() / 1_000_000,
        read,
        built,
        keys.heap_bytes() / keys.len().max(1)
    );
    Ok(())
}
