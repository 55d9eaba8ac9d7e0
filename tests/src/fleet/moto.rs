//! One `moto_server` child process on 127.0.0.1 serving S3, SNS and SQS together, for the fleet
//! simulation and the push-notification tests.
//!
//! moto in server mode is one HTTP endpoint for every service (it tells them apart by the
//! SigV4 credential scope), and it implements S3 bucket notifications to SNS topics and SNS
//! deliveries to SQS queues, which the in-process s3s server of [`crate::s3_server`] does not.
//! Also here: the `aws-sdk-*` configurations (static test credentials, path-style S3) that the
//! fleet's own setup calls use against it. The process is killed (with its process group) when
//! [`Moto`] is dropped; its output goes to a log file in a temporary directory.

use crate::s3_server::{ACCESS_KEY, MOTO_BIN_ENV, REGION, SECRET_KEY};
use anyhow::{Context as _, bail};
use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto may take to answer after it was started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `moto_server` (see the module docs).
pub struct Moto {
    port: u16,
    child: Option<Child>,
    log_dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server` (or `$HEARE_TEST_MOTO_SERVER`) on a free port of 127.0.0.1 and waits
    /// until it answers HTTP.
    pub fn start() -> anyhow::Result<Moto> {
        let mut last_error = None;
        // The port is found by binding :0 and releasing it: another process may take it first.
        for _ in 0..3 {
            let mut moto = Moto {
                port: crate::free_port(),
                child: None,
                log_dir: tempfile::Builder::new()
                    .prefix("heare-auth-fleet-moto-")
                    .tempdir()
                    .context("creating a directory for the moto_server log")?,
            };
            match moto.spawn_and_wait() {
                Ok(()) => return Ok(moto),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto_server did not start")))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("moto_server.log")
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let program =
            std::env::var_os(MOTO_BIN_ENV).unwrap_or_else(|| OsString::from("moto_server"));
        let log = std::fs::File::create(self.log_path()).context("creating the moto log")?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the moto log handle")?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!("launching {program:?} (pip install 'moto[server]', or set {MOTO_BIN_ENV})")
            })?;
        self.child = Some(child);
        self.wait_answering()
    }

    fn wait_answering(&mut self) -> anyhow::Result<()> {
        let address = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().context("polling moto_server")?
            {
                self.child = None;
                bail!(
                    "moto_server exited during startup ({status}):\n{}",
                    self.log_tail()
                );
            }
            if answers_http(address) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "moto_server did not answer on {address}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last 30 lines moto wrote.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True once an HTTP server answers a plain request on `address`.
fn answers_http(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

fn credentials() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "heare-auth-fleet")
}

/// An S3 client of `endpoint` (path-style, the test credentials). Build it inside the tokio
/// runtime that drives it.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An SNS client of `endpoint` (the test credentials).
pub fn sns_client(endpoint: &str) -> aws_sdk_sns::Client {
    let config = aws_sdk_sns::Config::builder()
        .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
        .region(aws_sdk_sns::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sns::Client::from_conf(config)
}

/// An SQS client of `endpoint` (the test credentials).
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Runs `future` to completion on a private current-thread runtime, on a thread of its own, so
/// that it works from plain code and from inside another runtime alike.
pub fn block_on<F>(future: F) -> anyhow::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a tokio runtime")?;
                Ok(runtime.block_on(future))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
