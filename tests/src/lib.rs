//! The end-to-end test harness: real parts, started by the tests themselves.
//!
//! `s3_server` runs a real S3-compatible HTTP server on 127.0.0.1 (in-process s3s, or moto);
//! `daemon` spawns the real `heare-authd` binary on a temporary socket and captures its log;
//! `http` speaks raw HTTP/1.1 over a Unix socket (or TCP), so tests see exactly the bytes a client
//! would; `keys` writes key files in the Python service's format; `process` runs third-party
//! programs in a process group of their own and stops the whole group. Tests live in
//! `tests/tests/`, one file per behaviour.

pub mod change_cost;
pub mod collector;
pub mod ctl;
pub mod daemon;
pub mod fault_proxy;
pub mod fleet;
pub mod http;
pub mod keys;
pub mod load;
pub mod process;
pub mod s3_server;

use std::time::{Duration, Instant};

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
