//! `heare-authd`: parses the command line and configuration, sets up logging, runs the daemon.
//! Exit codes: 0 after a clean shutdown or a valid `--check-config`, 1 when the daemon cannot
//! start or run (the message says why), 2 for a configuration or usage error. The process makes
//! itself non-dumpable before anything else.

use clap::Parser;
use heare_authd::cli::Cli;
use heare_authd::config::Config;
use heare_authd::{daemon, logging};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Before the configuration (which may hold the storage secret) is read: no core dump, and no
    // other process of the daemon's user may read this one's memory or environment
    // (/proc/PID/mem, /proc/PID/environ, ptrace) while it holds decrypted keys.
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("heare-authd: cannot make the process non-dumpable: {error}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("heare-authd: {error}");
            return ExitCode::from(2);
        }
    };
    let admin_gid = match config.admin_gid() {
        Ok(gid) => gid,
        Err(error) => {
            eprintln!("heare-authd: {error}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        return match config.check_system() {
            Ok(()) => {
                print!("{}", config.describe());
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("heare-authd: {error}");
                ExitCode::from(2)
            }
        };
    }
    let logs = match logging::init(config.log.format, &config.log.level) {
        Ok(logs) => logs,
        Err(error) => {
            eprintln!("heare-authd: {error}");
            return ExitCode::from(2);
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.connections.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("heare-authd: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(daemon::run(config, admin_gid, &logs));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "startup_failed");
            drop(logs);
            eprintln!("heare-authd: {error:#}");
            ExitCode::FAILURE
        }
    }
}
