//! Connections that hold a slot without using it are closed: a client trickling its headers
//! (slowloris) after `header_read_timeout`, an idle keep-alive after `idle_timeout`; a client that
//! keeps making requests keeps its connection.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::keys::{TestKey, key_file};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const SECRET: &str = "sec_0SlowClientTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn start(dir: &std::path::Path, config: &str) -> Daemon {
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_slow", SECRET)])).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .config(config)
        .start()
        .unwrap()
}

/// Seconds until the daemon closes `stream` (reads EOF or a reset), up to `limit`.
fn closed_after(stream: &mut UnixStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0u8; 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Some(started.elapsed()),
            Err(_) => return None,
        }
    }
}

#[test]
fn trickled_headers_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(
        dir.path(),
        "header_read_timeout = \"1s\"\nidle_timeout = \"30s\"\n",
    );
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .write_all(b"POST /verify HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let closed = closed_after(&mut stream, Duration::from_secs(10)).expect("closed by the daemon");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    assert_eq!(daemon.verify(SECRET).status, 200, "still serving");
}

#[test]
fn idle_keep_alive_is_closed_but_a_busy_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), "idle_timeout = \"1s\"\n");
    let request = format!(
        "POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{{\"api_key\":\"{SECRET}\"}}",
        SECRET.len() + 14
    );

    // Busy: a request every 200 ms for 3 s on one connection, all answered.
    let mut busy = UnixStream::connect(&daemon.socket).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buffer = [0u8; 4096];
    for _ in 0..15 {
        busy.write_all(request.as_bytes()).unwrap();
        let read = busy.read(&mut buffer).unwrap();
        assert!(
            buffer[..read].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buffer[..read])
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Idle: closed after about a second.
    let mut idle = UnixStream::connect(&daemon.socket).unwrap();
    let closed = closed_after(&mut idle, Duration::from_secs(10)).expect("closed by the daemon");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
}
