//! Telling the local daemon to reload (POST /refresh over its socket, or SIGHUP) and reading its
//! status. After a write, a daemon that cannot be reached is a warning, not a failure: the
//! write is done and the daemon loads it when it (re)starts.

use crate::error::CtlError;
use crate::keyview::shown;
use heare_auth_client::transport::{self, TransportError};
use heare_auth_client::wire::{ErrorResponse, RefreshResponse, StatusResponse};
use std::path::Path;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// POST /refresh; returns the number of keys the daemon now serves.
pub fn refresh(socket: &Path) -> Result<usize, CtlError> {
    let answer = transport::call(socket, "POST", "/refresh", b"", TIMEOUT)
        .map_err(|e| CtlError::Other(e.to_string()))?;
    refreshed(answer.status, &answer.body).map_err(|reason| CtlError::Other(shown(&reason)))
}

/// What became of the reload that follows a write: the write itself is done in every case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterWrite {
    /// The daemon reloaded and now serves the change.
    Reloaded { keys_loaded: usize },
    /// `--no-reload`: nothing was asked.
    NotAsked,
    /// No daemon listens on the socket; it loads the change when it starts.
    NotRunning { socket: String },
    /// The daemon was asked and did not reload (why, in words).
    Failed { reason: String },
}

impl AfterWrite {
    /// The line on stderr: the reload and its key count, or the warning saying why not.
    pub fn report(&self) {
        match self {
            AfterWrite::Reloaded { keys_loaded } => {
                eprintln!("heare-authd reloaded: {keys_loaded} keys")
            }
            AfterWrite::NotAsked => {}
            AfterWrite::NotRunning { socket } => eprintln!(
                "warning: heare-authd is not running on {}; it will load the change when it starts",
                shown(socket)
            ),
            // The reason may quote the daemon's answer (an S3 error message): escaped like every
            // value from elsewhere that reaches the terminal.
            AfterWrite::Failed { reason } => eprintln!(
                "warning: the change is stored, but the daemon was not reloaded: {}",
                shown(reason)
            ),
        }
    }

    /// The `daemon` field of a write's `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            AfterWrite::Reloaded { keys_loaded } => {
                json!({"reloaded": true, "keys_loaded": keys_loaded})
            }
            AfterWrite::NotAsked => json!({"reloaded": false, "reason": "--no-reload"}),
            AfterWrite::NotRunning { socket } => json!({"reloaded": false,
                "reason": format!("heare-authd is not running on {socket}")}),
            AfterWrite::Failed { reason } => json!({"reloaded": false, "reason": reason}),
        }
    }
}

/// How long a write whose `--json` output waits for the reload's answer: that output holds the
/// new secret, which a hung daemon must not keep from the user (a timeout in a script, Ctrl-C).
pub const JSON_RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// After a write: asks the daemon to reload unless told not to, waiting at most `timeout` for
/// the answer (a daemon that takes longer may still finish the reload), and says what became of
/// it.
pub fn reload_within(socket: &Path, skip: bool, timeout: Duration) -> AfterWrite {
    if skip {
        return AfterWrite::NotAsked;
    }
    match transport::call(socket, "POST", "/refresh", b"", timeout) {
        Err(TransportError::Timeout(_)) => AfterWrite::Failed {
            reason: format!(
                "heare-authd did not answer within {} s (it may still finish the reload)",
                timeout.as_secs()
            ),
        },
        Err(TransportError::NoSocket(_) | TransportError::Refused(_)) => AfterWrite::NotRunning {
            socket: socket.display().to_string(),
        },
        Err(error) => AfterWrite::Failed {
            reason: error.to_string(),
        },
        Ok(answer) => match refreshed(answer.status, &answer.body) {
            Ok(keys_loaded) => AfterWrite::Reloaded { keys_loaded },
            Err(reason) => AfterWrite::Failed { reason },
        },
    }
}

/// Reloads after a write and prints the outcome on stderr (for commands without `--json`).
pub fn reload_and_report(socket: &Path, skip: bool) {
    reload_within(socket, skip, TIMEOUT).report();
}

/// The key count of a `/refresh` answer, or why it is not a successful reload.
fn refreshed(status: u16, body: &[u8]) -> Result<usize, String> {
    match serde_json::from_slice::<RefreshResponse>(body) {
        Ok(refresh) => match refresh.error {
            None if status == 200 => Ok(refresh.keys_loaded),
            error => Err(format!(
                "heare-authd could not reload: {}",
                error.unwrap_or_else(|| format!("HTTP {status}"))
            )),
        },
        Err(_) => Err(describe_refusal(status, body)),
    }
}

/// GET /status.
pub fn status(socket: &Path) -> Result<StatusResponse, CtlError> {
    let answer = transport::call(socket, "GET", "/status", b"", TIMEOUT)
        .map_err(|e| CtlError::Other(e.to_string()))?;
    if answer.status != 200 {
        return Err(CtlError::Other(describe_refusal(
            answer.status,
            &answer.body,
        )));
    }
    serde_json::from_slice(&answer.body).map_err(|_| {
        CtlError::Other("heare-authd's /status answer is not what this version expects".into())
    })
}

/// The highest key-file generation the local daemon has served, when it can be asked within a
/// few seconds (not running, not reachable, too old to say: `None`).
pub fn generation_served(socket: &Path) -> Option<u64> {
    let answer = transport::call(socket, "GET", "/status", b"", Duration::from_secs(3)).ok()?;
    if answer.status != 200 {
        return None;
    }
    serde_json::from_slice::<StatusResponse>(&answer.body)
        .ok()?
        .generation_served
}

/// SIGHUP to the daemon: `pid`, or systemd's MainPID of heare-authd.service.
pub fn signal(pid: Option<i32>) -> Result<i32, CtlError> {
    let pid = match pid {
        Some(pid) => pid,
        None => main_pid()?,
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|e| CtlError::Other(format!("cannot signal pid {pid}: {e}")))?;
    Ok(pid)
}

fn main_pid() -> Result<i32, CtlError> {
    let output = std::process::Command::new("systemctl")
        .args([
            "show",
            "--property",
            "MainPID",
            "--value",
            "heare-authd.service",
        ])
        .output()
        .map_err(|e| {
            CtlError::Other(format!(
                "cannot ask systemd for heare-authd's pid ({e}); use --pid"
            ))
        })?;
    match String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse::<i32>()
    {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(CtlError::Other(
            "heare-authd.service is not running under systemd; use --pid PID".into(),
        )),
    }
}

pub fn describe_refusal(status: u16, body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(error) => format!("heare-authd answered {status}: {}", error.error),
        Err(_) => format!("heare-authd answered {status}"),
    }
}
