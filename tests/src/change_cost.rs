//! What one change of the key object costs each host, at a given key count: the bytes it fetches
//! (the whole object: the store is one JSON document) and how long its reload takes, split as the
//! daemon's own `refresh_success` log line splits it (fetch from S3, build of the new set — the
//! moment the change takes effect) and the whole `POST /refresh` (which also rewrites the
//! last-known-good cache). The release daemon runs against the in-process S3 server (s3s) on
//! 127.0.0.1 — no network in the way, so the fetch time is a floor; over a real network it is
//! the object size over the host's S3 throughput. Used by `heare-auth-bench --change-cost`.

use crate::daemon::Daemon;
use crate::http::Request;
use crate::s3_server::S3Server;
use crate::wait_until;
use anyhow::Context as _;
use std::time::{Duration, Instant};

const BUCKET: &str = "heare-auth-change-cost";
const OBJECT: &str = "keys.json";

/// One change as the host saw it.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub fetch_ms: u64,
    pub build_ms: u64,
    /// The whole `POST /refresh`, the cache write included.
    pub refresh_ms: u64,
}

/// `runs` changes of an object holding `body` (a key file), each fetched by one daemon.
pub fn measure(body: &[u8], runs: usize) -> anyhow::Result<Vec<Change>> {
    let s3 = S3Server::start()?;
    s3.create_bucket(BUCKET)?;
    s3.put_object(BUCKET, OBJECT, body)?;
    let dir = tempfile::tempdir()?;
    let daemon = s3
        .daemon(dir.path(), BUCKET, OBJECT)
        .args(["--usage-path", "none"])
        .config("[s3]\ntimeout = \"300s\"\n")
        .start()
        .map_err(|log| anyhow::anyhow!("the daemon did not start: {log}"))?;
    let mut changes = Vec::with_capacity(runs);
    for run in 1..=runs {
        // A different object each time (a new ETag), the same keys: what every edit looks like.
        let mut changed = body.to_vec();
        changed.extend(std::iter::repeat_n(b' ', run));
        s3.put_object(BUCKET, OBJECT, &changed)?;
        changes.push(one_change(&daemon, run)?);
    }
    Ok(changes)
}

/// Asks for the reload, then reads its split from the log line it wrote.
fn one_change(daemon: &Daemon, run: usize) -> anyhow::Result<Change> {
    let started = Instant::now();
    let answer = daemon.request(&Request::new("POST", "/refresh"))?;
    let refresh_ms = started.elapsed().as_millis() as u64;
    anyhow::ensure!(answer.status == 200, "refresh failed: {}", answer.body);
    let mut line = None;
    wait_until(Duration::from_secs(10), || {
        line = daemon.events("refresh_success").into_iter().nth(run - 1);
        line.is_some()
    });
    let line = line.context("no refresh_success line in the daemon's log")?;
    let field = |name: &str| line[name].as_u64().unwrap_or(0);
    Ok(Change {
        fetch_ms: field("fetch_ms"),
        build_ms: field("build_ms"),
        refresh_ms,
    })
}
