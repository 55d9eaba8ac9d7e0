//! `heare-auth-fleet-sim`: the fleet simulation of issue 16, with the real binaries.
//!
//! For each mode it starts moto (S3, SNS, SQS) on 127.0.0.1, a counting proxy in front of it, a
//! key file of `--keys` keys and `--daemons` real `heare-authd` processes, polling every T
//! (`--interval`) or long-polling one SQS queue each (push: bucket notification → SNS → queues);
//! then it revokes `--revocations` keys with `heare-authctl delete` at random moments, probing
//! every daemon's socket every 50 ms until each refuses the key, with an S3 outage of
//! `--outage` seconds in the middle. It prints a table (propagation p50/p99/max, requests per
//! daemon-hour by type, bytes fetched per change, the busiest second after the outage against
//! the mean rate), the targets with their verdicts, and the extrapolation to 1,000 and 10,000
//! hosts in requests and dollars a day. It exits nonzero when a target is missed. The details
//! are in `heare_auth_tests::fleet`.
//!
//! Run: `cargo build --release -p heare-authd -p heare-authctl -p heare-auth-tests &&
//! target/release/heare-auth-fleet-sim [OPTIONS]`; `--help` lists the options.

use anyhow::{Context as _, bail};
use heare_auth_tests::fleet::report::{self, ModeReport};
use heare_auth_tests::fleet::scenario::{self, Mode, Scenario};
use std::path::PathBuf;
use std::time::Duration;

const HELP: &str = "\
heare-auth-fleet-sim [OPTIONS]

  --mode polling|push|both   which modes to run (default both)
  --daemons N                daemons in the fleet (default 50)
  --interval SECS            T: the polling interval, and the scale of the random gaps (0.5–1.5 T)
                             between revocations (default 10)
  --revocations K            keys revoked with heare-authctl delete, at least 1 (default 10)
  --outage SECS              S3 outage in the middle of the run; 0 for none (default 60)
  --keys M                   keys in the key file, more than K (default 100)
  --log                      start from a key file a log-aware heare-authctl wrote (a store
                             identity, change 0): every revocation is one change object of the
                             log, the key object never fetched whole again
  --bin-dir DIR              where heare-authd and heare-authctl are (default: the workspace's
                             target/release; build them with cargo build --release first)
  --changes-per-day C        changes a day assumed by the extrapolation (default 100)
  --seed S                   seed of the random gaps and keys (default: random, printed)
  --keep                     keep the daemons' directories (configuration, log) and print where
  --trace FILE               write every request the proxy saw (CSV, with the revocations and
                             the outage as # lines) to FILE
  --json                     print the figures as JSON instead of the table";

struct Options {
    modes: Vec<Mode>,
    daemons: usize,
    interval: Duration,
    revocations: usize,
    outage: Duration,
    keys: usize,
    bin_dir: PathBuf,
    changes_per_day: f64,
    seed: u64,
    keep: bool,
    log: bool,
    trace: Option<PathBuf>,
    json: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            modes: vec![Mode::Polling, Mode::Push],
            daemons: 50,
            interval: Duration::from_secs(10),
            revocations: 10,
            outage: Duration::from_secs(60),
            keys: 100,
            bin_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release"),
            changes_per_day: 100.0,
            seed: rand::random(),
            keep: false,
            log: false,
            trace: None,
            json: false,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let Some(options) = parse(std::env::args().skip(1))? else {
        println!("{HELP}");
        return Ok(());
    };
    for binary in ["heare-authd", "heare-authctl"] {
        let path = options.bin_dir.join(binary);
        if !path.exists() {
            bail!(
                "{} not found: build it (cargo build --release -p heare-authd -p heare-authctl) \
                 or pass --bin-dir",
                path.display()
            );
        }
    }
    eprintln!("seed {}", options.seed);
    let reports = run_modes(&options)?;
    print(&options, &reports)?;
    let missed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.targets
                .iter()
                .filter(|t| !t.met)
                .map(|t| format!("{}: {}", r.mode.name(), t.name))
        })
        .collect();
    if !missed.is_empty() {
        bail!("targets missed: {}", missed.join("; "));
    }
    Ok(())
}

/// Runs each mode in turn; writes the trace if asked.
fn run_modes(options: &Options) -> anyhow::Result<Vec<ModeReport>> {
    let mut reports = Vec::new();
    let mut trace = String::new();
    for (index, &mode) in options.modes.iter().enumerate() {
        let scenario = scenario_for(options, mode, index as u64);
        let record = scenario::run(&scenario, &|line| eprintln!("{line}"))
            .with_context(|| format!("the {} run", mode.name()))?;
        if let Some(dir) = &record.kept_dir {
            eprintln!(
                "{}: daemons' directories kept in {}",
                mode.name(),
                dir.display()
            );
        }
        trace.push_str(&report::trace_csv(&record));
        reports.push(report::summarize(&record));
    }
    if let Some(path) = &options.trace {
        std::fs::write(path, trace).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(reports)
}

fn scenario_for(options: &Options, mode: Mode, index: u64) -> Scenario {
    Scenario {
        mode,
        daemons: options.daemons,
        interval: options.interval,
        revocations: options.revocations,
        outage: options.outage,
        keys: options.keys,
        bin_dir: options.bin_dir.clone(),
        seed: options.seed.wrapping_add(index),
        keep_dir: options.keep,
        log: options.log,
    }
}

fn print(options: &Options, reports: &[ModeReport]) -> anyhow::Result<()> {
    if options.json {
        let json = report::to_json(reports, options.changes_per_day);
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!("{}", report::table(reports));
    println!("{}", report::verdicts(reports));
    print!(
        "{}",
        report::extrapolation(reports, options.changes_per_day)
    );
    Ok(())
}

/// The options, or `None` for `--help`.
fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Options>> {
    let mut options = Options::default();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value; see --help"))
        };
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--mode" => options.modes = modes(&value()?)?,
            "--daemons" => options.daemons = value()?.parse().context("--daemons")?,
            "--interval" => options.interval = seconds(&value()?).context("--interval")?,
            "--revocations" => options.revocations = value()?.parse().context("--revocations")?,
            "--outage" => options.outage = seconds(&value()?).context("--outage")?,
            "--keys" => options.keys = value()?.parse().context("--keys")?,
            "--log" => options.log = true,
            "--bin-dir" => options.bin_dir = PathBuf::from(value()?),
            "--changes-per-day" => {
                options.changes_per_day = value()?.parse().context("--changes-per-day")?;
            }
            "--seed" => options.seed = value()?.parse().context("--seed")?,
            "--keep" => options.keep = true,
            "--trace" => options.trace = Some(PathBuf::from(value()?)),
            "--json" => options.json = true,
            other => bail!("unknown option {other}; see --help"),
        }
    }
    check(&options)?;
    Ok(Some(options))
}

fn check(options: &Options) -> anyhow::Result<()> {
    if options.daemons == 0 || options.revocations == 0 {
        bail!("--daemons and --revocations must be at least 1");
    }
    if options.keys <= options.revocations {
        bail!("--keys must be more than --revocations (one key is never revoked)");
    }
    if options.interval.is_zero() {
        bail!("--interval must be more than 0");
    }
    Ok(())
}

fn modes(text: &str) -> anyhow::Result<Vec<Mode>> {
    Ok(match text {
        "polling" => vec![Mode::Polling],
        "push" => vec![Mode::Push],
        "both" => vec![Mode::Polling, Mode::Push],
        other => bail!("--mode {other}: use polling, push or both"),
    })
}

fn seconds(text: &str) -> anyhow::Result<Duration> {
    let value: f64 = text.parse()?;
    Duration::try_from_secs_f64(value).context("not a number of seconds")
}
