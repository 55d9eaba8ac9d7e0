//! `heare-auth-bench`: measures the real daemon binary over its real Unix socket.
//!
//! For each key count it writes a key file in the Python service's format (plaintext secrets,
//! pretty-printed, short names, small metadata), starts the release `heare-authd` on it with the
//! default per-verification JSON logging going to a file, and reports: load time (spawn to first
//! answer, and a full `POST /refresh`), resident memory per key (RSS over an empty daemon's RSS),
//! peak RSS while a reload holds two sets, verify latency p50/p99 on one keep-alive connection, the
//! same through `heare_auth_client::Client` (the blocking client), and throughput with 32
//! keep-alive connections.
//!
//! The throughput generator is one thread (a tokio current-thread runtime) driving every
//! connection: each connection sends one complete HTTP/1.1 `POST /verify` request (one `write`),
//! reads until it has the whole answer (framed by its `Content-Length`), checks that it is a 200,
//! and only then sends the next — a real keep-alive client with one request in flight per
//! connection, no pipelining. Requests are built before the clock starts and answers are parsed
//! without allocating, so the generator spends its share of the two cores on system calls rather
//! than on itself. `--bare` measures a bare hyper server (fixed 200 JSON answer, same runtime and
//! HTTP settings as the daemon's defaults) with the same generator, for scale. After the table it
//! lists the targets the daemon is held to (p99 at c=1, verifies/s at c=32, 1M-key load time,
//! bytes per key), each with the value this run measured and whether it was met. `--monitoring`
//! compares throughput with the monitoring (metrics listener scraped, stats push, usage file) off
//! and on, in interleaved runs of the same invocation. `--interleaved` and `--compare BINARY`
//! measure the bare server and builds of heare-authd against each other in one run (`compare`).
//!
//! Run: `cargo build --release -p heare-auth-tests -p heare-authd &&
//! target/release/heare-auth-bench [OPTIONS] [N,N,...]` (default 1000,100000,1000000); `--help`
//! lists the options. `HEARE_BENCH_DAEMON_ARGS="--log-level warn"` passes extra flags to the
//! daemon, `HEARE_BENCH_CONFIG` is the text of its configuration file.

#[path = "bench/compare.rs"]
mod compare;
#[path = "bench/instructions.rs"]
mod instructions;
#[path = "bench/overlay.rs"]
mod overlay;
#[path = "bench/rate_limits.rs"]
mod rate_limits;

use rand::Rng;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HELP: &str = "\
heare-auth-bench [OPTIONS] [N,N,...]   (default key counts: 1000,100000,1000000)

  --connections C   keep-alive connections for the throughput run (default 32)
  --seconds S       length of one throughput run (default 5)
  --runs R          throughput runs per key count; the best and the median are shown (default 3)
  --latency N       requests for each latency measurement (default 50000)
  --only LIST       what to measure, of load,latency,client,throughput (default all); with
                    --rate-limits, of cost,accuracy,redis,fleet,instructions (instructions per
                    verify under callgrind, limited against unlimited keys, or with --compare
                    this build against BINARY; not in the default set)
  --bare            measure a bare hyper server answering a fixed body instead of heare-authd
                    (only latency and throughput)
  --auth            throughput at the first key count of GET /auth (a key in Authorization, as
                    nginx sends it) and POST /verify, runs interleaved on one daemon
  --monitoring      throughput at the first key count with the monitoring off and on, runs
                    interleaved: off = no metrics listener, no stats push, no usage file; on =
                    metrics_listen scraped every second, the UDP stats push every second to a
                    local sink, the usage file (the per-verify counters are always on)
  --interleaved     the bare server, this build logging at info (to a file) and at warn, each
                    measured in turn in every run (order rotating): verifies/s at --connections,
                    the server's CPU µs per verify, p50/p99 at c=1; medians and ratios to the bare
                    server, at the first key count (default 100000)
  --compare BINARY  --interleaved with another build of heare-authd (BINARY) at info and warn too,
                    and this build's CPU per verify over the other's
  --change-cost     what one change of the key object costs each host at every key count: the
                    bytes fetched and the reload (fetch + build, and the whole /refresh with the
                    cache write), median of 3, the daemon on S3 (in-process s3s on 127.0.0.1)
  --overlay N       verify throughput at the first key count with N keys changed through the
                    change log (in the daemon's overlay) against an empty overlay, runs
                    interleaved (--runs of each, --connections, --seconds)
  --rate-limits     verify throughput at the first key count with every key rate limited (a
                    limit never reached) against no limits, runs interleaved (--runs of each,
                    --connections, --seconds); then the accuracy of a limit: one key limited to
                    100/1s (burst 100), 5 clients for 10 s, accepted against burst + rate × seconds;
                    with a redis-server (PATH or HEARE_TEST_REDIS_SERVER), the Redis backend
                    against the local one (throughput, p50/p99 at c=1, --latency requests) and
                    the same accuracy run on 3 daemons sharing the Redis, 5 clients each; with
                    --compare BINARY, the first part is this build against BINARY, both limited
  --write-keys FILE N   write a key file of N keys (and FILE.secrets) and exit
  --serve-bare SOCKET   (internal) run the bare hyper server on SOCKET

Environment: HEARE_BENCH_DAEMON_ARGS (extra daemon flags), HEARE_BENCH_CONFIG (config file text),
HEARE_BENCH_WRAPPER (a command to run the server, the daemon or the bare one, under, e.g.
valgrind --tool=callgrind).";

#[derive(Clone)]
struct Options {
    counts: Vec<usize>,
    connections: usize,
    seconds: u64,
    runs: usize,
    latency_requests: usize,
    only: Vec<String>,
    bare: bool,
    monitoring: bool,
    auth: bool,
    change_cost: bool,
    interleaved: bool,
    compare: Option<PathBuf>,
    overlay: Option<usize>,
    rate_limits: bool,
}

impl Options {
    fn wants(&self, what: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == what)
    }
}

fn main() -> anyhow::Result<()> {
    let mut options = Options {
        counts: vec![1_000, 100_000, 1_000_000],
        connections: 32,
        seconds: 5,
        runs: 3,
        latency_requests: 50_000,
        only: Vec::new(),
        bare: false,
        monitoring: false,
        auth: false,
        change_cost: false,
        interleaved: false,
        compare: None,
        overlay: None,
        rate_limits: false,
    };
    let mut args = std::env::args().skip(1);
    let value = |args: &mut dyn Iterator<Item = String>, flag: &str| {
        args.next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => {
                println!("{HELP}");
                return Ok(());
            }
            "--connections" => options.connections = value(&mut args, &arg)?.parse()?,
            "--seconds" => options.seconds = value(&mut args, &arg)?.parse()?,
            "--runs" => options.runs = value(&mut args, &arg)?.parse::<usize>()?.max(1),
            "--latency" => options.latency_requests = value(&mut args, &arg)?.parse()?,
            "--only" => {
                options.only = value(&mut args, &arg)?
                    .split(',')
                    .map(str::to_string)
                    .collect();
            }
            "--bare" => options.bare = true,
            "--monitoring" => options.monitoring = true,
            "--auth" => options.auth = true,
            "--change-cost" => options.change_cost = true,
            "--interleaved" => options.interleaved = true,
            "--compare" => options.compare = Some(PathBuf::from(value(&mut args, &arg)?)),
            "--overlay" => options.overlay = Some(value(&mut args, &arg)?.parse()?),
            "--rate-limits" => options.rate_limits = true,
            "--write-keys" => {
                let file = PathBuf::from(value(&mut args, &arg)?);
                let count = value(&mut args, &arg)?.parse()?;
                let secrets = write_key_file(&file, count)?;
                let mut list = secrets.join("\n");
                list.push('\n');
                let mut name = file.into_os_string();
                name.push(".secrets");
                std::fs::write(name, list)?;
                return Ok(());
            }
            "--serve-bare" => return serve_bare(Path::new(&value(&mut args, &arg)?)),
            list if !list.starts_with('-') => {
                options.counts = list.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            other => anyhow::bail!("unknown option {other}; see --help"),
        }
    }
    println!(
        "load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if options.bare {
        return bench_bare(&options);
    }
    if options.monitoring {
        return bench_monitoring(&options);
    }
    if options.auth {
        return bench_auth(&options);
    }
    if options.change_cost {
        return bench_change_cost(&options);
    }
    if options.rate_limits {
        return rate_limits::run(&options);
    }
    if let Some(changed) = options.overlay {
        return overlay::run(&options, changed);
    }
    if options.interleaved || options.compare.is_some() {
        return compare::run(&options, options.compare.as_deref());
    }
    bench_daemon(&options)
}

fn bench_daemon(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    let baseline = {
        let secrets = write_key_file(&keys, 0)?;
        let (mut daemon, _) = start(dir.path(), &secrets)?;
        let rss = rss_kib(daemon.id(), "VmRSS:");
        stop(&mut daemon);
        rss
    };
    println!("empty daemon RSS: {baseline} KiB");
    println!(
        "{:>9} | {:>8} | {:>13} | {:>9} | {:>7} | {:>9} | {:>8} | {:>8} | {:>15} | verifies/s best/median (CPU µs per verify: daemon+generator)",
        "keys",
        "start ms",
        "read+build ms",
        "reload ms",
        "B/key",
        "peak MiB",
        "p50 µs",
        "p99 µs",
        "client p50/p99",
    );
    let mut targets = Targets::default();
    for &count in &options.counts {
        let secrets = write_key_file(&keys, count)?;
        let (mut daemon, start_time) = start(dir.path(), &secrets)?;
        let pid = daemon.id();
        let rss = rss_kib(pid, "VmRSS:");
        let (mut reload, mut peak) = (Duration::ZERO, 0);
        if options.wants("load") {
            // A changed key file (one more byte): /refresh loads a file store's file whole only
            // when it changed.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&keys)?
                .write_all(b" ")?;
            let reload_started = Instant::now();
            let refresh = exchange(
                &socket(dir.path()),
                b"POST /refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            )?;
            reload = reload_started.elapsed();
            anyhow::ensure!(
                refresh.starts_with("HTTP/1.1 200"),
                "refresh failed: {refresh}"
            );
            peak = rss_kib(pid, "VmHWM:");
        }
        let (p50, p99) = if options.wants("latency") {
            latency(&socket(dir.path()), &secrets, options.latency_requests)?
        } else {
            (0.0, 0.0)
        };
        let (client_p50, client_p99) = if options.wants("client") {
            client_latency(&socket(dir.path()), &secrets, options.latency_requests)?
        } else {
            (0.0, 0.0)
        };
        let rates = if options.wants("throughput") {
            Some(throughput_runs(
                &socket(dir.path()),
                &secrets,
                options,
                pid,
            )?)
        } else {
            None
        };
        let per_key = if count == 0 {
            0
        } else {
            (rss.saturating_sub(baseline)) * 1024 / count as u64
        };
        let (fetch_ms, build_ms) = startup_timing(dir.path());
        println!(
            "{count:>9} | {:>8.0} | {:>13} | {:>9.0} | {per_key:>7} | {:>9.0} | {:>8.1} | {:>8.1} | {:>15} | {}",
            start_time.as_secs_f64() * 1e3,
            format!("{fetch_ms}+{build_ms}"),
            reload.as_secs_f64() * 1e3,
            peak as f64 / 1024.0,
            p50,
            p99,
            format!("{client_p50:.1}/{client_p99:.1}"),
            rates.as_ref().map(ToString::to_string).unwrap_or_default()
        );
        stop(&mut daemon);
        if count == 1_000_000 && options.wants("load") {
            targets.check(
                "1M keys loaded in ≤ 1.5 s",
                start_time.as_secs_f64() * 1e3,
                "ms",
                |v| v <= 1_500.0,
            );
            targets.check(
                "≤ 256 B/key resident (1M keys)",
                per_key as f64,
                "B",
                |v| v <= 256.0,
            );
        }
        if options.wants("latency") {
            targets.check(
                &format!("p99 ≤ 100 µs at c=1 ({count} keys)"),
                p99,
                "µs",
                |v| v <= 100.0,
            );
        }
        if let Some(rates) = &rates {
            targets.check(
                &format!("≥ 100,000 verifies/s at c=32 ({count} keys, median of runs)"),
                rates.median,
                "/s",
                |v| v >= 100_000.0,
            );
        }
    }
    targets.print();
    Ok(())
}

/// The issue's targets, each checked against what this run measured (nothing is printed for what
/// was not measured): the verdict the README's numbers are read against.
#[derive(Default)]
struct Targets(Vec<(String, f64, &'static str, bool)>);

impl Targets {
    fn check(
        &mut self,
        target: &str,
        measured: f64,
        unit: &'static str,
        met: impl Fn(f64) -> bool,
    ) {
        self.0
            .push((target.to_string(), measured, unit, met(measured)));
    }

    fn print(&self) {
        if self.0.is_empty() {
            return;
        }
        println!("targets:");
        for (target, measured, unit, met) in &self.0 {
            let verdict = if *met { "met" } else { "NOT MET" };
            println!("  {target}: {verdict} ({measured:.1} {unit})");
        }
    }
}

/// Throughput with the monitoring off and on, runs interleaved (off, on, off, on, …), each on a
/// fresh daemon: the medians and their difference.
fn bench_monitoring(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let count = options.counts.first().copied().unwrap_or(1_000);
    let secrets = write_key_file(&dir.path().join("keys.json"), count)?;
    let sink = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let sink_port = sink.local_addr()?.port();
    let datagrams = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = datagrams.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while sink.recv(&mut buffer).is_ok() {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let off = "usage_path = \"none\"\n".to_string();
    let on = format!(
        "metrics_listen = \"127.0.0.1:{metrics_port}\"\nusage_path = \"{}\"\n[stats]\nprotocol = \"udp\"\ndest_host = \"127.0.0.1\"\ndest_port = {sink_port}\nflush_interval = \"1s\"\n",
        dir.path().join("usage.json").display()
    );
    let (mut rates_off, mut rates_on, mut scrapes) = (Vec::new(), Vec::new(), 0);
    for _ in 0..options.runs {
        for (config, rates) in [(&off, &mut rates_off), (&on, &mut rates_on)] {
            let (mut daemon, _) = start_with(dir.path(), &secrets, config)?;
            let scraper = (config == &on).then(|| scrape_every_second(metrics_port));
            let (rate, _) = throughput(
                &socket(dir.path()),
                &secrets,
                options.connections,
                options.seconds,
            )?;
            if let Some((stop, thread)) = scraper {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                scrapes += thread.join().unwrap_or(0);
            }
            stop(&mut daemon);
            rates.push(rate);
        }
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (off_median, on_median) = (median(&mut rates_off), median(&mut rates_on));
    println!(
        "{count} keys, c={}, {} runs of {} s each way",
        options.connections, options.runs, options.seconds
    );
    println!("monitoring off: {rates_off:.0?} verifies/s, median {off_median:.0}");
    println!("monitoring on:  {rates_on:.0?} verifies/s, median {on_median:.0}");
    println!(
        "difference of the medians: {:+.1}% ({scrapes} scrapes answered, {} stats datagrams received)",
        (on_median / off_median - 1.0) * 100.0,
        datagrams.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(())
}

/// Throughput of `/auth` and `/verify` on one daemon, runs interleaved: the medians and their
/// difference.
fn bench_auth(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let count = options.counts.first().copied().unwrap_or(1_000);
    let secrets = write_key_file(&dir.path().join("keys.json"), count)?;
    let (mut daemon, _) = start(dir.path(), &secrets)?;
    let answer = exchange(&socket(dir.path()), &auth_request(&secrets[0]))?;
    anyhow::ensure!(
        answer.starts_with("HTTP/1.1 200"),
        "/auth refused a known key: {answer}"
    );
    let (mut verify, mut auth) = (Vec::new(), Vec::new());
    for _ in 0..options.runs {
        for (build, rates) in [
            (verify_request as fn(&str) -> Vec<u8>, &mut verify),
            (auth_request, &mut auth),
        ] {
            let (rate, _) = throughput_of(
                &socket(dir.path()),
                &secrets,
                options.connections,
                options.seconds,
                build,
            )?;
            rates.push(rate);
        }
    }
    stop(&mut daemon);
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (verify_median, auth_median) = (median(&mut verify), median(&mut auth));
    println!(
        "{count} keys, c={}, {} runs of {} s each",
        options.connections, options.runs, options.seconds
    );
    println!("POST /verify: {verify:.0?} verifies/s, median {verify_median:.0}");
    println!("GET /auth:    {auth:.0?} answers/s, median {auth_median:.0}");
    println!(
        "difference of the medians: {:+.1}%",
        (auth_median / verify_median - 1.0) * 100.0
    );
    Ok(())
}

/// Scrapes `GET /metrics` on 127.0.0.1:`port` every second until told to stop; returns how many
/// scrapes were answered 200.
fn scrape_every_second(
    port: u16,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<usize>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::spawn(move || {
        let mut answered = 0;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = stream
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut answer = String::new();
                let _ = stream.read_to_string(&mut answer);
                answered += usize::from(answer.starts_with("HTTP/1.1 200"));
            }
        }
        answered
    });
    (stop, thread)
}

/// The same latency and throughput measurements against a bare hyper server.
/// `--change-cost`: per key count, the object's size and one host's reload after a change of the
/// key object; then a revocation through the change log.
fn bench_change_cost(options: &Options) -> anyhow::Result<()> {
    println!("a change of the key object, loaded whole (median of 3):");
    println!(
        "{:>9} | {:>10} | {:>8} | {:>8} | {:>10} | fleet bytes per change at 1,000 / 10,000 hosts",
        "keys", "object MB", "fetch ms", "build ms", "refresh ms"
    );
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("keys.json");
    for &count in &options.counts {
        write_key_file(&path, count)?;
        let body = std::fs::read(&path)?;
        let changes = heare_auth_tests::change_cost::measure(&body, 3)?;
        let median = |f: fn(&heare_auth_tests::change_cost::Change) -> u64| {
            let mut values: Vec<u64> = changes.iter().map(f).collect();
            values.sort_unstable();
            values[values.len() / 2]
        };
        let mb = body.len() as f64 / 1e6;
        println!(
            "{count:>9} | {mb:>10.1} | {:>8} | {:>8} | {:>10} | {:.1} GB / {:.1} GB",
            median(|c| c.fetch_ms),
            median(|c| c.build_ms),
            median(|c| c.refresh_ms),
            mb * 1_000.0 / 1e3,
            mb * 10_000.0 / 1e3,
        );
    }
    bench_log_cost(options, &path)
}

/// The second half of `--change-cost`: revocations through the change log (5 each).
fn bench_log_cost(options: &Options, path: &Path) -> anyhow::Result<()> {
    println!("a revocation through the change log (median and worst of 5):");
    println!(
        "{:>9} | {:>14} | {:>21} | {:>15} | {:>17} | fleet bytes per change at 1,000 / 10,000 hosts",
        "keys", "bytes/change", "to refusal ms med/max", "steady RSS MiB", "RSS after, max +%"
    );
    for &count in &options.counts {
        let (ids, secrets) = write_keys(path, count)?;
        let body = std::fs::read(path)?;
        let (steady, changes) =
            heare_auth_tests::change_cost::measure_log(&body, &ids, &secrets, 5)?;
        let mut bytes: Vec<usize> = changes.iter().map(|c| c.bytes).collect();
        bytes.sort_unstable();
        let mut times: Vec<f64> = changes.iter().map(|c| c.to_refusal_ms).collect();
        times.sort_by(f64::total_cmp);
        let rss_max = changes.iter().map(|c| c.rss_kib).max().unwrap_or(0);
        let grown = (rss_max as f64 / steady.max(1) as f64 - 1.0) * 100.0;
        let per_change = bytes[bytes.len() / 2];
        println!(
            "{count:>9} | {per_change:>14} | {:>10.1} / {:>8.1} | {:>15.1} | {:>10.1} {grown:>+5.1}% | {:.1} MB / {:.1} MB",
            times[times.len() / 2],
            times[times.len() - 1],
            steady as f64 / 1024.0,
            rss_max as f64 / 1024.0,
            per_change as f64 * 1_000.0 / 1e6,
            per_change as f64 * 10_000.0 / 1e6,
        );
    }
    Ok(())
}

fn bench_bare(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("bare.sock");
    let mut server = serve_bare_command(&socket)?.spawn()?;
    while exchange(&socket, &verify_request("x")).is_err() {
        if let Some(status) = server.try_wait()? {
            anyhow::bail!("the bare server exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let secrets = vec!["sec_0bare".to_string()];
    let (p50, p99) = latency(&socket, &secrets, options.latency_requests)?;
    let rates = throughput_runs(&socket, &secrets, options, server.id())?;
    println!(
        "bare hyper: p50 {p50:.1} µs, p99 {p99:.1} µs, requests/s best/median (CPU µs per request: server+generator) {rates}"
    );
    stop(&mut server);
    Ok(())
}

/// This program serving the bare server on `socket` (`--serve-bare`).
fn serve_bare_command(socket: &Path) -> anyhow::Result<Command> {
    let mut command = wrapped(&std::env::current_exe()?);
    command.arg("--serve-bare").arg(socket).stdin(Stdio::null());
    Ok(command)
}

/// `program` under `$HEARE_BENCH_WRAPPER` when set (`valgrind --tool=callgrind` runs the
/// server, the daemon or the bare one, under a profiler).
fn wrapped(program: &Path) -> Command {
    let wrapper: Vec<String> = std::env::var("HEARE_BENCH_WRAPPER")
        .map(|w| w.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    match wrapper.split_first() {
        Some((first, args)) => {
            let mut command = Command::new(first);
            command.args(args).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A bare hyper HTTP/1.1 server on a Unix socket answering every request with a fixed JSON body,
/// on the same runtime flavour as the daemon (multi-threaded, one worker per CPU).
fn serve_bare(socket: &Path) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let body = Bytes::from_static(
        br#"{"valid":true,"key_id":"key_0bare","name":"bare","metadata":{},"error":null}"#,
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = tokio::net::UnixListener::bind(socket)?;
            loop {
                let (stream, _) = listener.accept().await?;
                let body = body.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |request: hyper::Request<hyper::body::Incoming>| {
                            let body = body.clone();
                            async move {
                                use http_body_util::BodyExt;
                                let _ = request.into_body().collect().await;
                                let mut response = hyper::Response::new(Full::new(body));
                                response.headers_mut().insert(
                                    hyper::header::CONTENT_TYPE,
                                    hyper::header::HeaderValue::from_static("application/json"),
                                );
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}

/// `fetch_ms` and `build_ms` of the daemon's `startup` log event.
fn startup_timing(dir: &Path) -> (u64, u64) {
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["event"] == "startup")
        .map(|line| {
            (
                line["fetch_ms"].as_u64().unwrap_or(0),
                line["build_ms"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0))
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("bench.sock")
}

fn base62(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..62)] as char)
        .collect()
}

/// Writes `count` keys to `path`; returns their secrets.
fn write_key_file(path: &Path, count: usize) -> anyhow::Result<Vec<String>> {
    Ok(write_keys(path, count)?.1)
}

/// [`write_key_file`], returning the keys' ids too.
fn write_keys(path: &Path, count: usize) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut rng = rand::rng();
    let mut secrets = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    for i in 0..count {
        let secret = format!("sec_0{}{}", base62(&mut rng, 8), base62(&mut rng, 51));
        let id = format!("key_0{}{}", base62(&mut rng, 8), base62(&mut rng, 10));
        ids.push(id.clone());
        keys.push(serde_json::json!({
            "id": id,
            "secret": secret,
            "name": format!("svc-{i}"),
            "secret_type": "shared_secret",
            "created_at": "2025-01-20T10:30:00Z",
            "updated_at": null,
            "expires_at": null,
            "metadata": {"env": "prod", "team": i % 16},
        }));
        secrets.push(secret);
    }
    let body = serde_json::to_vec_pretty(&serde_json::json!({ "keys": keys }))?;
    drop(keys);
    // Flushed to disk before the daemon starts, so that the kernel writing back 370 MB of dirty
    // pages does not compete with the load being measured.
    let mut file = std::fs::File::create(path)?;
    file.write_all(&body)?;
    file.sync_all()?;
    Ok((ids, secrets))
}

fn start(dir: &Path, secrets: &[String]) -> anyhow::Result<(Child, Duration)> {
    start_with(dir, secrets, &config_text())
}

/// The daemon's configuration file: `HEARE_BENCH_CONFIG`, or empty.
fn config_text() -> String {
    std::env::var("HEARE_BENCH_CONFIG").unwrap_or_default()
}

/// [`start`] with the configuration file's text.
fn start_with(
    dir: &Path,
    secrets: &[String],
    config_text: &str,
) -> anyhow::Result<(Child, Duration)> {
    let binary = std::env::current_exe()?.with_file_name("heare-authd");
    start_daemon(dir, secrets, config_text, &binary, &extra_daemon_args())
}

/// Starts `binary` (a heare-authd) with `args` on `dir`'s key file and socket, its log in
/// `dir/daemon.log`; returns once it answers (and verifies the first secret), with the time that
/// took.
fn start_daemon(
    dir: &Path,
    secrets: &[String],
    config_text: &str,
    binary: &Path,
    args: &[String],
) -> anyhow::Result<(Child, Duration)> {
    let config = dir.join("bench.toml");
    std::fs::write(&config, config_text)?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let started = Instant::now();
    let mut child = wrapped(binary)
        .arg("--config")
        .arg(&config)
        .arg("--store")
        .arg(format!("file://{}", dir.join("keys.json").display()))
        .arg("--socket")
        .arg(socket(dir))
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()?;
    let probe = "POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
    loop {
        if let Ok(answer) = exchange(&socket(dir), probe.as_bytes())
            && !answer.is_empty()
        {
            break;
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("heare-authd exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed();
    if let Some(secret) = secrets.first() {
        let answer = exchange(&socket(dir), &verify_request(secret))?;
        anyhow::ensure!(
            answer.starts_with("HTTP/1.1 200"),
            "a known secret did not verify: {answer}"
        );
    }
    Ok((child, elapsed))
}

/// Extra daemon flags from `$HEARE_BENCH_DAEMON_ARGS` (e.g. `--log-level warn` to measure the
/// cost of per-verification logging).
fn extra_daemon_args() -> Vec<String> {
    std::env::var("HEARE_BENCH_DAEMON_ARGS")
        .map(|args| args.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// A forward-auth request as nginx's `auth_request` sends it: GET, the key in a header, no body.
fn auth_request(secret: &str) -> Vec<u8> {
    format!(
        "GET /auth HTTP/1.1\r\nHost: x\r\nUser-Agent: heare-auth-bench\r\nAuthorization: Bearer {secret}\r\nX-Original-URI: /orders/7\r\n\r\n"
    )
    .into_bytes()
}

fn verify_request(secret: &str) -> Vec<u8> {
    let body = format!("{{\"api_key\":\"{secret}\"}}");
    format!(
        "POST /verify HTTP/1.1\r\nHost: x\r\nUser-Agent: heare-auth-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request on a fresh connection, `Connection: close` implied by dropping; returns the answer.
fn exchange(socket: &Path, request: &[u8]) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request)?;
    let mut reader = ResponseReader::default();
    let length = reader.read_one(&mut stream)?;
    Ok(String::from_utf8_lossy(&reader.buffer[..length]).into_owned())
}

/// The length of the first complete HTTP response (head and `Content-Length` body) in `buffer`.
fn complete_response(buffer: &[u8]) -> Option<usize> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let mut length = None;
    for line in buffer[..head_end].split(|&b| b == b'\n') {
        const NAME: &[u8] = b"content-length:";
        if line.len() > NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME) {
            length = std::str::from_utf8(&line[NAME.len()..])
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        }
    }
    let end = head_end + length?;
    (buffer.len() >= end).then_some(end)
}

fn is_200(response: &[u8]) -> bool {
    response.starts_with(b"HTTP/1.1 200 ")
}

/// Reads keep-alive HTTP responses (Content-Length framed) off a blocking stream.
#[derive(Default)]
struct ResponseReader {
    buffer: Vec<u8>,
    /// Bytes of the previous response still at the front of `buffer`.
    consumed: usize,
}

impl ResponseReader {
    /// Reads until `buffer` starts with a whole response; returns its length.
    fn read_one(&mut self, stream: &mut impl Read) -> std::io::Result<usize> {
        self.buffer.drain(..self.consumed);
        self.consumed = 0;
        loop {
            if let Some(end) = complete_response(&self.buffer) {
                self.consumed = end;
                return Ok(end);
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// p50 and p99 (µs) of sequential verifies on one keep-alive connection.
fn latency(socket: &Path, secrets: &[String], requests: usize) -> anyhow::Result<(f64, f64)> {
    let mut rng = rand::rng();
    let mut stream = UnixStream::connect(socket)?;
    let mut reader = ResponseReader::default();
    let mut samples = Vec::with_capacity(requests);
    for i in 0..requests + 2_000 {
        let request = verify_request(&secrets[rng.random_range(0..secrets.len())]);
        let started = Instant::now();
        stream.write_all(&request)?;
        let length = reader.read_one(&mut stream)?;
        if i >= 2_000 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
        anyhow::ensure!(is_200(&reader.buffer[..length]), "verify failed");
    }
    Ok(percentiles(samples))
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// p50 and p99 (µs) of `heare_auth_client::Client::verify` (blocking, one kept-alive connection).
fn client_latency(
    socket: &Path,
    secrets: &[String],
    requests: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut rng = rand::rng();
    let client = heare_auth_client::Client::builder().socket(socket).build();
    let mut samples = Vec::with_capacity(requests);
    for i in 0..requests + 2_000 {
        let secret = &secrets[rng.random_range(0..secrets.len())];
        let started = Instant::now();
        client.verify(secret)?;
        if i >= 2_000 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(percentiles(samples))
}

/// What `options.runs` throughput runs measured.
struct Rates {
    best: f64,
    median: f64,
    /// CPU µs per request of the server and of the generator, over all runs.
    server_cpu: f64,
    generator_cpu: f64,
}

/// "best/median (server+generator CPU µs per request)", as the table shows it.
impl std::fmt::Display for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0}/{:.0} ({:.1}+{:.1})",
            self.best, self.median, self.server_cpu, self.generator_cpu
        )
    }
}

/// `options.runs` throughput runs: best and median requests per second, and the CPU time the
/// server (`server`: its pid) and the generator spent per request, over all runs (the CPU cost is
/// steadier than the rate on a shared machine).
fn throughput_runs(
    socket: &Path,
    secrets: &[String],
    options: &Options,
    server: u32,
) -> anyhow::Result<Rates> {
    let mut rates = Vec::with_capacity(options.runs);
    let (server_before, own_before) = (cpu_ticks(server), cpu_ticks(std::process::id()));
    let mut requests = 0;
    for _ in 0..options.runs {
        let (rate, done) = throughput(socket, secrets, options.connections, options.seconds)?;
        rates.push(rate);
        requests += done;
    }
    let per_request = |before: u64, pid: u32| {
        // /proc ticks are 1/100 s (USER_HZ on Linux).
        cpu_ticks(pid).saturating_sub(before) as f64 * 1e4 / requests.max(1) as f64
    };
    rates.sort_by(f64::total_cmp);
    Ok(Rates {
        best: rates[rates.len() - 1],
        median: rates[rates.len() / 2],
        server_cpu: per_request(server_before, server),
        generator_cpu: per_request(own_before, std::process::id()),
    })
}

/// One daemon of an interleaved comparison: its directory (where its socket is) and its pid.
#[derive(Clone, Copy)]
struct Contestant<'a> {
    dir: &'a Path,
    pid: u32,
}

/// What the interleaved runs measured of one daemon.
struct Runs {
    /// Verifies per second, run by run.
    rates: Vec<f64>,
    /// The daemon's CPU µs per verify over all its runs (steadier than the rate on a shared
    /// machine).
    cpu_per_verify: f64,
}

/// `options.runs` throughput runs of each of two daemons, alternating which goes first.
fn interleaved(
    options: &Options,
    contestants: [Contestant<'_>; 2],
    secrets: &[String],
) -> anyhow::Result<[Runs; 2]> {
    let mut measured = contestants.map(|_| (Vec::new(), 0u64, 0u64));
    for run in 0..options.runs {
        let mut order = [0, 1];
        if run % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let Contestant { dir, pid } = contestants[i];
            let before = cpu_ticks(pid);
            let (rate, done) =
                throughput(&socket(dir), secrets, options.connections, options.seconds)?;
            let (rates, ticks, requests) = &mut measured[i];
            rates.push(rate);
            *ticks += cpu_ticks(pid).saturating_sub(before);
            *requests += done;
        }
    }
    // /proc ticks are 1/100 s (USER_HZ on Linux).
    Ok(measured.map(|(rates, ticks, requests)| Runs {
        rates,
        cpu_per_verify: ticks as f64 * 1e4 / requests.max(1) as f64,
    }))
}

/// The median of `values` (0 for none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// User plus system CPU time of process `pid` (all its threads), in 1/100 s.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    [11, 12]
        .iter()
        .filter_map(|&n| fields.get(n)?.parse::<u64>().ok())
        .sum()
}

/// Verifies per second over `connections` keep-alive connections from one thread: each
/// connection has one request in flight, and sends the next once the whole answer (a 200) is in.
fn throughput(
    socket: &Path,
    secrets: &[String],
    connections: usize,
    seconds: u64,
) -> anyhow::Result<(f64, u64)> {
    throughput_of(socket, secrets, connections, seconds, verify_request)
}

/// [`throughput`] with the requests `build` makes from a secret.
fn throughput_of(
    socket: &Path,
    secrets: &[String],
    connections: usize,
    seconds: u64,
    build: fn(&str) -> Vec<u8>,
) -> anyhow::Result<(f64, u64)> {
    use std::cell::Cell;
    use std::rc::Rc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let running = Rc::new(Cell::new(true));
        let mut tasks = Vec::new();
        for c in 0..connections {
            let mut stream = tokio::net::UnixStream::connect(socket).await?;
            let requests: Vec<Vec<u8>> = (0..64)
                .map(|i| build(&secrets[(c * 7919 + i * 104_729) % secrets.len()]))
                .collect();
            let running = running.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let mut done = 0u64;
                let mut buffer = vec![0u8; 4096];
                let mut filled = 0;
                while running.get() {
                    stream
                        .write_all(&requests[done as usize % requests.len()])
                        .await?;
                    let length = loop {
                        if let Some(length) = complete_response(&buffer[..filled]) {
                            break length;
                        }
                        if filled == buffer.len() {
                            buffer.resize(buffer.len() * 2, 0);
                        }
                        let read = stream.read(&mut buffer[filled..]).await?;
                        if read == 0 {
                            anyhow::bail!("the server closed a connection");
                        }
                        filled += read;
                    };
                    anyhow::ensure!(is_200(&buffer[..length]), "a verify was not answered 200");
                    buffer.copy_within(length..filled, 0);
                    filled -= length;
                    done += 1;
                }
                Ok(done)
            }));
        }
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        running.set(false);
        let elapsed = started.elapsed();
        let mut total = 0u64;
        for task in tasks {
            total += task.await??;
        }
        Ok((total as f64 / elapsed.as_secs_f64(), total))
    })
}
