//! The client's timeout bounds everything, connecting included. The attack: a daemon whose listen
//! backlog is full (or a socket whose server stopped accepting) held `heare_auth_verify_at(path,
//! secret, 1000, NULL)` in `connect()` for over 20 s, and a PAM login with it. Here a listener
//! that never accepts has its backlog filled, and every client form — blocking, async, the
//! compiled C program, pamtester with the PAM module — must return its timeout error within the
//! timeout plus a small margin (a hang is cut off, and fails the test, after 30 s). A server that
//! trickles its answer a byte at a time is bounded the same way: each read gets only the time
//! left, not the whole timeout again.

mod common;

use common::{compile_c, full_backlog, pam_service, pamtester, run_limited};
use heare_auth_client::{AsyncClient, Client, Error};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SECRET: &str = "sec_0DeadlineSecretDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD";
const TIMEOUT: Duration = Duration::from_millis(1000);
/// Slack for scheduling on a busy machine; the bug being tested blocks forever.
const MARGIN: Duration = Duration::from_secs(2);
/// A client still blocked after this fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(30);

/// Runs `f` on a thread; its result and how long it took, or a test failure after [`HANG`].
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> (T, Duration) {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let started = Instant::now();
        let result = f();
        let _ = sender.send((result, started.elapsed()));
    });
    receiver
        .recv_timeout(HANG)
        .expect("the client was still blocked after 30 s")
}

fn assert_timed_out(result: Result<heare_auth_client::Verified, Error>, elapsed: Duration) {
    assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    assert!(
        elapsed < TIMEOUT + MARGIN,
        "Timeout only after {elapsed:?} (timeout {TIMEOUT:?})"
    );
}

fn blocking_verify(socket: &Path) -> (Result<heare_auth_client::Verified, Error>, Duration) {
    let client = Client::builder().socket(socket).timeout(TIMEOUT).build();
    bounded(move || client.verify(SECRET))
}

fn async_verify(socket: &Path) -> (Result<heare_auth_client::Verified, Error>, Duration) {
    let socket = socket.to_path_buf();
    bounded(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = AsyncClient::unix(socket).timeout(TIMEOUT);
        runtime.block_on(client.verify(SECRET))
    })
}

#[test]
fn the_blocking_client_times_out_connecting_to_a_full_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let full = full_backlog(&dir.path().join("full.sock"));
    let (result, elapsed) = blocking_verify(&full.path);
    assert_timed_out(result, elapsed);
}

#[test]
fn the_async_client_times_out_connecting_to_a_full_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let full = full_backlog(&dir.path().join("full.sock"));
    let (result, elapsed) = async_verify(&full.path);
    assert_timed_out(result, elapsed);
}

#[test]
fn the_c_abi_times_out_connecting_to_a_full_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("verify");
    compile_c(&program);
    let full = full_backlog(&dir.path().join("full.sock"));
    let mut command = Command::new(&program);
    command.arg(&full.path).arg(SECRET);
    let run = run_limited(command, "", HANG, dir.path());
    // verify.c passes a 2000 ms timeout.
    assert_eq!(run.code, Some(5), "{}", run.stdout);
    assert!(
        run.stdout.contains("did not answer in time"),
        "{}",
        run.stdout
    );
    assert!(
        run.elapsed < Duration::from_millis(2000) + MARGIN,
        "{:?}",
        run.elapsed
    );
}

#[test]
fn pam_times_out_connecting_to_a_full_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let full = full_backlog(&dir.path().join("full.sock"));
    pam_service(
        dir.path(),
        &format!(
            "auth required MODULE socket={} timeout={} any_user\n",
            full.path.display(),
            TIMEOUT.as_millis()
        ),
    );
    let run = pamtester(dir.path(), "alice", &format!("{SECRET}\n"), &[]);
    assert!(
        !run.ok && run.output.contains("cannot retrieve authentication info"),
        "{}",
        run.output
    );
    assert!(
        run.syslog
            .iter()
            .any(|l| l.contains("did not answer within")),
        "{:?}",
        run.syslog
    );
    assert!(run.elapsed < TIMEOUT + MARGIN, "{:?}", run.elapsed);
}

/// A server that accepts, reads the request, then sends a valid-looking answer one byte every
/// 100 ms: every single read succeeds well within the timeout.
fn trickling_server(path: &Path) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let body = format!(
                    r#"{{"valid":true,"key_id":"key_slow","pad":"{}"}}"#,
                    "x".repeat(200)
                );
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                for byte in answer.bytes() {
                    if stream.write_all(&[byte]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
    });
}

#[test]
fn an_answer_trickled_byte_by_byte_is_cut_off_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    trickling_server(&path);
    let (result, elapsed) = blocking_verify(&path);
    assert_timed_out(result, elapsed);
    let (result, elapsed) = async_verify(&path);
    assert_timed_out(result, elapsed);
}
