//! `--interleaved` and `--compare BINARY`: builds measured against each other in one run.
//!
//! Single runs on a shared 2-core machine spread ±10%, so a number is only worth comparing with
//! one measured in the same minutes. Every contender — the bare hyper server (the floor), this
//! build's heare-authd logging each verification at info to a file, the same at warn, and with
//! `--compare BINARY` another build of heare-authd both ways — is started once on the same key
//! file and kept running; then each run measures every contender in turn (the order rotates from
//! run to run, so none always goes first): throughput at `--connections` for `--seconds`, the
//! server's own CPU time per request over that run (from /proc), and p50/p99 of `--latency`
//! sequential requests on one connection. The table gives each contender's medians, its ratio to
//! the bare server's, and, with `--compare`, this build's CPU per verify over the other's. Every
//! daemon gets `HEARE_BENCH_CONFIG` as its configuration file.

use super::{
    Options, config_text, cpu_ticks, exchange, latency, median, serve_bare_command, socket,
    start_daemon, stop, throughput, verify_request, write_key_file,
};
use std::path::{Path, PathBuf};
use std::process::Child;

/// What one contender runs.
enum Server {
    Bare,
    Daemon {
        binary: PathBuf,
        log_level: &'static str,
    },
}

/// One server of the comparison, running, with what each run measured.
struct Contender {
    label: String,
    dir: tempfile::TempDir,
    child: Child,
    rates: Vec<f64>,
    cpu_per_request: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
}

/// Medians of one contender's runs.
struct Summary {
    rate: f64,
    cpu: f64,
    p50: f64,
    p99: f64,
}

pub fn run(options: &Options, other: Option<&Path>) -> anyhow::Result<()> {
    let count = options.counts.first().copied().unwrap_or(100_000);
    let keys_dir = tempfile::tempdir()?;
    let keys = keys_dir.path().join("keys.json");
    let secrets = write_key_file(&keys, count)?;
    let secrets = &secrets[..secrets.len().min(64)];
    let mut contenders = servers(other)
        .into_iter()
        .map(|(label, server)| start(label, &server, &keys, secrets))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for run in 0..options.runs {
        for n in 0..contenders.len() {
            let index = (run + n) % contenders.len();
            measure(&mut contenders[index], secrets, options)?;
        }
    }
    for contender in &mut contenders {
        stop(&mut contender.child);
    }
    report(&contenders, count, options, other.is_some());
    Ok(())
}

/// The contenders, in the order of the table.
fn servers(other: Option<&Path>) -> Vec<(String, Server)> {
    let this = std::env::current_exe()
        .map(|exe| exe.with_file_name("heare-authd"))
        .unwrap_or_else(|_| PathBuf::from("heare-authd"));
    let mut servers = vec![("bare hyper".to_string(), Server::Bare)];
    let mut builds = vec![("this build".to_string(), this)];
    if let Some(other) = other {
        builds.push((other.display().to_string(), other.to_path_buf()));
    }
    for (name, binary) in builds {
        for log_level in ["info", "warn"] {
            let server = Server::Daemon {
                binary: binary.clone(),
                log_level,
            };
            servers.push((format!("{name}, log {log_level}"), server));
        }
    }
    servers
}

/// Starts `server` in a directory of its own, on a copy of the key file.
fn start(
    label: String,
    server: &Server,
    keys: &Path,
    secrets: &[String],
) -> anyhow::Result<Contender> {
    let dir = tempfile::tempdir()?;
    let child = match server {
        Server::Bare => start_bare(&socket(dir.path()))?,
        Server::Daemon { binary, log_level } => {
            std::fs::copy(keys, dir.path().join("keys.json"))?;
            let args = ["--log-level".to_string(), log_level.to_string()];
            start_daemon(dir.path(), secrets, &config_text(), binary, &args)?.0
        }
    };
    Ok(Contender {
        label,
        dir,
        child,
        rates: Vec::new(),
        cpu_per_request: Vec::new(),
        p50: Vec::new(),
        p99: Vec::new(),
    })
}

/// The bare server, once it answers.
fn start_bare(socket: &Path) -> anyhow::Result<Child> {
    let mut child = serve_bare_command(socket)?.spawn()?;
    while exchange(socket, &verify_request("x")).is_err() {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the bare server exited: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(child)
}

/// One run of `contender`: throughput with its server's CPU time, then latency at c=1.
fn measure(contender: &mut Contender, secrets: &[String], options: &Options) -> anyhow::Result<()> {
    let path = socket(contender.dir.path());
    let pid = contender.child.id();
    let before = cpu_ticks(pid);
    let (rate, requests) = throughput(&path, secrets, options.connections, options.seconds)?;
    // /proc ticks are 1/100 s (USER_HZ on Linux).
    let cpu = cpu_ticks(pid).saturating_sub(before) as f64 * 1e4 / requests.max(1) as f64;
    let (p50, p99) = latency(&path, secrets, options.latency_requests)?;
    contender.rates.push(rate);
    contender.cpu_per_request.push(cpu);
    contender.p50.push(p50);
    contender.p99.push(p99);
    Ok(())
}

impl Contender {
    fn summary(&self) -> Summary {
        Summary {
            rate: median(&self.rates),
            cpu: median(&self.cpu_per_request),
            p50: median(&self.p50),
            p99: median(&self.p99),
        }
    }
}

fn report(contenders: &[Contender], count: usize, options: &Options, compared: bool) {
    println!(
        "{count} keys, c={} for {} s and c=1 for {} requests, {} interleaved runs; medians",
        options.connections, options.seconds, options.latency_requests, options.runs
    );
    println!(
        "{:<44} | {:>10} | {:>7} | {:>13} | {:>7} | {:>7} | {:>8} | runs (verifies/s)",
        "server", "verifies/s", "× bare", "CPU µs/verify", "p50 µs", "p99 µs", "p99×bare"
    );
    let bare = contenders[0].summary();
    for contender in contenders {
        let summary = contender.summary();
        println!(
            "{:<44} | {:>10.0} | {:>7.2} | {:>13.2} | {:>7.1} | {:>7.1} | {:>8.2} | {:.0?}",
            contender.label,
            summary.rate,
            summary.rate / bare.rate,
            summary.cpu,
            summary.p50,
            summary.p99,
            summary.p99 / bare.p99,
            contender.rates,
        );
    }
    if compared {
        // Contenders 1, 2 are this build (info, warn); 3, 4 the other.
        for (this, other) in [(1, 3), (2, 4)] {
            let (this, other) = (&contenders[this], &contenders[other]);
            println!(
                "CPU per verify, {} over {}: {:.0}%",
                this.label,
                other.label,
                this.summary().cpu / other.summary().cpu * 100.0
            );
        }
    }
}
