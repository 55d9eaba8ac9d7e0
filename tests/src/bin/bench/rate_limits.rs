//! `--rate-limits`: what per-key rate limits cost a verify, and how exactly they hold.
//!
//! - Cost: two daemons of this build on the same keys (the first key count), one where every key
//!   has its own `rate_limit` set far above what the run can reach, one without; each run measures
//!   both in turn (the order alternating) at `--connections` for `--seconds`. The medians and
//!   their ratio are printed, with each daemon's CPU per verify. With `--compare BINARY`, this
//!   build against BINARY instead, both on the limited keys.
//! - Accuracy: one daemon, one key limited to 100/1s (burst 100), five client threads each
//!   verifying it as fast as they can for 10 s on keep-alive connections; the accepted count is
//!   printed against `burst + rate × seconds` for the seconds the clients ran.
//!
//! With a `redis-server` (Debian's, or `HEARE_TEST_REDIS_SERVER`), started on 127.0.0.1 for the
//! run, two more:
//!
//! - The Redis backend: every key limited (never reached) on two daemons, the local backend
//!   against `backend = "redis"` (with `on_backend_error = "deny"`, so that a decision Redis did
//!   not make is a 429 and fails the run rather than passing unseen); interleaved throughput runs,
//!   then p50/p99 of `--latency` sequential verifies on one connection of each, and the backend
//!   errors the Redis daemon counted.
//! - Fleet accuracy: three daemons sharing the Redis (one `redis_prefix`), five clients each
//!   hammering one key limited to 100/1s (burst 100) for 10 s; the total accepted against
//!   `burst + rate × seconds`.

use super::{
    Contestant, Options, exchange, instructions, interleaved, latency, median, socket,
    start_daemon, stop, verify_request, write_keys,
};
use heare_auth_tests::redis_server::{PROGRAM_ENV, RedisServer};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The limit every key of the cost runs gets: never reached at any rate this host can drive.
const UNREACHED: &str = r#"{"requests": 1000000, "per": "1s"}"#;
/// The key of the accuracy runs.
const ACCURACY_SECRET: &str = "sec_accuracy_0123456789";
/// How long the accuracy runs hammer their key.
const ACCURACY_RUN: Duration = Duration::from_secs(10);

/// Runs the measurements `--only` names (of cost, accuracy, redis, fleet; default all) and prints
/// them.
pub fn run(options: &Options) -> anyhow::Result<()> {
    if options.only.iter().any(|what| what == "instructions") {
        instructions(options)?;
    }
    if options.wants("cost") {
        cost(options)?;
    }
    if options.wants("accuracy") {
        accuracy()?;
    }
    if !options.wants("redis") && !options.wants("fleet") {
        return Ok(());
    }
    if !RedisServer::available() {
        println!(
            "redis-server not found (PATH or {PROGRAM_ENV}): the Redis backend is not measured"
        );
        return Ok(());
    }
    let redis = RedisServer::start()?;
    if options.wants("redis") {
        redis_cost(options, &redis)?;
    }
    if options.wants("fleet") {
        fleet_accuracy(&redis)?;
    }
    Ok(())
}

/// `count` keys in `plain/keys.json`, and the same keys each limited to [`UNREACHED`] in
/// `limited/keys.json`; returns the secrets.
fn limited_keys(plain: &Path, limited: &Path, count: usize) -> anyhow::Result<Vec<String>> {
    let (_, secrets) = write_keys(&plain.join("keys.json"), count)?;
    let body = std::fs::read_to_string(plain.join("keys.json"))?;
    let with_limits = body.replace(
        "\"secret\":",
        &format!("\"rate_limit\": {UNREACHED}, \"secret\":"),
    );
    anyhow::ensure!(with_limits != body, "no key got a limit");
    std::fs::write(limited.join("keys.json"), with_limits)?;
    Ok(secrets)
}

/// A daemon of this measurement, stopped (SIGTERM, then waited for) when dropped, on every path.
struct Running(Child);

impl Running {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

/// Starts this build's heare-authd on `dir` at `--log-level warn` with `config`.
fn daemon(dir: &Path, secrets: &[String], config: &str) -> anyhow::Result<Running> {
    let binary = std::env::current_exe()?.with_file_name("heare-authd");
    daemon_of(&binary, dir, secrets, config)
}

/// Starts `binary` (a heare-authd) on `dir` at `--log-level warn` with `config`.
fn daemon_of(
    binary: &Path,
    dir: &Path,
    secrets: &[String],
    config: &str,
) -> anyhow::Result<Running> {
    let args = ["--log-level".to_string(), "warn".to_string()];
    Ok(Running(
        start_daemon(dir, secrets, config, binary, &args)?.0,
    ))
}

/// Measures `first` against `second` (two daemons already started on `dirs`) in interleaved
/// runs, stops both, and prints the medians, their ratio and the CPU per verify of each.
fn compare_two(
    options: &Options,
    what: &str,
    names: [&str; 2],
    daemons: [(&Path, Running); 2],
    secrets: &[String],
) -> anyhow::Result<()> {
    let [(first_dir, first), (second_dir, second)] = daemons;
    let contestants = [
        Contestant {
            dir: first_dir,
            pid: first.id(),
        },
        Contestant {
            dir: second_dir,
            pid: second.id(),
        },
    ];
    let measured = interleaved(options, contestants, secrets);
    drop((first, second));
    let [a, b] = measured?;
    let (x, y) = (median(&a.rates), median(&b.rates));
    println!(
        "{what}, c={}: {} {x:.0} verifies/s ({:.2} CPU µs/verify); {} {y:.0} ({:.2}); ratio {:.3}, CPU per verify {:.0}% (runs: {:.0?} vs {:.0?})",
        options.connections,
        names[0],
        a.cpu_per_verify,
        names[1],
        b.cpu_per_verify,
        x / y,
        a.cpu_per_verify / b.cpu_per_verify * 100.0,
        a.rates,
        b.rates
    );
    Ok(())
}

/// Every key limited (never reached) against no limits, on this build; with `--compare
/// BINARY`, this build against BINARY, both on limited keys.
fn cost(options: &Options) -> anyhow::Result<()> {
    let count = options.counts.first().copied().unwrap_or(100_000);
    let limited = tempfile::tempdir()?;
    let other = tempfile::tempdir()?;
    let secrets = limited_keys(other.path(), limited.path(), count)?;
    let config = "usage_path = \"none\"\n";
    let a = daemon(limited.path(), &secrets, config)?;
    let what = format!("{count} keys");
    match &options.compare {
        None => {
            let b = daemon(other.path(), &secrets, config)?;
            let daemons = [(limited.path(), a), (other.path(), b)];
            let names = ["every key limited (never reached)", "unlimited"];
            compare_two(options, &what, names, daemons, &secrets)
        }
        Some(binary) => {
            std::fs::copy(
                limited.path().join("keys.json"),
                other.path().join("keys.json"),
            )?;
            let b = daemon_of(binary, other.path(), &secrets, config)?;
            let daemons = [(limited.path(), a), (other.path(), b)];
            let names = ["this build", &binary.display().to_string()];
            let what = format!("{what}, every key limited (never reached)");
            compare_two(options, &what, names, daemons, &secrets)
        }
    }
}

/// Instructions per verify (callgrind) of limited keys against unlimited ones on this build, or
/// with `--compare BINARY` of this build against BINARY on limited keys.
fn instructions(options: &Options) -> anyhow::Result<()> {
    if !instructions::available() {
        println!("valgrind or callgrind_control not found: instructions not counted");
        return Ok(());
    }
    let count = options.counts.first().copied().unwrap_or(100_000);
    let limited = tempfile::tempdir()?;
    let other = tempfile::tempdir()?;
    let secrets = limited_keys(other.path(), limited.path(), count)?;
    let this = std::env::current_exe()?.with_file_name("heare-authd");
    let (names, second) = match &options.compare {
        None => (["limited", "unlimited"], this.clone()),
        Some(binary) => {
            std::fs::copy(
                limited.path().join("keys.json"),
                other.path().join("keys.json"),
            )?;
            (["this build, limited", "BINARY, limited"], binary.clone())
        }
    };
    let a = instructions::per_verify(&this, limited.path(), &secrets)?;
    let b = instructions::per_verify(&second, other.path(), &secrets)?;
    println!(
        "{count} keys, instructions per verify (callgrind): {} {a:.0}, {} {b:.0}; ratio {:.3}",
        names[0],
        names[1],
        a / b
    );
    Ok(())
}

/// Writes the accuracy key file (one key, 100/1s) into `dir`.
fn accuracy_keys(dir: &Path) -> anyhow::Result<()> {
    let keys = format!(
        r#"{{"keys": [{{"id": "key_acc", "secret": "{ACCURACY_SECRET}", "rate_limit": {{"requests": 100, "per": "1s"}}}}]}}"#
    );
    Ok(std::fs::write(dir.join("keys.json"), keys)?)
}

fn accuracy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    accuracy_keys(dir.path())?;
    let daemon = daemon(dir.path(), &[], "usage_path = \"none\"\n")?;
    let counted = hammer(&[socket(dir.path())], 5, ACCURACY_RUN);
    drop(daemon);
    let (accepted, refused, seconds) = counted?;
    print_accuracy(
        "local backend, 1 daemon, 5 clients",
        accepted,
        refused,
        seconds,
    );
    Ok(())
}

/// Prints an accuracy run's counts against `burst + rate × seconds` of the 100/1s key.
fn print_accuracy(what: &str, accepted: u64, refused: u64, seconds: f64) {
    let expected = 100.0 + 100.0 * seconds;
    println!(
        "accuracy, {what}, one key 100/1s burst 100 for {seconds:.2} s: {accepted} accepted ({:+.2}% of burst + rate × seconds = {expected:.0}), {refused} refused",
        (accepted as f64 / expected - 1.0) * 100.0
    );
}

/// The configuration of a daemon whose limits are in `redis`, under `prefix` (on its
/// unprivileged loopback port, which needs `redis_insecure`).
fn redis_config(redis: &RedisServer, prefix: &str) -> String {
    format!(
        "usage_path = \"none\"\n[rate_limit]\nbackend = \"redis\"\nredis_url = \"{}\"\nredis_insecure = true\nredis_prefix = \"{prefix}\"\non_backend_error = \"deny\"\n",
        redis.url()
    )
}

/// The local backend against the Redis backend, every key limited: throughput, then latency.
fn redis_cost(options: &Options, redis: &RedisServer) -> anyhow::Result<()> {
    let count = options.counts.first().copied().unwrap_or(100_000);
    let local = tempfile::tempdir()?;
    let shared = tempfile::tempdir()?;
    let secrets = limited_keys(shared.path(), local.path(), count)?;
    // Both directories get the limited keys.
    std::fs::copy(
        local.path().join("keys.json"),
        shared.path().join("keys.json"),
    )?;
    let config = redis_config(redis, "bench:cost:");
    let a = daemon(shared.path(), &secrets, &config)?;
    let b = daemon(local.path(), &secrets, "usage_path = \"none\"\n")?;
    // Latency first, while both run; then the throughput runs, which stop them.
    let latencies = [shared.path(), local.path()]
        .map(|dir| latency(&socket(dir), &secrets, options.latency_requests));
    let errors = backend_errors(&socket(shared.path()));
    let daemons = [(shared.path(), a), (local.path(), b)];
    let names = ["Redis backend", "local backend"];
    let what = format!("{count} keys, every key limited (never reached)");
    compare_two(options, &what, names, daemons, &secrets)?;
    let [redis_latency, local_latency] = latencies;
    let ((redis_p50, redis_p99), (local_p50, local_p99)) = (redis_latency?, local_latency?);
    println!(
        "c=1, {} sequential verifies: Redis backend p50 {redis_p50:.1} µs, p99 {redis_p99:.1} µs; local backend p50 {local_p50:.1} µs, p99 {local_p99:.1} µs; Redis backend errors before the throughput runs: {}",
        options.latency_requests, errors?
    );
    Ok(())
}

/// `heare_auth_rate_limit_backend_errors_total` as the daemon on `socket` reports it.
fn backend_errors(socket: &Path) -> anyhow::Result<f64> {
    let metrics = exchange(socket, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    metrics
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix("heare_auth_rate_limit_backend_errors_total")?;
            value.trim().parse().ok()
        })
        .ok_or_else(|| anyhow::anyhow!("no heare_auth_rate_limit_backend_errors_total in /metrics"))
}

/// Three daemons sharing `redis`, five clients each on the 100/1s key.
fn fleet_accuracy(redis: &RedisServer) -> anyhow::Result<()> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let config = redis_config(redis, "bench:fleet:");
    let mut daemons = Vec::new();
    let started = dirs.iter().try_for_each(|dir| {
        accuracy_keys(dir.path())?;
        daemons.push(daemon(dir.path(), &[], &config)?);
        anyhow::Ok(())
    });
    let sockets: Vec<PathBuf> = dirs.iter().map(|dir| socket(dir.path())).collect();
    let counted = started.and_then(|()| hammer(&sockets, 5, ACCURACY_RUN));
    let errors = backend_errors(&sockets[0]);
    drop(daemons);
    let (accepted, refused, seconds) = counted?;
    print_accuracy(
        "Redis backend, 3 daemons, 5 clients each",
        accepted,
        refused,
        seconds,
    );
    println!("  backend errors (first daemon): {}", errors?);
    Ok(())
}

/// `clients` threads on each of `sockets` verifying the accuracy key, one keep-alive connection
/// each, for `length`; returns the 200s, the 429s and the seconds from the first request to the
/// last answer.
fn hammer(
    sockets: &[PathBuf],
    clients: usize,
    length: Duration,
) -> anyhow::Result<(u64, u64, f64)> {
    let request = verify_request(ACCURACY_SECRET);
    // A first exchange proves each daemon answers before the clock starts.
    for socket in sockets {
        anyhow::ensure!(
            !exchange(socket, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")?.is_empty(),
            "a daemon does not answer"
        );
    }
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = sockets
            .iter()
            .flat_map(|socket| std::iter::repeat_n(socket, clients))
            .map(|socket| scope.spawn(|| client(socket, &request, started, length)))
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client panicked")))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let seconds = started.elapsed().as_secs_f64();
    let accepted = counts.iter().map(|c| c.0).sum();
    let refused = counts.iter().map(|c| c.1).sum();
    Ok((accepted, refused, seconds))
}

/// One keep-alive connection sending `request` until `length` has passed since `started`.
fn client(
    socket: &Path,
    request: &[u8],
    started: Instant,
    length: Duration,
) -> anyhow::Result<(u64, u64)> {
    let mut stream = UnixStream::connect(socket)?;
    let (mut accepted, mut refused) = (0, 0);
    let mut buffer = vec![0u8; 4096];
    while started.elapsed() < length {
        stream.write_all(request)?;
        let status = read_answer(&mut stream, &mut buffer)?;
        match status {
            200 => accepted += 1,
            429 => refused += 1,
            other => anyhow::bail!("unexpected status {other}"),
        }
    }
    Ok((accepted, refused))
}

/// Reads one whole answer (framed by its Content-Length) and returns its status.
fn read_answer(stream: &mut UnixStream, buffer: &mut [u8]) -> anyhow::Result<u16> {
    let mut filled = 0;
    loop {
        let read = stream.read(&mut buffer[filled..])?;
        anyhow::ensure!(read > 0, "the daemon closed the connection");
        filled += read;
        let text = String::from_utf8_lossy(&buffer[..filled]);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if filled >= head_end + 4 + length {
                let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                return Ok(status);
            }
        }
        anyhow::ensure!(filled < buffer.len(), "an answer over 4 KiB");
    }
}
