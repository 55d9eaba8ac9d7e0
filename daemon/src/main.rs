//! `heare-authd`: parses the command line and configuration, sets up logging, runs the daemon.
//! Exit codes: 0 after a clean shutdown or a valid `--check-config`, 1 when the daemon cannot
//! start or run (the message says why), 2 for a configuration or usage error. The process makes
//! itself non-dumpable before anything else.

use clap::Parser;
use heare_authd::cli::Cli;
use heare_authd::config::Config;
use heare_authd::{daemon, logging};
use std::process::ExitCode;

/// Why the process stops before serving, and with which exit code.
struct Exit(u8, String);

fn main() -> ExitCode {
    // Before the configuration (which may hold the storage secret) is read: no core dump, and no
    // other process of the daemon's user may read this one's memory or environment
    // (/proc/PID/mem, /proc/PID/environ, ptrace) while it holds decrypted keys.
    if let Err(error) = nix::sys::prctl::set_dumpable(false) {
        eprintln!("heare-authd: cannot make the process non-dumpable: {error}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    match configure(&cli).and_then(|(config, admin_gid)| {
        if cli.check_config {
            check(&config)
        } else {
            serve(config, admin_gid)
        }
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, message)) => {
            eprintln!("heare-authd: {message}");
            ExitCode::from(code)
        }
    }
}

/// The configuration and the admin group's gid; exit 2 when either is unusable.
fn configure(cli: &Cli) -> Result<(Config, Option<u32>), Exit> {
    let config = Config::load(cli).map_err(|e| Exit(2, e.to_string()))?;
    let admin_gid = config.admin_gid().map_err(|e| Exit(2, e.to_string()))?;
    Ok((config, admin_gid))
}

/// `--check-config`: what the system lacks is exit 2, else the settings are printed.
fn check(config: &Config) -> Result<(), Exit> {
    config.check_system().map_err(|e| Exit(2, e.to_string()))?;
    print!("{}", config.describe());
    println!("configuration OK");
    Ok(())
}

/// Logging, the runtime, and the daemon until it stops.
fn serve(config: Config, admin_gid: Option<u32>) -> Result<(), Exit> {
    let logs =
        logging::init(config.log.format, &config.log.level).map_err(|e| Exit(2, e.to_string()))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.connections.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .map_err(|e| Exit(1, format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(daemon::run(config, admin_gid, &logs));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(|error| {
        tracing::error!(error = format!("{error:#}"), "startup_failed");
        drop(logs);
        Exit(1, format!("{error:#}"))
    })
}
