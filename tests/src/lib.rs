//! The end-to-end test harness: real parts, started by the tests themselves.
//!
//! `s3_server` runs a real S3-compatible HTTP server on 127.0.0.1 (in-process s3s, or moto);
//! `daemon` spawns the real `heare-authd` binary on a temporary socket and captures its log;
//! `http` speaks raw HTTP/1.1 over a Unix socket (or TCP), so tests see exactly the bytes a client
//! would; `keys` writes key files in the Python service's format; `hammer` runs clients verifying one secret at once (the rate-limit tests); `process` runs third-party
//! programs in a process group of their own and stops the whole group; `docs` and `code_scan`
//! read the documentation and the code for the drift test. Tests live in `tests/tests/`, one file
//! per behaviour.

pub mod change_cost;
pub mod code_scan;
pub mod collector;
pub mod ctl;
pub mod daemon;
pub mod docs;
pub mod fault_proxy;
pub mod fleet;
pub mod hammer;
pub mod http;
pub mod keys;
pub mod load;
pub mod process;
pub mod redis_server;
pub mod s3_server;

use std::io::Write;
use std::time::{Duration, Instant};

/// The file `tests/run` names for skip records; it lists them all at the end of the run.
pub const SKIP_LOG_ENV: &str = "HEARE_TEST_SKIP_LOG";

/// Records that the running test skips its checks, and why: `SKIPPED: <file>::<test>: <reason>`
/// on stderr and, when `HEARE_TEST_SKIP_LOG` names a file, appended there. Every test that
/// skips says so through this macro (then returns), so that nothing is skipped silently.
#[macro_export]
macro_rules! skipped {
    ($($reason:tt)+) => {
        $crate::record_skip(module_path!(), &format!($($reason)+))
    };
}

/// What [`skipped!`] does: the test's name is its file (`module`) and libtest's thread name.
pub fn record_skip(module: &str, reason: &str) {
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(test) if test != "main" => format!("{module}::{test}"),
        _ => module.to_string(),
    };
    let line = format!("SKIPPED: {name}: {reason}");
    eprintln!("{line}");
    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
    if let Err(error) = appended {
        panic!("cannot record the skip in {}: {error}", path.display());
    }
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound, read, released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A listener on 127.0.0.1 at a free port below 1024, which only root can bind: a peer there
/// cannot be a local user squatting the port. Panics unless run as root (CI is).
pub fn privileged_listener() -> std::net::TcpListener {
    assert!(
        nix::unistd::geteuid().is_root(),
        "binds a port below 1024: run as root (CI does)"
    );
    let offset: u16 = rand::random_range(0..400);
    (0..400)
        .map(|n| 600 + (offset + n) % 400)
        .find_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .expect("a free port in 600..1000")
}
