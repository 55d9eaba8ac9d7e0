//! The simulated fleet: N real `heare-authd` processes on one S3 object, each with its own
//! directory (configuration file, socket, cache, log), all reaching S3 and SQS through one
//! endpoint (the counting proxy), and `heare-authctl` run against the store as an administrator
//! would, without asking any daemon to reload.
//!
//! The binaries are taken from a directory given by the caller (release or debug builds), not
//! from next to the running executable as [`crate::daemon::binary`] does. A daemon is configured
//! by its TOML file: `refresh_interval` for polling, `notify_queue` (one queue per daemon) for
//! push, `log_level = "warn"` so that the simulation's probes do not fill the disk with one log
//! line per verification. Every daemon is killed when the [`Fleet`] is dropped.

use crate::s3_server::{ACCESS_KEY, REGION, SECRET_KEY};
use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to answer and serve its first key after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Daemons started at once.
const WAVE: usize = 5;

/// What every daemon of the fleet shares.
pub struct FleetSettings {
    /// Holds `heare-authd` and `heare-authctl`.
    pub bin_dir: PathBuf,
    /// `s3://BUCKET/KEY`.
    pub store: String,
    /// S3 and SQS endpoint (the counting proxy).
    pub endpoint: String,
    /// `refresh_interval`; `None` leaves it unset (the daemon's default).
    pub refresh_interval: Option<Duration>,
    /// One `notify_queue` URL per daemon (push mode), or empty.
    pub notify_queues: Vec<String>,
}

/// One daemon of the fleet.
pub struct FleetDaemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log_path: PathBuf,
}

/// N running daemons, killed on drop.
pub struct Fleet {
    pub daemons: Vec<FleetDaemon>,
}

impl Fleet {
    /// Spawns `count` daemons under `root` (one directory each) and waits until each one answers
    /// and verifies `ready_secret`.
    pub fn start(
        root: &Path,
        settings: &FleetSettings,
        count: usize,
        ready_secret: &str,
    ) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            daemons: Vec::with_capacity(count),
        };
        // In waves: 50 daemons fetching a 100,000-key object (37 MB) from moto at once time out.
        for wave in (0..count).collect::<Vec<_>>().chunks(WAVE) {
            for &index in wave {
                fleet.daemons.push(spawn(root, settings, index)?);
            }
            let deadline = Instant::now() + READY_TIMEOUT;
            for &index in wave {
                fleet.daemons[index]
                    .wait_ready(ready_secret, deadline)
                    .with_context(|| format!("daemon {index}"))?;
            }
        }
        Ok(fleet)
    }

    /// The sockets, in daemon order.
    pub fn sockets(&self) -> Vec<PathBuf> {
        self.daemons.iter().map(|d| d.socket.clone()).collect()
    }

    /// Daemons that have exited by now, with how.
    pub fn exited(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for (index, daemon) in self.daemons.iter_mut().enumerate() {
            if let Some(child) = daemon.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited.push(format!(
                    "daemon {index} exited ({status}); log {}",
                    daemon.log_path.display()
                ));
            }
        }
        exited
    }
}

impl Drop for FleetDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Environment of every child: the test credentials and region, the endpoint for any SDK client
/// configured from the environment, no instance-metadata probing.
pub fn aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", REGION),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// The configuration file of daemon `index`.
fn config_text(settings: &FleetSettings, dir: &Path, index: usize) -> String {
    let mut text = format!(
        "store = \"{}\"\ncache_path = \"{}\"\nlog_level = \"warn\"\nworker_threads = 1\n",
        settings.store,
        dir.join("keys.cache").display()
    );
    if let Some(interval) = settings.refresh_interval {
        text.push_str(&format!(
            "refresh_interval = \"{}ms\"\n",
            interval.as_millis()
        ));
    }
    if let Some(queue) = settings.notify_queues.get(index) {
        text.push_str(&format!("notify_queue = \"{queue}\"\n"));
    }
    text.push_str(&format!(
        "[s3]\nendpoint = \"{}\"\npath_style = true\ntimeout = \"60s\"\n",
        settings.endpoint
    ));
    text
}

fn spawn(root: &Path, settings: &FleetSettings, index: usize) -> anyhow::Result<FleetDaemon> {
    let dir = root.join(format!("daemon-{index:03}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("heare-authd.toml");
    std::fs::write(&config, config_text(settings, &dir, index))
        .with_context(|| format!("writing {}", config.display()))?;
    let socket = dir.join("heare-authd.sock");
    let log_path = dir.join("daemon.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let program = settings.bin_dir.join("heare-authd");
    let child = Command::new(&program)
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(aws_env(&settings.endpoint))
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {}", program.display()))?;
    Ok(FleetDaemon {
        child: Some(child),
        socket,
        log_path,
    })
}

impl FleetDaemon {
    /// Waits until the daemon verifies `secret` (so it answers and has loaded the key file).
    fn wait_ready(&mut self, secret: &str, deadline: Instant) -> anyhow::Result<()> {
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling a daemon")?
            {
                bail!("exited with {status}:\n{}", self.log_tail());
            }
            let answer = crate::http::send(&self.socket, &crate::http::Request::verify(secret));
            if answer.is_ok_and(|a| a.status == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("not serving its keys in time:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 20 lines of the daemon's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// `heare-authctl` on the fleet's store, as an administrator runs it: straight to the S3 server
/// (not through the proxy, so that only the daemons are counted), and never asking a daemon to
/// reload (`--no-reload`, and a socket path where no daemon listens): a revocation reaches the
/// fleet through S3 only.
#[derive(Clone)]
pub struct Ctl {
    program: PathBuf,
    config: PathBuf,
    store: String,
    socket: PathBuf,
    env: Vec<(String, String)>,
}

impl Ctl {
    /// A ctl whose (empty but for `[s3]`) configuration file lives in `dir`.
    pub fn new(bin_dir: &Path, dir: &Path, store: &str, endpoint: &str) -> anyhow::Result<Ctl> {
        let config = dir.join("ctl.toml");
        std::fs::write(
            &config,
            format!("[s3]\nendpoint = \"{endpoint}\"\npath_style = true\n"),
        )
        .with_context(|| format!("writing {}", config.display()))?;
        Ok(Ctl {
            program: bin_dir.join("heare-authctl"),
            config,
            store: store.to_owned(),
            socket: dir.join("no-daemon-here.sock"),
            env: aws_env(endpoint),
        })
    }

    /// `heare-authctl delete --yes --no-reload KEY_ID`; an error holds its stderr.
    pub fn delete(&self, key_id: &str) -> anyhow::Result<()> {
        let output = Command::new(&self.program)
            .arg("--config")
            .arg(&self.config)
            .args(["--store", &self.store])
            .arg("--socket")
            .arg(&self.socket)
            .args(["delete", "--yes", "--no-reload", key_id])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.program.display()))?;
        if !output.status.success() {
            bail!(
                "heare-authctl delete {key_id} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}
