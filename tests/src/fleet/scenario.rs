//! One simulated run in one mode, start to end: moto and the counting proxy, the key file, the
//! push wiring (push mode), N daemons; then the timeline — half the revocations at random
//! moments, the S3 outage, a quiet recovery window, the other half — and everything recorded
//! for [`super::report`].
//!
//! Each gap before a revocation (and before the outage) is uniform in 0.5–1.5 T, drawn from a
//! seeded generator, and starts when the previous revocation has reached every daemon, so
//! revocations fall at random points of the daemons' poll cycles. No revocation falls in the
//! outage or in the recovery window after it (`min(outage, 60 s) + 2 T`), whose busiest second
//! is the recovery figure. A revocation is `heare-authctl delete` of a key no earlier one
//! touched; its clock starts just before the command is spawned.

use super::counting_proxy::{CountingProxy, Exchange};
use super::daemons::{Ctl, Fleet, FleetSettings};
use super::moto::{Moto, block_on, s3_client};
use super::probe::Prober;
use super::push::{purge_queues, wire_push};
use crate::keys::{TestKey, key_file};
use anyhow::{Context as _, anyhow};
use aws_sdk_s3::error::DisplayErrorContext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The bucket and object of the fleet's key file.
pub const BUCKET: &str = "heare-auth-fleet";
pub const OBJECT: &str = "keys.json";
/// The daemon's cap on its retry backoff: the longest a daemon may wait after the outage.
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// How the daemons learn of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `refresh_interval` T: a conditional GET every T ± 10%.
    Polling,
    /// `notify_queue`: S3 → SNS → one SQS queue per daemon, long-polled.
    Push,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Polling => "polling",
            Mode::Push => "push",
        }
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub mode: Mode,
    pub daemons: usize,
    /// T: the polling interval, and the scale of the gaps between revocations in both modes.
    pub interval: Duration,
    /// At least 1; needs `keys > revocations`.
    pub revocations: usize,
    /// Zero for none.
    pub outage: Duration,
    pub keys: usize,
    /// Holds `heare-authd` and `heare-authctl`.
    pub bin_dir: PathBuf,
    pub seed: u64,
    /// Keep the daemons' directories (logs) instead of removing them.
    pub keep_dir: bool,
    /// Start from a key file as a log-aware heare-authctl leaves it (at change 0 of a store
    /// identity): every revocation then reaches the daemons as one change object of the log.
    /// Without it the key file is as the Python service writes it, and the first revocation
    /// (which gives the store its identity) is loaded whole.
    pub log: bool,
}

/// A stretch of the run.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: Instant,
    pub end: Instant,
}

/// One `heare-authctl delete` and how it spread.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub key_id: String,
    pub started: Instant,
    /// Per daemon: first refusal after `started`; `None` if it never refused.
    pub refusals: Vec<Option<Duration>>,
}

/// Everything a run recorded.
pub struct RunRecord {
    pub scenario: Scenario,
    /// When counting started (every daemon serving) and ended.
    pub run: Span,
    pub outage: Option<Span>,
    /// From the outage's end, as long as the recovery window.
    pub recovery: Option<Span>,
    pub revocations: Vec<Revocation>,
    /// The proxy's exchanges answered within `run`.
    pub exchanges: Vec<Exchange>,
    /// Size of the key file as first written.
    pub key_file_bytes: usize,
    /// Daemons that exited during the run (none should).
    pub exited: Vec<String>,
    /// The daemons' directories, when kept.
    pub kept_dir: Option<PathBuf>,
}

/// What runs during the timeline; dropped in this order (daemons first, moto last).
struct Setup {
    fleet: Fleet,
    ctl: Ctl,
    proxy: CountingProxy,
    _moto: Moto,
    work: tempfile::TempDir,
    key_file_bytes: usize,
}

/// Runs `scenario`; `progress` hears about each step.
pub fn run(scenario: &Scenario, progress: &dyn Fn(&str)) -> anyhow::Result<RunRecord> {
    let mut rng = StdRng::seed_from_u64(scenario.seed);
    let keys = test_keys(scenario.keys, &mut rng);
    let gaps: Vec<Duration> = (0..=scenario.revocations)
        .map(|_| scenario.interval.mul_f64(rng.random_range(0.5..1.5)))
        .collect();
    progress(&format!(
        "{}: starting moto, the proxy and {} daemons",
        scenario.mode.name(),
        scenario.daemons
    ));
    let mut setup = set_up(scenario, &keys)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the probing runtime")?;
    let timeline = runtime.block_on(timeline(&setup, scenario, &keys, &gaps, progress))?;
    let exchanges = setup
        .proxy
        .exchanges()
        .into_iter()
        .filter(|e| e.done >= timeline.run.start && e.done <= timeline.run.end)
        .collect();
    let exited = setup.fleet.exited();
    let kept_dir = scenario.keep_dir.then(|| setup.work.path().to_path_buf());
    if scenario.keep_dir {
        setup.work.disable_cleanup(true);
    }
    Ok(RunRecord {
        scenario: scenario.clone(),
        run: timeline.run,
        outage: timeline.outage,
        recovery: timeline.recovery,
        revocations: timeline.revocations,
        exchanges,
        key_file_bytes: setup.key_file_bytes,
        exited,
        kept_dir,
    })
}

/// `count` keys in the Python service's format (generation-0 ids and secrets), stored hashed.
fn test_keys(count: usize, rng: &mut StdRng) -> Vec<TestKey> {
    let mut base62 = |length: usize| -> String {
        (0..length)
            .map(|_| heare_auth_client::token::BASE62[rng.random_range(0..62)] as char)
            .collect()
    };
    (0..count)
        .map(|_| {
            TestKey::new(
                &format!("key_0{}", base62(18)),
                &format!("sec_0{}", base62(59)),
            )
            .hashed()
        })
        .collect()
}

fn set_up(scenario: &Scenario, keys: &[TestKey]) -> anyhow::Result<Setup> {
    let moto = Moto::start()?;
    let proxy = CountingProxy::start(&moto.endpoint())?;
    let body = match scenario.log {
        true => crate::change_cost::at_change_zero(&key_file(keys)),
        false => key_file(keys),
    };
    put_key_file(&moto.endpoint(), &body)?;
    let notify_queues = match scenario.mode {
        Mode::Polling => Vec::new(),
        Mode::Push => push_queues(&moto, &proxy, scenario.daemons)?,
    };
    let work = tempfile::Builder::new()
        .prefix("heare-auth-fleet-")
        .tempdir()
        .context("creating the fleet's directory")?;
    let store = format!("s3://{BUCKET}/{OBJECT}");
    let settings = FleetSettings {
        bin_dir: scenario.bin_dir.clone(),
        store: store.clone(),
        endpoint: proxy.endpoint(),
        refresh_interval: (scenario.mode == Mode::Polling).then_some(scenario.interval),
        notify_queues,
    };
    let ready_secret = &keys.first().ok_or_else(|| anyhow!("no keys"))?.secret;
    let fleet = Fleet::start(work.path(), &settings, scenario.daemons, ready_secret)?;
    let ctl = Ctl::new(&scenario.bin_dir, work.path(), &store, &moto.endpoint())?;
    Ok(Setup {
        fleet,
        ctl,
        proxy,
        _moto: moto,
        work,
        key_file_bytes: body.len(),
    })
}

/// One quiet queue per daemon, wired to the key file; their URLs point at the proxy.
fn push_queues(moto: &Moto, proxy: &CountingProxy, daemons: usize) -> anyhow::Result<Vec<String>> {
    let queues = wire_push(&moto.endpoint(), BUCKET, OBJECT, daemons, false)?;
    purge_queues(&moto.endpoint(), &queues)?;
    Ok(queues
        .into_iter()
        .map(|url| url.replacen(&moto.endpoint(), &proxy.endpoint(), 1))
        .collect())
}

fn put_key_file(endpoint: &str, body: &[u8]) -> anyhow::Result<()> {
    let body = body.to_vec();
    block_on(async move {
        let s3 = s3_client(endpoint);
        s3.create_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .map_err(|e| anyhow!("CreateBucket {BUCKET}: {}", DisplayErrorContext(e)))?;
        s3.put_object()
            .bucket(BUCKET)
            .key(OBJECT)
            .body(body.into())
            .send()
            .await
            .map_err(|e| anyhow!("PutObject {OBJECT}: {}", DisplayErrorContext(e)))?;
        Ok(())
    })?
}

struct Timeline {
    run: Span,
    outage: Option<Span>,
    recovery: Option<Span>,
    revocations: Vec<Revocation>,
}

async fn timeline(
    setup: &Setup,
    scenario: &Scenario,
    keys: &[TestKey],
    gaps: &[Duration],
    progress: &dyn Fn(&str),
) -> anyhow::Result<Timeline> {
    let prober = Prober::new(&setup.fleet.sockets());
    let revoked = keys.get(1..=scenario.revocations).ok_or_else(|| {
        anyhow!(
            "{} keys cannot give {} revocations",
            keys.len(),
            scenario.revocations
        )
    })?;
    let (before, after) = revoked.split_at(scenario.revocations - scenario.revocations / 2);
    let start = Instant::now();
    let mut revocations = Vec::new();
    for (key, gap) in before.iter().zip(gaps) {
        tokio::time::sleep(*gap).await;
        revocations.push(revoke(setup, &prober, scenario, key, progress).await?);
    }
    let (mut outage, mut recovery) = (None, None);
    if !scenario.outage.is_zero() {
        tokio::time::sleep(gaps[before.len()]).await;
        let (down, back) = outage_and_recovery(setup, scenario, progress).await;
        (outage, recovery) = (Some(down), Some(back));
    }
    for (key, gap) in after.iter().zip(&gaps[before.len() + 1..]) {
        tokio::time::sleep(*gap).await;
        revocations.push(revoke(setup, &prober, scenario, key, progress).await?);
    }
    let run = Span {
        start,
        end: Instant::now(),
    };
    Ok(Timeline {
        run,
        outage,
        recovery,
        revocations,
    })
}

/// The recovery window after an outage of `outage`: the longest backoff a daemon can be in,
/// plus two polls.
pub fn recovery_window(outage: Duration, interval: Duration) -> Duration {
    outage.min(BACKOFF_CAP) + interval * 2
}

/// S3 answers 503 for `scenario.outage`, then a quiet recovery window.
async fn outage_and_recovery(
    setup: &Setup,
    scenario: &Scenario,
    progress: &dyn Fn(&str),
) -> (Span, Span) {
    let window = recovery_window(scenario.outage, scenario.interval);
    progress(&format!(
        "{}: S3 outage for {:?}, then a {:?} recovery window",
        scenario.mode.name(),
        scenario.outage,
        window
    ));
    let down = Instant::now();
    setup.proxy.set_outage(true);
    tokio::time::sleep(scenario.outage).await;
    setup.proxy.set_outage(false);
    let back = Instant::now();
    tokio::time::sleep(window).await;
    (
        Span {
            start: down,
            end: back,
        },
        Span {
            start: back,
            end: Instant::now(),
        },
    )
}

/// Deletes `key` with heare-authctl while probing every daemon, until each refuses it (or
/// `max(3 T, 30 s)` passes).
async fn revoke(
    setup: &Setup,
    prober: &Prober,
    scenario: &Scenario,
    key: &TestKey,
    progress: &dyn Fn(&str),
) -> anyhow::Result<Revocation> {
    let give_up = (scenario.interval * 3).max(Duration::from_secs(30));
    let ctl = setup.ctl.clone();
    let key_id = key.id.clone();
    let started = Instant::now();
    let deleting = tokio::task::spawn_blocking(move || ctl.delete(&key_id));
    let refusals = prober.first_refusals(&key.secret, started, give_up).await;
    deleting.await.context("the heare-authctl task")??;
    let reached = refusals.iter().flatten().count();
    let last = refusals.iter().flatten().max().copied().unwrap_or_default();
    progress(&format!(
        "{}: revoked {} — refused by {reached}/{} daemons, the last after {:.2} s",
        scenario.mode.name(),
        key.id,
        refusals.len(),
        last.as_secs_f64()
    ));
    Ok(Revocation {
        key_id: key.id.clone(),
        started,
        refusals,
    })
}
