//! What one change of the key object costs each host, at a given key count: the bytes it fetches
//! (the whole object: the store is one JSON document) and how long its reload takes, split as the
//! daemon's own `refresh_success` log line splits it (fetch from S3, build of the new set — the
//! moment the change takes effect) and the whole `POST /refresh` (which also rewrites the
//! last-known-good cache). The release daemon runs against the in-process S3 server (s3s) on
//! 127.0.0.1 — no network in the way, so the fetch time is a floor; over a real network it is
//! the object size over the host's S3 throughput. Used by `heare-auth-bench --change-cost`.
//!
//! With the change log ([`measure_log`]) a revocation is one small change object: the daemon is
//! reached through a counting proxy, so the bytes it fetches per change are counted as S3 sent
//! them, and the time is from asking it to follow the log to the key's first refusal.

use crate::daemon::{Daemon, DaemonBuilder};
use crate::fault_proxy::FaultProxy;
use crate::http::Request;
use crate::s3_server::S3Server;
use crate::wait_until;
use anyhow::Context as _;
use heare_auth_store::change::{Author, KeyChange};
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

/// The store identity the log-mode measurements give their key objects.
pub const STORE_ID: &str = "store_benchbenchbenchbench";

/// `body` (a key file `{"keys": …}`) as a log-aware heare-authctl leaves it: at change 0 of the
/// store [`STORE_ID`].
pub fn at_change_zero(body: &[u8]) -> Vec<u8> {
    let fields = format!("{{\"change_seq\": 0, \"store_id\": \"{STORE_ID}\", ");
    let open = body.iter().position(|&b| b == b'{').map_or(0, |at| at + 1);
    [fields.as_bytes(), &body[open..]].concat()
}

/// Change object `seq` of [`STORE_ID`] (plain) giving `keys` their stored forms (`None`: removed).
pub fn change_object(seq: u64, operation: &str, keys: Vec<KeyChange>) -> Vec<u8> {
    let change = heare_auth_store::change::Change {
        format: heare_auth_store::change::FORMAT.into(),
        seq,
        store_id: STORE_ID.into(),
        operation: operation.into(),
        keys,
        time: heare_auth_store::timestamp::format(heare_auth_store::timestamp::now()),
        author: Author {
            user: "bench".into(),
            login: None,
            host: "bench".into(),
            aws_principal: None,
        },
        ctl_version: "bench".into(),
        reason: None,
    };
    change.encode(None)
}

/// One revocation delivered through the change log, as the host saw it.
#[derive(Debug, Clone, Copy)]
pub struct LogChange {
    /// Bytes S3 sent the host for it (heads and bodies: the change object, the 404 of the next
    /// number, the key object's HEAD).
    pub bytes: usize,
    /// From asking the daemon to follow the log (`POST /refresh`, as a queue message would) to
    /// the key's first refusal.
    pub to_refusal_ms: f64,
    /// The daemon's resident memory after it.
    pub rss_kib: u64,
}

/// What `runs` revocations through the log cost one host serving `body` (plain key file at
/// change 0), each revoking `ids[n]` whose secret is `secrets[n]`; and the daemon's resident
/// memory before the first.
pub fn measure_log(
    body: &[u8],
    ids: &[String],
    secrets: &[String],
    runs: usize,
) -> anyhow::Result<(u64, Vec<LogChange>)> {
    anyhow::ensure!(ids.len() > runs, "more keys than revocations are needed");
    let s3 = S3Server::start()?;
    s3.create_bucket(BUCKET)?;
    s3.put_object(BUCKET, OBJECT, &at_change_zero(body))?;
    let proxy = FaultProxy::start(&s3.endpoint())?;
    let dir = tempfile::tempdir()?;
    let daemon = DaemonBuilder::new(dir.path())
        .args([
            "--store",
            &format!("s3://{BUCKET}/{OBJECT}"),
            "--s3-path-style",
        ])
        .args(["--s3-endpoint", &proxy.endpoint(), "--usage-path", "none"])
        .config("[s3]\ntimeout = \"300s\"\n")
        .envs(s3.env_for_client())
        .start()
        .map_err(|log| anyhow::anyhow!("the daemon did not start: {log}"))?;
    let pid = daemon.pid().as_raw() as u32;
    let steady = rss_kib(pid);
    let mut changes = Vec::with_capacity(runs);
    for run in 1..=runs {
        let (id, secret) = (&ids[run], &secrets[run]);
        anyhow::ensure!(valid(&daemon, secret)?, "key {id} did not verify before");
        let removal = KeyChange {
            id: id.clone(),
            key: None,
        };
        let object = format!("{OBJECT}.changes/{run:020}.json");
        s3.put_object(
            BUCKET,
            &object,
            &change_object(run as u64, "delete", vec![removal]),
        )?;
        let before = proxy.answered_bytes();
        let started = Instant::now();
        let answer = daemon.request(&Request::new("POST", "/refresh"))?;
        anyhow::ensure!(answer.status == 200, "refresh failed: {}", answer.body);
        while valid(&daemon, secret)? {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "key {id} was never refused"
            );
        }
        changes.push(LogChange {
            bytes: proxy.answered_bytes() - before,
            to_refusal_ms: started.elapsed().as_secs_f64() * 1e3,
            rss_kib: rss_kib(pid),
        });
    }
    Ok((steady, changes))
}

fn valid(daemon: &Daemon, secret: &str) -> anyhow::Result<bool> {
    let answer = daemon.request(&Request::verify(secret))?;
    Ok(answer.json()["valid"] == true)
}

/// The resident memory of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}
