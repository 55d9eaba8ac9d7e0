//! Running the real `heare-authctl` binary against a store and a daemon's socket, and measuring
//! its peak memory.

use crate::daemon::binary;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `heare-authctl --config <empty> --store URL --socket PATH …`, with a clean environment.
pub struct Ctl {
    pub store: String,
    pub socket: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
}

impl Ctl {
    pub fn new(dir: &Path, store: &str, socket: &Path) -> Self {
        let config = dir.join("ctl.toml");
        std::fs::write(&config, "").expect("write the ctl config");
        Ctl {
            store: store.to_string(),
            socket: socket.to_path_buf(),
            config,
            env: Vec::new(),
        }
    }

    pub fn env(mut self, vars: Vec<(String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    pub fn config_text(self, text: &str) -> Self {
        std::fs::write(&self.config, text).expect("write the ctl config");
        self
    }

    /// Runs a command; stdin is closed (not a terminal).
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run heare-authctl")
    }

    /// Runs a command as [`Ctl::run`] does, and returns with its output the process's peak
    /// resident memory in KiB (`ru_maxrss` from `wait4` on its own pid: no other process counts).
    pub fn run_measured(&self, args: &[&str]) -> (Output, u64) {
        let dir = self.config.parent().expect("the config's directory");
        let (out, err) = (dir.join("measured.stdout"), dir.join("measured.stderr"));
        #[expect(
            clippy::zombie_processes,
            reason = "reaped by wait4 below, with its rusage"
        )]
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&out).expect("create the stdout file"))
            .stderr(std::fs::File::create(&err).expect("create the stderr file"))
            .spawn()
            .expect("run heare-authctl");
        let (status, peak_kib) = wait4(child.id());
        let output = Output {
            status,
            stdout: std::fs::read(&out).expect("read stdout"),
            stderr: std::fs::read(&err).expect("read stderr"),
        };
        (output, peak_kib)
    }

    /// The command [`Ctl::run`] runs, for a caller that runs it its own way.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary("heare-authctl"));
        command
            .arg("--config")
            .arg(&self.config)
            .args(["--store", &self.store])
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null());
        command
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "heare-authctl {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `create --json …`: (id, secret).
    pub fn create(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["create", "--json"];
        all.extend_from_slice(args);
        let out: serde_json::Value =
            serde_json::from_str(&self.ok(&all)).expect("create --json prints JSON");
        (
            out["id"].as_str().expect("id").to_string(),
            out["secret"].as_str().expect("secret").to_string(),
        )
    }
}

/// Waits for child `pid` (reaping it: its `Child` must not be waited for again) and returns its
/// exit status with its peak resident memory in KiB.
fn wait4(pid: u32) -> (std::process::ExitStatus, u64) {
    use std::os::unix::process::ExitStatusExt;
    let pid = libc::pid_t::try_from(pid).expect("a pid");
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types.
        let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if waited == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::Interrupted,
            "wait4 {pid}: {error}"
        );
    }
    let peak = u64::try_from(usage.ru_maxrss).expect("a peak size");
    (std::process::ExitStatus::from_raw(status), peak)
}
