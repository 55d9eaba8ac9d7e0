//! Running the real `heare-authctl` binary against a store and a daemon's socket, and measuring
//! its peak memory.

use crate::daemon::binary;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

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
    /// resident memory in KiB: its own, counted by `wait4` in the small `peak-rss` process that
    /// spawns it (spawned from the test process, it would count this process's peak too).
    pub fn run_measured(&self, args: &[&str]) -> (Output, u64) {
        let dir = self.config.parent().expect("the config's directory");
        let (out, err) = (dir.join("measured.stdout"), dir.join("measured.stderr"));
        let report = dir.join("measured.peak");
        let mut launcher = Command::new(binary("peak-rss"));
        launcher.arg(&report).arg(binary("heare-authctl"));
        let done = self
            .configured(launcher, args)
            .stdout(std::fs::File::create(&out).expect("create the stdout file"))
            .stderr(std::fs::File::create(&err).expect("create the stderr file"))
            .status()
            .expect("run peak-rss");
        let stderr = std::fs::read(&err).expect("read stderr");
        assert!(
            done.success(),
            "peak-rss: {}",
            String::from_utf8_lossy(&stderr)
        );
        let measured = std::fs::read_to_string(&report).expect("read the peak-rss report");
        let [status, peak] = measured
            .split_whitespace()
            .map(|n| n.parse::<i64>().expect("a number"))
            .collect::<Vec<_>>()[..]
        else {
            panic!("peak-rss wrote {measured:?}");
        };
        let output = Output {
            status: ExitStatus::from_raw(i32::try_from(status).expect("a wait status")),
            stdout: std::fs::read(&out).expect("read stdout"),
            stderr,
        };
        (output, u64::try_from(peak).expect("a peak size"))
    }

    /// The command [`Ctl::run`] runs, for a caller that runs it its own way.
    pub fn command(&self, args: &[&str]) -> Command {
        self.configured(Command::new(binary("heare-authctl")), args)
    }

    /// `command` (heare-authctl, or a program that runs it with the arguments after its own)
    /// with ctl's arguments, `args` and the clean environment.
    fn configured(&self, mut command: Command, args: &[&str]) -> Command {
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
