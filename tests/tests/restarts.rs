//! Restarting the daemon under load: SIGTERM (graceful) and SIGKILL (a crash), while client threads
//! keep verifying, each request on a connection of its own. A request started while a daemon is
//! serving succeeds unless it was the one its thread had in flight when the signal came; no
//! answer is ever wrong; the socket file is removed on SIGTERM and recreated by the next start, and
//! the stale one a SIGKILL leaves behind does not stop the next start. A request already being
//! received when SIGTERM arrives is answered before the daemon exits.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::exchange_raw;
use heare_auth_tests::keys::{TestKey, key_file};
use nix::sys::signal::Signal;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const VALID: &str = "sec_0RestartTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const UNKNOWN: &str = "sec_0RestartTestUnknownBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
/// Client threads generating load (the machine has 2 cores, shared with the daemon).
const CLIENTS: usize = 4;
/// Restarts per test.
const RESTARTS: usize = 3;
/// How long each daemon serves under load before the signal.
const SERVE_FOR: Duration = Duration::from_millis(400);

/// What one request saw.
#[derive(Debug, Clone)]
enum Outcome {
    /// The right answer (200 with the key for VALID, 403 for UNKNOWN).
    Right,
    /// An answer, but not the right one.
    Wrong(String),
    /// No connection (socket missing or refused): no daemon was listening.
    NotConnected(String),
    /// Connected, but no complete answer.
    Dropped(String),
}

#[derive(Debug, Clone)]
struct Record {
    started: Instant,
    outcome: Outcome,
}

/// One request on a fresh connection, classified.
fn one_request(socket: &Path, secret: &str) -> Outcome {
    let mut stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(error) => return Outcome::NotConnected(error.to_string()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let bytes = request_bytes(secret);
    match exchange_raw(&mut stream, &bytes) {
        Err(error) => Outcome::Dropped(error.to_string()),
        Ok(answer) => {
            let right = if secret == VALID {
                answer.status == 200
                    && serde_json::from_str::<serde_json::Value>(&answer.body)
                        .is_ok_and(|body| body["key_id"] == "key_restart")
            } else {
                answer.status == 403
            };
            if right {
                Outcome::Right
            } else {
                Outcome::Wrong(format!("{} {}", answer.status, answer.body))
            }
        }
    }
}

fn request_bytes(secret: &str) -> Vec<u8> {
    let body = serde_json::json!({ "api_key": secret }).to_string();
    format!(
        "POST /verify HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Client threads verifying over `socket` until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Record>>>,
}

impl Load {
    fn start(socket: &Path) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..CLIENTS)
            .map(|client| {
                let stop = stop.clone();
                let socket = socket.to_path_buf();
                std::thread::spawn(move || {
                    let mut records = Vec::new();
                    let mut n = client;
                    while !stop.load(Ordering::Relaxed) {
                        let secret = if n % 2 == 0 { VALID } else { UNKNOWN };
                        n += 1;
                        let started = Instant::now();
                        let outcome = one_request(&socket, secret);
                        if matches!(outcome, Outcome::NotConnected(_)) {
                            // Nobody listens: do not spin.
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        records.push(Record { started, outcome });
                    }
                    records
                })
            })
            .collect();
        Load { stop, threads }
    }

    fn finish(self) -> Vec<Vec<Record>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("a client thread panicked"))
            .collect()
    }
}

/// When each daemon was serving: from its readiness to the signal that ended it (`None` for the
/// last, which serves until the load stops).
struct Window {
    ready: Instant,
    signalled: Option<Instant>,
}

fn write_store(dir: &Path) -> PathBuf {
    let store = dir.join("keys.json");
    std::fs::write(
        &store,
        key_file(&[TestKey::new("key_restart", VALID).hashed()]),
    )
    .unwrap();
    store
}

fn daemon(dir: &Path, store: &Path, socket: &Path) -> DaemonBuilder {
    DaemonBuilder::new(dir)
        .socket(socket.to_path_buf())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(["--log-level", "info"])
}

/// Restarts the daemon `RESTARTS` times with `signal` under load and checks what clients saw.
fn restarts_under_load(signal: Signal) {
    let root = tempfile::tempdir().unwrap();
    let store = write_store(root.path());
    let socket = root.path().join("heare-authd.sock");
    let mut dirs = Vec::new();
    let mut windows = Vec::new();

    let dir = tempfile::tempdir_in(root.path()).unwrap();
    let mut current: Daemon = daemon(dir.path(), &store, &socket).start().unwrap();
    dirs.push(dir);
    windows.push(Window {
        ready: Instant::now(),
        signalled: None,
    });
    let load = Load::start(&socket);
    for restart in 0..RESTARTS {
        std::thread::sleep(SERVE_FOR);
        let signalled = Instant::now();
        current.signal(signal);
        if let Some(window) = windows.last_mut() {
            window.signalled = Some(signalled);
        }
        let status = current
            .wait_exit(Duration::from_secs(20))
            .expect("the daemon exits after the signal");
        let down_for = signalled.elapsed();
        match signal {
            Signal::SIGKILL => {
                let left = std::fs::symlink_metadata(&socket).expect("SIGKILL leaves the socket");
                assert!(left.file_type().is_socket(), "a stale socket file is left");
            }
            _ => {
                assert_eq!(
                    status.code(),
                    Some(0),
                    "restart {restart}: {}",
                    current.log()
                );
                assert!(
                    !socket.exists(),
                    "restart {restart}: socket removed at exit"
                );
            }
        }

        let dir = tempfile::tempdir_in(root.path()).unwrap();
        let next = daemon(dir.path(), &store, &socket).start();
        current = next.unwrap_or_else(|log| panic!("restart {restart}: next start failed: {log}"));
        dirs.push(dir);
        windows.push(Window {
            ready: Instant::now(),
            signalled: None,
        });
        assert!(
            std::fs::symlink_metadata(&socket)
                .unwrap()
                .file_type()
                .is_socket()
        );
        if signal == Signal::SIGKILL {
            assert!(
                !current.wait_events("removing_stale_socket").is_empty(),
                "the stale socket was replaced: {}",
                current.log()
            );
        }
        println!(
            "restart {restart} ({signal}): old daemon gone {down_for:?} after the signal, \
             new one ready {:?} after it",
            signalled.elapsed()
        );
    }
    std::thread::sleep(SERVE_FOR);
    let per_thread = load.finish();

    let mut right = 0;
    let mut wrong = Vec::new();
    let mut in_flight_failures = Vec::new();
    let mut while_down: std::collections::BTreeMap<String, usize> = Default::default();
    let mut unexplained = Vec::new();
    for records in &per_thread {
        for (index, record) in records.iter().enumerate() {
            match &record.outcome {
                Outcome::Right => {
                    right += 1;
                    continue;
                }
                Outcome::Wrong(answer) => {
                    wrong.push(answer.clone());
                    continue;
                }
                Outcome::NotConnected(_) | Outcome::Dropped(_) => {}
            }
            // A failure: it must have started while no daemon served, or be the request this
            // thread had in flight when a signal came (the last one it started before it).
            let serving = windows.iter().find(|w| {
                record.started >= w.ready && w.signalled.is_none_or(|s| record.started < s)
            });
            match serving {
                None => {
                    let reason = match &record.outcome {
                        Outcome::NotConnected(error) => format!("not connected: {error}"),
                        Outcome::Dropped(error) => format!("dropped: {error}"),
                        other => format!("{other:?}"),
                    };
                    *while_down.entry(reason).or_default() += 1;
                }
                Some(window) => {
                    let in_flight = window.signalled.is_some_and(|signalled| {
                        records
                            .get(index + 1)
                            .is_none_or(|next| next.started >= signalled)
                    });
                    if in_flight {
                        in_flight_failures.push(record.outcome.clone());
                    } else {
                        unexplained.push(record.outcome.clone());
                    }
                }
            }
        }
    }
    println!(
        "{signal} x{RESTARTS} under load ({CLIENTS} clients): {right} right answers, {} wrong, \
         {} failed in flight at a signal (at most {} possible), \
         {} failed while no daemon was up, {} failed otherwise",
        wrong.len(),
        in_flight_failures.len(),
        CLIENTS * RESTARTS,
        while_down.values().sum::<usize>(),
        unexplained.len()
    );
    println!("failed while no daemon was up: {while_down:?}");
    assert!(wrong.is_empty(), "wrong answers: {wrong:?}");
    assert!(
        unexplained.is_empty(),
        "requests failed while a daemon was serving: {unexplained:?}"
    );
    println!("failed in flight: {in_flight_failures:?}");
    assert!(in_flight_failures.len() <= CLIENTS * RESTARTS);
    assert!(right > 0);
    // The last daemon serves every request.
    assert_eq!(current.verify(VALID).status, 200);
    drop(dirs);
}

#[test]
fn sigterm_under_load_fails_only_requests_in_flight_and_recreates_the_socket() {
    restarts_under_load(Signal::SIGTERM);
}

#[test]
fn sigkill_under_load_fails_only_requests_in_flight_and_the_stale_socket_is_replaced() {
    restarts_under_load(Signal::SIGKILL);
}

#[test]
fn a_request_being_received_at_sigterm_is_answered_before_exit() {
    let root = tempfile::tempdir().unwrap();
    let store = write_store(root.path());
    let socket = root.path().join("heare-authd.sock");
    let mut daemon = daemon(root.path(), &store, &socket).start().unwrap();

    // Headers and half the body are sent; the daemon is waiting for the rest.
    let bytes = request_bytes(VALID);
    let split = bytes.len() - 20;
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(&bytes[..split]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    daemon.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.wait_exit(Duration::ZERO).is_none(),
        "the daemon waits for the request in flight"
    );
    // New connections are no longer accepted meanwhile.
    let late = UnixStream::connect(&socket)
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            exchange_raw(&mut s, &request_bytes(VALID))
        })
        .map(|answer| answer.status);
    println!("a connection attempted during the drain: {late:?}");
    // The listening socket is closed before the drain: refused at once, not left hanging.
    assert!(
        matches!(&late, Err(error) if matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
        )),
        "a connection during the drain must be refused, got {late:?}"
    );

    let answer = exchange_raw(&mut stream, &bytes[split..]).expect("the answer arrives");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["key_id"], "key_restart");
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .expect("exits once the request is answered");
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists());
}
