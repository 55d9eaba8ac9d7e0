//! `heare-auth-bench`: measures the real daemon binary over its real Unix socket.
//!
//! For each key count it writes a key file in the Python service's format (plaintext secrets,
//! pretty-printed, short names, small metadata), starts the release `heare-authd` on it with the
//! default per-verification JSON logging going to a file, and reports: load time (spawn to first
//! answer, and a full `POST /refresh`), resident memory per key (RSS over an empty daemon's RSS),
//! peak RSS while a reload holds two sets, verify latency p50/p99 on one keep-alive connection, and
//! the same through `heare_auth_client::Client` (the blocking client), and throughput with 32
//! keep-alive connections driven by a single-threaded load generator.
//!
//! Run: `cargo build --release --workspace --bins && target/release/heare-auth-bench [N,N,...]`
//! (default 1000,100000,1000000). `HEARE_BENCH_DAEMON_ARGS="--log-level warn"` passes extra flags
//! to the daemon, `HEARE_BENCH_CONFIG` is the text of its configuration file.

use rand::Rng;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LATENCY_REQUESTS: usize = 50_000;
const THROUGHPUT_SECONDS: u64 = 5;
const CONNECTIONS: usize = 32;

fn main() -> anyhow::Result<()> {
    let counts: Vec<usize> = match std::env::args().nth(1) {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1_000, 100_000, 1_000_000],
    };
    let dir = tempfile::tempdir()?;
    let baseline = {
        let secrets = write_key_file(dir.path(), 0)?;
        let (mut daemon, _) = start(dir.path(), &secrets)?;
        let rss = rss_kib(daemon.id(), "VmRSS:");
        stop(&mut daemon);
        rss
    };
    println!("empty daemon RSS: {baseline} KiB");
    println!(
        "{:>9} | {:>8} | {:>13} | {:>9} | {:>7} | {:>9} | {:>8} | {:>8} | {:>15} | {:>11}",
        "keys",
        "start ms",
        "read+build ms",
        "reload ms",
        "B/key",
        "peak MiB",
        "p50 µs",
        "p99 µs",
        "client p50/p99",
        "verifies/s"
    );
    for count in counts {
        let secrets = write_key_file(dir.path(), count)?;
        let (mut daemon, start_time) = start(dir.path(), &secrets)?;
        let pid = daemon.id();
        let rss = rss_kib(pid, "VmRSS:");
        let reload_started = Instant::now();
        let refresh = exchange(
            &socket(dir.path()),
            b"POST /refresh HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        )?;
        let reload = reload_started.elapsed();
        anyhow::ensure!(
            refresh.starts_with("HTTP/1.1 200"),
            "refresh failed: {refresh}"
        );
        let peak = rss_kib(pid, "VmHWM:");
        let (p50, p99) = latency(&socket(dir.path()), &secrets)?;
        let (client_p50, client_p99) = client_latency(&socket(dir.path()), &secrets)?;
        let rate = throughput(&socket(dir.path()), &secrets)?;
        let per_key = if count == 0 {
            0
        } else {
            (rss.saturating_sub(baseline)) * 1024 / count as u64
        };
        let (fetch_ms, build_ms) = startup_timing(dir.path());
        println!(
            "{count:>9} | {:>8.0} | {:>13} | {:>9.0} | {per_key:>7} | {:>9.0} | {:>8.1} | {:>8.1} | {:>15} | {rate:>11.0}",
            start_time.as_secs_f64() * 1e3,
            format!("{fetch_ms}+{build_ms}"),
            reload.as_secs_f64() * 1e3,
            peak as f64 / 1024.0,
            p50,
            p99,
            format!("{client_p50:.1}/{client_p99:.1}")
        );
        stop(&mut daemon);
    }
    Ok(())
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

/// Writes `count` keys; returns their secrets.
fn write_key_file(dir: &Path, count: usize) -> anyhow::Result<Vec<String>> {
    let mut rng = rand::rng();
    let mut secrets = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    for i in 0..count {
        let secret = format!("sec_0{}{}", base62(&mut rng, 8), base62(&mut rng, 51));
        keys.push(serde_json::json!({
            "id": format!("key_0{}{}", base62(&mut rng, 8), base62(&mut rng, 10)),
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
    std::fs::write(dir.join("keys.json"), body)?;
    Ok(secrets)
}

fn start(dir: &Path, secrets: &[String]) -> anyhow::Result<(Child, Duration)> {
    let binary = std::env::current_exe()?.with_file_name("heare-authd");
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        std::env::var("HEARE_BENCH_CONFIG").unwrap_or_default(),
    )?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .arg("--store")
        .arg(format!("file://{}", dir.join("keys.json").display()))
        .arg("--socket")
        .arg(socket(dir))
        .args(extra_daemon_args())
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

fn verify_request(secret: &str) -> Vec<u8> {
    let body = format!("{{\"api_key\":\"{secret}\"}}");
    format!(
        "POST /verify HTTP/1.1\r\nHost: x\r\nUser-Agent: heare-auth-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request on a fresh connection, `Connection: close` implied by dropping; returns the head.
fn exchange(socket: &Path, request: &[u8]) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(request)?;
    let mut reader = ResponseReader::default();
    reader.read_one(&mut stream)?;
    Ok(String::from_utf8_lossy(&reader.last).into_owned())
}

/// Reads keep-alive HTTP responses (Content-Length framed) off a stream.
#[derive(Default)]
struct ResponseReader {
    buffer: Vec<u8>,
    last: Vec<u8>,
}

impl ResponseReader {
    fn read_one(&mut self, stream: &mut impl Read) -> std::io::Result<()> {
        loop {
            if let Some(end) = self.complete() {
                self.last = self.buffer.drain(..end).collect();
                return Ok(());
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    fn complete(&self) -> Option<usize> {
        let head_end = self.buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&self.buffer[..head_end]).ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().to_string())
            })?
            .parse()
            .ok()?;
        (self.buffer.len() >= head_end + length).then_some(head_end + length)
    }
}

/// p50 and p99 (µs) of sequential verifies on one keep-alive connection.
fn latency(socket: &Path, secrets: &[String]) -> anyhow::Result<(f64, f64)> {
    let mut rng = rand::rng();
    let mut stream = UnixStream::connect(socket)?;
    let mut reader = ResponseReader::default();
    let mut samples = Vec::with_capacity(LATENCY_REQUESTS);
    for i in 0..LATENCY_REQUESTS + 2_000 {
        let request = verify_request(&secrets[rng.random_range(0..secrets.len())]);
        let started = Instant::now();
        stream.write_all(&request)?;
        reader.read_one(&mut stream)?;
        if i >= 2_000 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
        anyhow::ensure!(reader.last.starts_with(b"HTTP/1.1 200"), "verify failed");
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}

/// p50 and p99 (µs) of `heare_auth_client::Client::verify` (blocking, one kept-alive connection).
fn client_latency(socket: &Path, secrets: &[String]) -> anyhow::Result<(f64, f64)> {
    let mut rng = rand::rng();
    let client = heare_auth_client::Client::builder().socket(socket).build();
    let mut samples = Vec::with_capacity(LATENCY_REQUESTS);
    for i in 0..LATENCY_REQUESTS + 2_000 {
        let secret = &secrets[rng.random_range(0..secrets.len())];
        let started = Instant::now();
        client.verify(secret)?;
        if i >= 2_000 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}

/// Verifies per second over CONNECTIONS keep-alive connections, one thread, non-blocking I/O.
fn throughput(socket: &Path, secrets: &[String]) -> anyhow::Result<f64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let deadline = tokio::time::Instant::now() + Duration::from_secs(THROUGHPUT_SECONDS);
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let mut stream = tokio::net::UnixStream::connect(socket).await?;
            let requests: Vec<Vec<u8>> = (0..64)
                .map(|i| verify_request(&secrets[(c * 7919 + i * 104_729) % secrets.len()]))
                .collect();
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                let mut reader = ResponseReader::default();
                let mut chunk = vec![0u8; 4096];
                while tokio::time::Instant::now() < deadline {
                    stream
                        .write_all(&requests[done as usize % requests.len()])
                        .await?;
                    loop {
                        if let Some(end) = reader.complete() {
                            reader.buffer.drain(..end);
                            break;
                        }
                        let read = stream.read(&mut chunk).await?;
                        if read == 0 {
                            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                        }
                        reader.buffer.extend_from_slice(&chunk[..read]);
                    }
                    done += 1;
                }
                Ok(done)
            }));
        }
        let mut total = 0u64;
        for task in tasks {
            total += task.await??;
        }
        Ok(total as f64 / THROUGHPUT_SECONDS as f64)
    })
}
