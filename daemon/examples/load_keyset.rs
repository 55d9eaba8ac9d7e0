//! Times loading a key file the way the daemon does: `cargo run --release -p heare-authd --example
//! load_keyset -- FILE [THREADS] [--no-fast-path]` (the file as `heare-auth-bench --write-keys`
//! writes it). Reads it through the file store, then builds the key set with THREADS threads
//! (default: one per CPU), and prints the two times apart, so load-time regressions can be found
//! without starting the daemon. `--no-fast-path` sets [`Plan::fast_path`] off: every key object is
//! parsed by serde_json instead of the hand-written parser (the module doc of
//! `daemon/src/keyset/load.rs` has the measured difference).

use heare_auth_store::{Fetched, FileStore, KeyStore};
use heare_authd::keyset::{KeySet, Plan};
use std::time::Instant;

const USAGE: &str = "usage: load_keyset FILE [THREADS] [--no-fast-path]";

fn main() -> anyhow::Result<()> {
    let (path, plan) = arguments()?;
    let store = FileStore::new(std::path::absolute(&path)?, 4 << 30);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let Fetched::Body { body, .. } = runtime.block_on(store.fetch(None))? else {
        anyhow::bail!("{path}: no such file");
    };
    let read = started.elapsed();
    let started = Instant::now();
    let (keys, skipped) = KeySet::from_json_with(&body, plan)?;
    let built = started.elapsed();
    println!(
        "{} keys ({} skipped) from {} MB with {} threads, fast path {}: read {:?}, parse+index {:?}, heap {} B/key",
        keys.len(),
        skipped.len(),
        body.len() / 1_000_000,
        plan.threads,
        if plan.fast_path { "on" } else { "off" },
        read,
        built,
        keys.heap_bytes() / keys.len().max(1)
    );
    Ok(())
}

/// The file and the plan the command line asks for.
fn arguments() -> anyhow::Result<(String, Plan)> {
    let mut plan = Plan::for_this_host();
    let mut positional = Vec::new();
    for argument in std::env::args().skip(1) {
        match argument.as_str() {
            "--no-fast-path" => plan.fast_path = false,
            flag if flag.starts_with("--") => anyhow::bail!("unknown option {flag}; {USAGE}"),
            _ => positional.push(argument),
        }
    }
    let mut positional = positional.into_iter();
    let path = positional.next().ok_or_else(|| anyhow::anyhow!(USAGE))?;
    if let Some(threads) = positional.next() {
        plan.threads = threads.parse()?;
    }
    if positional.next().is_some() {
        anyhow::bail!(USAGE);
    }
    Ok((path, plan))
}
