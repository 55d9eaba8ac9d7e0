//! Spawning the real `heare-authd` binary for a test and talking to it.
//!
//! Each daemon gets `--config` pointing at a file of the test's own (empty unless given) (so a system-wide
//! `/etc/heare-auth/heare-authd.toml` can never leak into a test), a clean environment, a socket
//! in the test's directory, and its stdout/stderr appended to one log file that the test can scan
//! (for example, for secrets that must never appear).

use crate::http::{self, Request, Response};
use crate::wait_until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// Path of a workspace binary (`heare-authd`, `heare-authctl`) next to the test executable, or
/// from `$<NAME>_BIN` (e.g. `HEARE_AUTHD_BIN`).
pub fn binary(name: &str) -> PathBuf {
    let variable = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Ok(path) = std::env::var(&variable) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let mut dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --lib --bins --examples` before the tests, or set {variable}",
        path.display()
    );
    path
}

/// How to start a daemon.
pub struct DaemonBuilder {
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    socket: PathBuf,
    config: String,
    wrapper: Vec<String>,
}

impl DaemonBuilder {
    /// A daemon whose socket, config and log live in `dir`.
    pub fn new(dir: &Path) -> Self {
        DaemonBuilder {
            dir: dir.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            socket: dir.join("heare-authd.sock"),
            config: String::new(),
            wrapper: Vec::new(),
        }
    }

    /// Runs the daemon under this command (e.g. `bwrap … --`), which must exec or supervise it;
    /// `Daemon::pid` is then the wrapper's.
    pub fn wrapped_in<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.wrapper = command.into_iter().map(Into::into).collect();
        self
    }

    /// The configuration file's text (TOML); empty by default.
    pub fn config(mut self, text: &str) -> Self {
        self.config = text.to_string();
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn envs(mut self, vars: Vec<(String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    pub fn socket(mut self, socket: PathBuf) -> Self {
        self.socket = socket;
        self
    }

    /// Spawns the daemon without waiting for it.
    pub fn spawn(self) -> Daemon {
        let config = self.dir.join("heare-authd.toml");
        std::fs::write(&config, &self.config).expect("write the config file");
        let log_path = self.dir.join("daemon.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the daemon log");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary("heare-authd"));
                command
            }
            None => Command::new(binary("heare-authd")),
        };
        let child = command
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&self.socket)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn heare-authd");
        Daemon {
            child: Some(child),
            socket: self.socket,
            log_path,
        }
    }

    /// Spawns the daemon and waits until `GET /health` answers; on failure, the error holds the log.
    pub fn start(self) -> Result<Daemon, String> {
        let mut daemon = self.spawn();
        daemon.wait_ready()?;
        Ok(daemon)
    }
}

/// A running `heare-authd`, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Waits until the daemon answers `GET /health`, or fails with its log if it exits.
    pub fn wait_ready(&mut self) -> Result<(), String> {
        let mut exited = None;
        let ready = wait_until(Duration::from_secs(30), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                exited = Some(status);
                return true;
            }
            self.request(&Request::new("GET", "/health"))
                .is_ok_and(|r| r.status == 200)
        });
        match (ready, exited) {
            (_, Some(status)) => Err(format!(
                "heare-authd exited with {status}; log:\n{}",
                self.log()
            )),
            (true, None) => Ok(()),
            (false, None) => Err(format!(
                "heare-authd not ready after 30 s; log:\n{}",
                self.log()
            )),
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().map_or(0, |c| c.id() as i32))
    }

    /// Sends a request over the daemon's socket.
    pub fn request(&self, request: &Request<'_>) -> std::io::Result<Response> {
        http::send(&self.socket, request)
    }

    /// `POST /verify` with a JSON body; panics if the socket does not answer.
    pub fn verify(&self, secret: &str) -> Response {
        self.request(&Request::verify(secret))
            .unwrap_or_else(|e| panic!("verify over {}: {e}", self.socket.display()))
    }

    /// `POST /refresh` as the test's own user (root in CI, the daemon's own uid otherwise).
    pub fn refresh(&self) -> Response {
        self.request(&Request::new("POST", "/refresh"))
            .unwrap_or_else(|e| panic!("refresh: {e}"))
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        self.request(&Request::new("GET", "/status"))
            .unwrap_or_else(|e| panic!("status: {e}"))
            .json()
    }

    /// `GET /usage` as JSON (the array of every key's use); panics unless it answers 200.
    pub fn usage(&self) -> serde_json::Value {
        let answer = self
            .request(&Request::new("GET", "/usage"))
            .unwrap_or_else(|e| panic!("usage: {e}"));
        assert_eq!(answer.status, 200, "usage: {}", answer.body);
        answer.json()
    }

    /// The `/usage` entry of key `id`; panics when `/usage` lists no such key.
    pub fn usage_of(&self, id: &str) -> serde_json::Value {
        let usage = self.usage();
        usage
            .as_array()
            .and_then(|keys| keys.iter().find(|k| k["key_id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("/usage lists no {id}: {usage}"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the daemon");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(timeout, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// Everything the daemon has written to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log's JSON lines with `"event": event`, once at least one is there (the log is written
    /// by a background thread, so a line can land just after the answer it belongs to); empty
    /// after 10 s without one.
    pub fn wait_events(&self, event: &str) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        wait_until(Duration::from_secs(10), || {
            found = self.events(event);
            !found.is_empty()
        });
        found
    }

    /// The log's JSON lines with `"event": event`, as written so far.
    pub fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["event"] == event)
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
