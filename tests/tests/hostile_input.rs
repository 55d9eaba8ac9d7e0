//! Hostile bytes on the daemon's real Unix socket: oversized headers and bodies, invalid UTF-8,
//! NUL bytes, request-smuggling shapes (conflicting or duplicate Content-Length, Content-Length
//! with Transfer-Encoding, obs-fold), pipelined garbage and requests cut off mid-way. Each must get
//! a 4xx or a closed connection within a bound (never a hang, never a 5xx), no smuggled request
//! may be answered, and afterwards the same daemon is alive, has not panicked, holds no leaked
//! descriptors and still verifies. Also: the time to refuse an unknown secret does not depend on
//! how much of a real secret it matches (measured and printed, asserted only structurally).
//! `verify_over_socket.rs` covers well-formed bad requests (bad JSON, 404, 405, 413 by
//! Content-Length); `slow_clients.rs` covers trickled headers and idle connections.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::keys::{TestKey, key_file};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "sec_0HostileInputTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// How long the daemon has to answer or close before the test calls it a hang.
const BOUND: Duration = Duration::from_secs(5);

fn start(dir: &Path) -> Daemon {
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_hostile", SECRET)])).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(["--log-level", "debug"])
        .config("header_read_timeout = \"3s\"\nidle_timeout = \"3s\"\n")
        .start()
        .unwrap()
}

/// What came back on one connection: the status of every response, in order, and whether the
/// daemon closed the connection.
#[derive(Debug)]
struct Outcome {
    statuses: Vec<u16>,
    closed: bool,
    raw: String,
}

/// Writes `bytes` (ignoring a reset: the daemon may close before reading everything), then reads
/// until the daemon closes or `BOUND` passes.
fn exchange(daemon: &Daemon, bytes: &[u8]) -> Outcome {
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    if let Err(e) = stream.write_all(bytes) {
        assert!(
            matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset),
            "{e}"
        );
    }
    read_all(&mut stream, BOUND)
}

fn read_all(stream: &mut UnixStream, bound: Duration) -> Outcome {
    let deadline = Instant::now() + bound;
    let mut raw = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false;
            }
            Err(e) => panic!("read: {e}"),
        }
    };
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let statuses = raw
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| raw.get(at + 9..at + 12)?.parse().ok())
        .collect();
    Outcome {
        statuses,
        closed,
        raw,
    }
}

/// The daemon is alive, has not panicked and still verifies.
fn assert_healthy(daemon: &Daemon) {
    assert_eq!(daemon.verify(SECRET).status, 200, "still verifies");
    let log = daemon.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
}

/// `POST /verify` with `body` and a correct Content-Length, closing after the answer.
fn post(body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "POST /verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn verify_request(secret: &str, close: bool) -> String {
    let body = format!("{{\"api_key\":\"{secret}\"}}");
    format!(
        "POST /verify HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\n\r\n{body}",
        if close { "Connection: close\r\n" } else { "" },
        body.len()
    )
}

/// The request gets one 4xx answer and the connection is closed, or the connection is closed
/// without an answer; nothing else, within the bound. Requests whose framing is ambiguous but has
/// one reading the RFC allows (`Content-Length` with `Transfer-Encoding: chunked`: the chunked
/// reading, then close; RFC 9112 6.3) may be `served` once: never a second time.
fn assert_refused(daemon: &Daemon, name: &str, bytes: &[u8], served: bool) {
    let outcome = exchange(daemon, bytes);
    assert!(
        outcome.closed,
        "{name}: not closed within {BOUND:?}: {outcome:?}"
    );
    assert!(
        outcome.statuses.len() <= 1,
        "{name}: more than one answer (a smuggled request was served): {outcome:?}"
    );
    if let Some(&status) = outcome.statuses.first() {
        let allowed = if served { 200..500 } else { 400..500 };
        assert!(allowed.contains(&status), "{name}: {outcome:?}");
    }
    assert!(!outcome.raw.contains(SECRET), "{name}: echoed the secret");
    println!("{name}: {:?}, closed", outcome.statuses);
}

#[test]
fn malformed_requests_get_a_4xx_or_a_closed_connection() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let body = format!("{{\"api_key\":\"{SECRET}\"}}");
    let long = "a".repeat(200 * 1024);
    let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Sizes.
        (
            "200 KiB header value",
            format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {long}\r\n\r\n").into_bytes(),
        ),
        (
            "500 headers",
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
        ),
        (
            "200 KiB path",
            format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
        ),
        (
            "1 MiB chunked body",
            {
                let mut bytes =
                    b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        .to_vec();
                for _ in 0..64 {
                    bytes.extend_from_slice(b"4000\r\n");
                    bytes.extend_from_slice(&[b' '; 0x4000]);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
                bytes
            },
        ),
        (
            "Content-Length of 10 GB",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n{}".to_vec(),
        ),
        (
            "Content-Length beyond u64",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
        ),
        (
            "chunk size beyond u64",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n"
                .to_vec(),
        ),
        // Invalid UTF-8 and NUL bytes.
        (
            "invalid UTF-8 in the path",
            b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "invalid UTF-8 in a header name",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-\xff: v\r\n\r\n".to_vec(),
        ),
        (
            "invalid UTF-8 in the method",
            b"P\xc3\x28ST /verify HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "invalid UTF-8 in the body",
            post(b"{\"api_key\":\"\xff\"}"),
        ),
        (
            "NUL in the path",
            b"GET /health\x00/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a header value",
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n".to_vec(),
        ),
        (
            "NUL in a bearer token",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sec_0\x00x\r\n\r\n".to_vec(),
        ),
        (
            "raw NUL inside the JSON string",
            post(b"{\"api_key\":\"a\x00\"}"),
        ),
        ("only NUL bytes", vec![0u8; 4096]),
        ("random binary", (0..8192u32).map(|i| (i.wrapping_mul(2654435761) % 251) as u8).collect()),
        ("TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
        ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        ("HTTP/9.9", b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n".to_vec()),
        ("no request line", b"\r\n\r\n\r\n\r\n".to_vec()),
        // Smuggling shapes: a second request hidden where one reading of the framing would
        // find it. Either reading may be refused; none may answer two requests.
        (
            "Content-Length and Transfer-Encoding: chunked",
            format!(
                "POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
            .into_bytes(),
        ),
        (
            "Transfer-Encoding: chunked then Content-Length hiding a request",
            {
                let hidden = "GET /status HTTP/1.1\r\nHost: x\r\n\r\n";
                format!(
                    "POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n0\r\n\r\n{hidden}",
                    5 + hidden.len()
                )
                .into_bytes()
            },
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nContent-Length: 2\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ),
        (
            "Content-Length twice with the same value",
            format!(
                "POST /verify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {0}\r\nContent-Length: {0}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ),
        (
            "Content-Length list with different values",
            format!(
                "POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}, 2\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ),
        (
            "Content-Length with a sign",
            format!(
                "POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: +{}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ),
        (
            "Content-Length in hex",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n{}".to_vec(),
        ),
        (
            "negative Content-Length",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}".to_vec(),
        ),
        (
            "Transfer-Encoding other than chunked",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n{}".to_vec(),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "Transfer-Encoding: xchunked",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "space before the colon",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec(),
        ),
        (
            "obs-fold continuation line",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec(),
        ),
        (
            "obs-fold on Transfer-Encoding",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "bad chunk framing",
            b"POST /verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n"
                .to_vec(),
        ),
        (
            "bare CR line ends",
            b"POST /verify HTTP/1.1\rHost: x\rContent-Length: 2\r\r{}".to_vec(),
        ),
        (
            "request line with extra spaces",
            b"POST  /verify  HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in &cases {
        let served = [
            "Content-Length and Transfer-Encoding: chunked",
            "Content-Length twice with the same value",
        ]
        .contains(name);
        assert_refused(&daemon, name, bytes, served);
    }
    assert_healthy(&daemon);
    // Nothing the refused requests tried reached the admin endpoint.
    assert!(daemon.events("refresh_success").is_empty());
}

#[test]
fn pipelined_requests_are_answered_in_order_and_garbage_after_them_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let mut bytes = Vec::new();
    for i in 0..50 {
        let secret = if i % 2 == 0 { SECRET } else { "sec_0nope" };
        bytes.extend_from_slice(verify_request(secret, false).as_bytes());
    }
    bytes.extend_from_slice(b"\x00\xff\xfeGARBAGE / HTTP/1.1\r\n\r\n");
    bytes.extend_from_slice(verify_request(SECRET, true).as_bytes());
    let outcome = exchange(&daemon, &bytes);
    assert!(outcome.closed, "{outcome:?}");
    let expected: Vec<u16> = (0..50)
        .map(|i| if i % 2 == 0 { 200 } else { 403 })
        .collect();
    assert_eq!(
        outcome.statuses[..50],
        expected[..],
        "pipelined answers in order"
    );
    assert!(
        outcome.statuses.len() <= 51 && outcome.statuses[50..].iter().all(|s| *s == 400),
        "the garbage is refused and nothing after it is served: {:?}",
        &outcome.statuses[50..]
    );
    assert_healthy(&daemon);
}

#[test]
fn requests_cut_off_midway_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let descriptors = || {
        std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
            .unwrap()
            .count()
    };
    assert_healthy(&daemon);
    let before = descriptors();
    let full = verify_request(SECRET, false).into_bytes();
    // Every prefix length class: mid-request-line, mid-headers, after headers, mid-body.
    let cuts = [1, 10, 30, 50, full.len() - 20, full.len() - 1];
    for round in 0..40 {
        for &cut in &cuts {
            let mut stream = UnixStream::connect(&daemon.socket).unwrap();
            stream.write_all(&full[..cut]).unwrap();
            if round % 2 == 0 {
                // Half-close: the daemon reads end-of-file mid-request.
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                let outcome = read_all(&mut stream, BOUND);
                assert!(outcome.closed, "cut at {cut}: {outcome:?}");
                assert!(
                    outcome.statuses.iter().all(|s| (400..500).contains(s)),
                    "cut at {cut}: {outcome:?}"
                );
            }
            drop(stream);
        }
    }
    // A body that never arrives is cut off by the timeouts, not kept forever.
    let mut stalled = UnixStream::connect(&daemon.socket).unwrap();
    stalled
        .write_all(b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"api")
        .unwrap();
    let outcome = read_all(&mut stalled, Duration::from_secs(15));
    assert!(
        outcome.closed,
        "a stalled body holds its connection: {outcome:?}"
    );
    assert_eq!(outcome.statuses, [408], "{outcome:?}");
    assert_healthy(&daemon);
    let settled = heare_auth_tests::wait_until(Duration::from_secs(10), || descriptors() <= before);
    assert!(
        settled,
        "descriptors: {before} before, {} after",
        descriptors()
    );
}

/// Refusing an unknown secret takes the same time whether it shares 0 or 63 leading characters
/// with a real one: the lookup is by SHA-256 digest. The medians are printed (run with
/// `--nocapture`); the assertions are structural: every answer is the same 403 body.
#[test]
fn refusal_time_does_not_depend_on_a_matching_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_quiet(dir.path());
    let prefixes = [0usize, 4, 16, 32, 48, 60, 63];
    let guesses: Vec<String> = prefixes
        .iter()
        .map(|&n| {
            let mut guess: Vec<u8> = SECRET.as_bytes().to_vec();
            for byte in &mut guess[n..] {
                *byte = if *byte == b'Z' { b'Y' } else { b'Z' };
            }
            String::from_utf8(guess).unwrap()
        })
        .collect();
    let requests: Vec<Vec<u8>> = guesses
        .iter()
        .map(|g| verify_request(g, false).into_bytes())
        .collect();
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); prefixes.len()];
    let mut bodies = std::collections::BTreeSet::new();
    let mut buffer = [0u8; 4096];
    const ROUNDS: usize = 1500;
    for round in 0..ROUNDS + 100 {
        // Interleaved, in a rotating order, so drift affects every prefix alike.
        for k in 0..prefixes.len() {
            let which = (k + round) % prefixes.len();
            let started = Instant::now();
            stream.write_all(&requests[which]).unwrap();
            let answer = read_response(&mut stream, &mut buffer);
            let elapsed = started.elapsed();
            assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
            bodies.insert(answer.split_once("\r\n\r\n").unwrap().1.to_string());
            if round >= 100 {
                samples[which].push(elapsed);
            }
        }
    }
    assert_eq!(
        bodies.into_iter().collect::<Vec<_>>(),
        ["{\"valid\":false,\"error\":\"Invalid API key\"}"],
        "every refusal is the same answer"
    );
    println!(
        "refusal time by leading characters shared with a real secret ({ROUNDS} samples each):"
    );
    for (prefix, mut times) in prefixes.iter().zip(samples) {
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        println!(
            "  {prefix:>2} chars: median {:>6.1} µs, p10 {:>6.1} µs, p90 {:>6.1} µs",
            at(0.5).as_secs_f64() * 1e6,
            at(0.1).as_secs_f64() * 1e6,
            at(0.9).as_secs_f64() * 1e6
        );
    }
}

/// A daemon that logs warnings only, so the timing is not the log writer's.
fn start_quiet(dir: &Path) -> Daemon {
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_hostile", SECRET)])).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(["--log-level", "error"])
        .start()
        .unwrap()
}

/// Reads one response with a Content-Length body from a keep-alive connection.
fn read_response(stream: &mut UnixStream, buffer: &mut [u8]) -> String {
    let mut raw = Vec::new();
    loop {
        let n = stream.read(buffer).unwrap();
        assert!(n > 0, "closed mid-response");
        raw.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}
