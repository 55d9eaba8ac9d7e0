//! `--rate-limits`: what per-key rate limits cost a verify, and how exactly they hold.
//!
//! - Cost: two daemons of this build on the same keys (the first key count), one where every key
//!   has its own `rate_limit` set far above what the run can reach, one without; each run measures
//!   both in turn (the order alternating) at `--connections` for `--seconds`. The medians and
//!   their ratio are printed.
//! - Accuracy: one daemon, one key limited to 100/1s (burst 100), five client threads each
//!   verifying it as fast as they can for 10 s on keep-alive connections; the accepted count is
//!   printed against `burst + rate × seconds` for the seconds the clients ran.

use super::{
    Options, exchange, socket, start_daemon, stop, throughput, verify_request, write_keys,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The limit every key of the cost run gets: never reached at any rate this host can drive.
const UNREACHED: &str = r#"{"requests": 1000000, "per": "1s"}"#;

/// Runs both measurements and prints them.
pub fn run(options: &Options) -> anyhow::Result<()> {
    cost(options)?;
    accuracy()
}

fn cost(options: &Options) -> anyhow::Result<()> {
    let count = options.counts.first().copied().unwrap_or(100_000);
    let limited = tempfile::tempdir()?;
    let plain = tempfile::tempdir()?;
    let (_, secrets) = write_keys(&plain.path().join("keys.json"), count)?;
    let body = std::fs::read_to_string(plain.path().join("keys.json"))?;
    let with_limits = body.replace(
        "\"secret\":",
        &format!("\"rate_limit\": {UNREACHED}, \"secret\":"),
    );
    anyhow::ensure!(with_limits != body, "no key got a limit");
    std::fs::write(limited.path().join("keys.json"), with_limits)?;
    let binary = std::env::current_exe()?.with_file_name("heare-authd");
    let config = "usage_path = \"none\"\n";
    let args = ["--log-level".to_string(), "warn".to_string()];
    let (mut a, _) = start_daemon(limited.path(), &secrets, config, &binary, &args)?;
    let (mut b, _) = start_daemon(plain.path(), &secrets, config, &binary, &args)?;
    let measured = interleaved(options, limited.path(), plain.path(), &secrets);
    stop(&mut a);
    stop(&mut b);
    let (with, without) = measured?;
    let (x, y) = (median(&with), median(&without));
    println!(
        "{count} keys, every key limited (never reached): {x:.0} verifies/s; unlimited: {y:.0}; ratio {:.3} (runs: {with:.0?} vs {without:.0?})",
        x / y
    );
    Ok(())
}

/// `options.runs` runs of each daemon, alternating which goes first.
fn interleaved(
    options: &Options,
    first: &Path,
    second: &Path,
    secrets: &[String],
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for run in 0..options.runs {
        let mut order = [(first, &mut a), (second, &mut b)];
        if run % 2 == 1 {
            order.reverse();
        }
        for (dir, rates) in order {
            let (rate, _) =
                throughput(&socket(dir), secrets, options.connections, options.seconds)?;
            rates.push(rate);
        }
    }
    Ok((a, b))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn accuracy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let secret = "sec_accuracy_0123456789";
    let keys = format!(
        r#"{{"keys": [{{"id": "key_acc", "secret": "{secret}", "rate_limit": {{"requests": 100, "per": "1s"}}}}]}}"#
    );
    std::fs::write(dir.path().join("keys.json"), keys)?;
    let binary = std::env::current_exe()?.with_file_name("heare-authd");
    let args = ["--log-level".to_string(), "warn".to_string()];
    let (mut daemon, _) = start_daemon(dir.path(), &[], "usage_path = \"none\"\n", &binary, &args)?;
    let counted = hammer(&socket(dir.path()), secret, 5, Duration::from_secs(10));
    stop(&mut daemon);
    let (accepted, refused, seconds) = counted?;
    let expected = 100.0 + 100.0 * seconds;
    println!(
        "accuracy, local backend, 1 daemon, 5 clients, one key 100/1s burst 100 for {seconds:.2} s: {accepted} accepted ({:+.2}% of burst + rate × seconds = {expected:.0}), {refused} refused",
        (accepted as f64 / expected - 1.0) * 100.0
    );
    Ok(())
}

/// `clients` threads verifying `secret` on one keep-alive connection each for `length`; returns
/// the 200s, the 429s and the seconds from the first request to the last answer.
fn hammer(
    socket: &Path,
    secret: &str,
    clients: usize,
    length: Duration,
) -> anyhow::Result<(u64, u64, f64)> {
    let request = verify_request(secret);
    // A first exchange proves the key is there before the clock starts.
    anyhow::ensure!(
        !exchange(socket, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")?.is_empty(),
        "the daemon does not answer"
    );
    let started = Instant::now();
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|_| scope.spawn(|| client(socket, &request, started, length)))
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
