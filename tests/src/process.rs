//! Programs a test starts that may fork (nginx's workers, Caddy, Prometheus, Python servers,
//! bubblewrap, a socket activator): each leads a process group of its own, and stopping it
//! signals the whole group, reaps the leader and waits until no member of the group is alive, so
//! nothing a test started outlives it, whatever the program forked. (A member that leaves the
//! group with `setsid` escapes this: start programs in the foreground, e.g. nginx `daemon off;`.)

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{ChildStdin, Command, ExitStatus};
use std::time::Duration;

/// How long a group has to exit after SIGTERM, and after SIGKILL, before stopping gives up.
const GRACE: Duration = Duration::from_secs(10);

/// A program leading its own process group; the whole group is stopped when dropped.
pub struct Group {
    child: std::process::Child,
    /// The leader's exit status once reaped.
    status: Option<ExitStatus>,
}

impl Group {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> io::Result<Group> {
        let child = command.process_group(0).spawn()?;
        Ok(Group {
            child,
            status: None,
        })
    }

    /// The leader's pid, which is also the group's id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The leader's stdin, if it was piped (once).
    pub fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
    }

    /// The leader's exit status if it has exited (it is then reaped), without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// The pids of the group's processes that are alive (the leader included; a process that
    /// exited and waits to be reaped is not alive).
    pub fn members(&self) -> Vec<i32> {
        let Ok(group) = i32::try_from(self.id()) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| alive_in_group(*pid, group))
            .collect()
    }

    /// Stops the whole group: SIGTERM to every member, SIGKILL to those left after a grace
    /// period, the leader reaped; `Err` naming the pids when a member is still alive after that.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        // Once the leader is reaped its pid is reserved only while members remain: never signal
        // an empty group, whose id another process may since have taken.
        if self.try_wait()?.is_none() || !self.members().is_empty() {
            self.signal(Signal::SIGTERM);
            if !crate::wait_until(GRACE, || self.finished()) {
                self.signal(Signal::SIGKILL);
                crate::wait_until(GRACE, || self.finished());
            }
        }
        self.reap()
    }

    /// Kills the whole group with SIGKILL at once (a crash: no shutdown), the leader reaped;
    /// `Err` as [`Group::stop`].
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if self.try_wait()?.is_none() || !self.members().is_empty() {
            self.signal(Signal::SIGKILL);
            crate::wait_until(GRACE, || self.finished());
        }
        self.reap()
    }

    /// Reaps the leader; `Err` naming the members still alive.
    fn reap(&mut self) -> io::Result<ExitStatus> {
        let status = match self.status {
            Some(status) => status,
            None => self.child.wait()?,
        };
        self.status = Some(status);
        let left = self.members();
        match left.is_empty() {
            true => Ok(status),
            false => Err(io::Error::other(format!(
                "processes {left:?} of group {} still alive after SIGKILL",
                self.id()
            ))),
        }
    }

    /// Sends `signal` to every member of the group (while it may have members: see
    /// [`Group::stop`]).
    pub fn signal(&self, signal: Signal) {
        if let Ok(group) = i32::try_from(self.id()) {
            let _ = killpg(Pid::from_raw(group), signal);
        }
    }

    /// Whether the leader is reaped and no member is alive.
    fn finished(&mut self) -> bool {
        matches!(self.try_wait(), Ok(Some(_))) && self.members().is_empty()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping process group {}: {e}", self.id());
        }
    }
}

/// Whether `pid` is in process group `group` and alive.
fn alive_in_group(pid: i32, group: i32) -> bool {
    stat(pid).is_some_and(|(state, pgrp)| pgrp == group && running(&state))
}

/// Whether process `pid` exists and has not exited (one that exited and waits to be reaped is
/// not alive).
pub fn is_alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| running(&state))
}

fn running(state: &str) -> bool {
    state != "Z" && state != "X"
}

/// Process `pid`'s state letter (`R`, `S`, `T` when stopped, …), `None` when it is gone.
pub fn state(pid: i32) -> Option<String> {
    stat(pid).map(|(state, _)| state)
}

/// A process's state letter and process group, from `/proc/PID/stat`
/// ("pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses).
fn stat(pid: i32) -> Option<(String, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_string();
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}
