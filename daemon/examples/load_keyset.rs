//! Times loading a key file the way the daemon does: `cargo run --release -p heare-authd --example
//! load_keyset -- FILE [THREADS]` (the file as `heare-auth-bench --write-keys FILE N` writes it).
//! Reads it through the file store, then builds the key set with THREADS threads (default: one
//! per CPU), and prints the two times apart, so load-time regressions can be found without
//! starting the daemon. The figures measured with it are in `daemon/src/keyset/load.rs`.

use heare_auth_store::{Fetched, FileStore, KeyStore};
use heare_authd::keyset::{KeySet, Plan};
use std::time::Instant;

const USAGE: &str = "usage: load_keyset FILE [THREADS]";

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
        "{} keys ({} skipped) from {} MB with {} threads: read {:?}, parse+index {:?}, heap {} B/key",
        keys.len(),
        skipped.len(),
        body.len() / 1_000_000,
        plan.threads,
        read,
        built,
        keys.heap_bytes() / keys.len().max(1)
    );
    Ok(())
}

/// The file and the plan the command line asks for.
fn arguments() -> anyhow::Result<(String, Plan)> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or_else(|| anyhow::anyhow!(USAGE))?;
    let mut plan = Plan::for_this_host();
    if let Some(threads) = args.next() {
        plan.threads = threads.parse()?;
    }
    if args.next().is_some() {
        anyhow::bail!(USAGE);
    }
    Ok((path, plan))
}
