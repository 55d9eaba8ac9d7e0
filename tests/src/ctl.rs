//! Running the real `heare-authctl` binary against a store and a daemon's socket.

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
        Command::new(binary("heare-authctl"))
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
            .stdin(Stdio::null())
            .output()
            .expect("run heare-authctl")
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
