//! Clients hammering one secret at once: threads that each verify it over and over, one
//! connection a request, through one or several daemons' sockets, for a fixed time. The rate
//! limit tests count what was accepted against `burst + rate × seconds`.

use crate::http::{Request, send};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a hammering run got.
#[derive(Debug, Clone, Copy)]
pub struct Hammered {
    /// Requests answered 200.
    pub accepted: usize,
    /// Seconds from the start to the last answer.
    pub seconds: f64,
}

/// `clients` threads, client `n` on `sockets[n % sockets.len()]`, verifying `secret` until
/// `run_for` has passed. Every answer must be 200 or 429: anything else fails the test.
pub fn hammer(sockets: &[PathBuf], clients: usize, secret: &str, run_for: Duration) -> Hammered {
    assert!(!sockets.is_empty(), "no daemon to hammer");
    let started = Instant::now();
    let accepted = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|n| {
                let socket = &sockets[n % sockets.len()];
                scope.spawn(move || client(socket, secret, started, run_for))
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| panic!("a client panicked"))
            })
            .sum()
    });
    Hammered {
        accepted,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// One client: the 200s it got until `run_for` had passed since `started`.
fn client(socket: &Path, secret: &str, started: Instant, run_for: Duration) -> usize {
    let mut accepted = 0;
    while started.elapsed() < run_for {
        let answer = send(socket, &Request::verify(secret))
            .unwrap_or_else(|error| panic!("a verify failed: {error}"));
        match answer.status {
            200 => accepted += 1,
            429 => {}
            other => panic!("{other}: {}", answer.body),
        }
    }
    accepted
}
