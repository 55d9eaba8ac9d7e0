//! Instructions per verify, counted by callgrind: steady where the verifies/s of a shared 2-core
//! machine swing by ±10% from one run to the next, so a change of a few percent on the verify
//! path can be seen at all.
//!
//! The daemon runs under `valgrind --tool=callgrind` on `dir`'s key file; after it answers, a
//! first round of verifies warms it up, `callgrind_control -z` zeroes the counts, the measured
//! verifies run on one keep-alive connection ([`super::latency`], its own warm-up included), and
//! `callgrind_control -d` dumps the counts, whose total over the verifies is the result. Every
//! thread of the daemon is counted (the runtime's workers, the log writer): what a verify costs
//! the whole daemon. Instructions are not time — a cache miss costs no instruction — so the
//! verifies/s runs stay the measure of speed; this one tells where instructions went.

use super::{config_text, exchange, latency, socket, stop};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Measured verifies (after [`super::latency`]'s 2,000 of warm-up, which are counted too).
const MEASURED: usize = 1_000;
/// What [`super::latency`] sends for [`MEASURED`].
const SENT: usize = MEASURED + 2_000;
/// How long the daemon may take to answer under callgrind.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether `valgrind` and `callgrind_control` can be run.
pub fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|program| {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// Instructions per verify of `binary` (a heare-authd) on `dir`'s key file, verifying
/// `secrets` at random, at `--log-level warn` without a usage file, followed in its
/// configuration by `HEARE_BENCH_CONFIG` (e.g. a `[rate_limit]` table with the Redis backend).
pub fn per_verify(binary: &Path, dir: &Path, secrets: &[String]) -> anyhow::Result<f64> {
    let config = format!("usage_path = \"none\"\n{}", config_text());
    std::fs::write(dir.join("bench.toml"), config)?;
    let mut daemon = start(binary, dir)?;
    let counted = count(&daemon, dir, secrets);
    stop(&mut daemon);
    let total = counted?;
    Ok(total as f64 / SENT as f64)
}

fn start(binary: &Path, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("callgrind.log"))?;
    let mut daemon = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!(
            "--callgrind-out-file={}",
            dir.join("cg.out").display()
        ))
        .arg(binary)
        .arg("--config")
        .arg(dir.join("bench.toml"))
        .arg("--store")
        .arg(format!("file://{}", dir.join("keys.json").display()))
        .arg("--socket")
        .arg(socket(dir))
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let started = Instant::now();
    let probe = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    while !exchange(&socket(dir), probe).is_ok_and(|answer| !answer.is_empty()) {
        if let Some(status) = daemon.try_wait()? {
            anyhow::bail!("heare-authd under callgrind exited: {status}");
        }
        if started.elapsed() > START_TIMEOUT {
            stop(&mut daemon);
            anyhow::bail!("heare-authd under callgrind did not answer in {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(daemon)
}

/// Warms `daemon` up, zeroes its counts, verifies, dumps; the instructions counted.
fn count(daemon: &Child, dir: &Path, secrets: &[String]) -> anyhow::Result<u64> {
    latency(&socket(dir), secrets, 300)?;
    control(daemon, "-z")?;
    latency(&socket(dir), secrets, MEASURED)?;
    control(daemon, "-d")?;
    dumped_total(dir)
}

fn control(daemon: &Child, flag: &str) -> anyhow::Result<()> {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(daemon.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "callgrind_control {flag} failed: {status}"
    );
    Ok(())
}

/// The instructions in the dumps `callgrind_control -d` wrote (`cg.out.N`).
fn dumped_total(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut dumps = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("cg.out.") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let line = text
            .lines()
            .find(|l| l.starts_with("totals:") || l.starts_with("summary:"));
        let value = line.and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok());
        total += value.ok_or_else(|| anyhow::anyhow!("no total in {}", path.display()))?;
        dumps += 1;
    }
    anyhow::ensure!(dumps > 0, "callgrind wrote no dump");
    Ok(total)
}
