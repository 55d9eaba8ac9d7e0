//! Times what one verification's log line costs the request thread: `cargo run --release -p
//! heare-authd --example log_line -- [LINES] [LEVEL] [PATH] > /dev/null`. Installs the daemon's
//! own JSON logging (`logging::init`, stdout through the batched writer), then logs LINES
//! (default 1,000,000) `verification_success` lines with the fields the verify handler logs (the
//! User-Agent passed through `redact::Redactor` with a generated secret, as the handler does), and
//! prints to stderr the CPU time of the logging thread per line (getrusage, user + system). PATH
//! is `direct` (default: the daemon's, `access_log` writing the line by hand) or `tracing` (the
//! same event through tracing's formatter, as every other event and as before). With LEVEL `warn`
//! (default `info`) the lines are filtered out, which gives the cost of the call site alone.

use heare_authd::access_log::{AccessLog, PeerFields};
use heare_authd::config::LogFormat;
use heare_authd::logging;
use heare_authd::redact::Redactor;
use nix::sys::resource::{UsageWho, getrusage};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let lines: u32 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let level = args.next().unwrap_or_else(|| "info".to_string());
    let guard = logging::init(LogFormat::Json, &level)?;
    let log = match args.next().as_deref() {
        None | Some("direct") => guard.access_log(),
        Some("tracing") => AccessLog::Tracing,
        Some(other) => anyhow::bail!("PATH is direct or tracing, not {other}"),
    };
    let user_agent = "heare-auth-client/0.1.0 (rust)".to_string();
    let secret = "sec_1AbCdEfGh123456789012345678901234567890123456789012345xYz789".to_string();
    let started = Instant::now();
    let cpu_before = thread_cpu()?;
    for n in 0..lines {
        let peer = PeerFields {
            uid: Some(1000),
            pid: Some(4242 + (n % 7) as i32),
            addr: None,
        };
        if log.logs_verify_successes() {
            let user_agent = Redactor::new(Some(&secret)).field(&user_agent, 256);
            let at = std::time::SystemTime::now();
            log.verification_success(at, "key_0ABCDEFGH0123456789", "svc-17", &user_agent, peer);
        }
    }
    let cpu = thread_cpu()? - cpu_before;
    let wall = started.elapsed();
    let per_line = |time: Duration| time.as_nanos() as f64 / f64::from(lines.max(1));
    eprintln!(
        "{lines} lines at level {level}: {:.0} ns CPU per line on the logging thread ({:.0} ns wall), {} dropped",
        per_line(cpu),
        per_line(wall),
        guard.dropped_lines()
    );
    Ok(())
}

/// CPU time (user + system) the calling thread has used.
fn thread_cpu() -> nix::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_THREAD)?;
    let micros = |time: nix::sys::time::TimeVal| {
        Duration::from_secs(time.tv_sec() as u64) + Duration::from_micros(time.tv_usec() as u64)
    };
    Ok(micros(usage.user_time()) + micros(usage.system_time()))
}
