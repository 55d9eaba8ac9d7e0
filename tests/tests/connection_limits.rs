//! A flood of idle connections neither exhausts the daemon's file descriptors nor locks new clients
//! out: at `max_connections` the daemon closes the longest-idle connection to admit a new one
//! (instead of leaving newcomers in the backlog until an idle timeout), raises its descriptor soft
//! limit at start, and caps `max_connections` to the descriptors it has.
//! (Slow and idle clients cut off by their timeouts: `slow_clients.rs`.)

use heare_auth_tests::daemon::{DaemonBuilder, binary};
use heare_auth_tests::http::{self, Request};
use heare_auth_tests::keys::{TestKey, key_file};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SECRET: &str = "sec_0ConnectionLimitTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Both tests change or depend on this process's descriptor limits: one at a time.
static LIMITS: Mutex<()> = Mutex::new(());

fn builder(dir: &Path, config: &str) -> DaemonBuilder {
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_limit", SECRET)])).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .config(config)
}

/// Raises this process's soft descriptor limit to at least `needed` (and the hard limit too, as
/// root, if it is lower).
fn ensure_fd_limit(needed: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft >= needed {
        return;
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE; when that fails, the message says what to do.
    let hard = hard.max(needed);
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard).unwrap_or_else(|e| {
        panic!("this test needs {needed} descriptors (soft limit {soft}): raise `ulimit -n` ({e})")
    });
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// The daemon's "Max open files" soft and hard limits from /proc.
fn nofile_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

fn verify_request() -> Vec<u8> {
    let body = format!("{{\"api_key\":\"{SECRET}\"}}");
    format!(
        "POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends a verify on an open keep-alive connection; the answer's first bytes.
fn verify_on(stream: &mut UnixStream) -> std::io::Result<String> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&verify_request())?;
    let mut buffer = [0u8; 4096];
    let read = stream.read(&mut buffer)?;
    Ok(String::from_utf8_lossy(&buffer[..read]).into_owned())
}

/// Whether the daemon has closed `stream` (EOF or reset), without waiting.
fn closed_by_daemon(mut stream: &UnixStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    }
}

/// A fresh connection's verify; panics unless it is a 200 for our key. Returns the time it took.
fn fresh_verify(socket: &Path) -> Duration {
    let started = Instant::now();
    let answer = http::send(socket, &Request::verify(SECRET)).unwrap();
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["key_id"], "key_limit");
    took
}

/// Opens `count` connections at once; returns them and the time it took. A daemon that stopped
/// accepting would leave `connect` blocked on its full backlog until idle timeouts free slots:
/// that fails here after 120 s (a hang guard, not a speed bar).
fn flood(socket: &Path, count: usize) -> (Vec<UnixStream>, Duration) {
    let (done, result) = std::sync::mpsc::channel();
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let started = Instant::now();
        let streams: Vec<UnixStream> = (0..count)
            .map(|i| {
                UnixStream::connect(&socket)
                    .unwrap_or_else(|e| panic!("connection {i} of {count}: {e}"))
            })
            .collect();
        let _ = done.send((streams, started.elapsed()));
    });
    result
        .recv_timeout(Duration::from_secs(120))
        .expect("all connections accepted (the daemon keeps accepting at its connection limit)")
}

#[test]
fn ten_thousand_idle_connections_do_not_lock_out_new_verifies() {
    let _serial = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
    const FLOOD: usize = 10_000;
    ensure_fd_limit(FLOOD as u64 + 1024);
    let dir = tempfile::tempdir().unwrap();
    // A long idle timeout: only the connection limit can free slots during this test.
    let daemon = builder(
        dir.path(),
        // One uid opens the whole flood: its share is the whole table here.
        "idle_timeout = \"300s\"\nmax_connections = 1024\nmax_connections_per_uid = 1024\n",
    )
    .start()
    .unwrap();
    let daemon_pid = daemon.pid().as_raw() as u32;
    let fds_before = open_fds(daemon_pid);

    let (mut streams, opened_in) = flood(&daemon.socket, FLOOD);
    let first_verify = fresh_verify(&daemon.socket);
    let fds_during = open_fds(daemon_pid);
    let still_open = streams.iter().filter(|s| !closed_by_daemon(s)).count();
    let newest = streams.last_mut().unwrap();
    let newest_answer = verify_on(newest).unwrap();
    let more: Vec<Duration> = (0..20).map(|_| fresh_verify(&daemon.socket)).collect();
    let (soft, hard) = nofile_of(daemon_pid);
    println!(
        "{FLOOD} connections opened in {opened_in:?}; daemon fds: {fds_before} before, {fds_during} \
         with the flood (limit {soft}/{hard}); {still_open} of the flood still open; first new verify \
         {first_verify:?}, next 20 max {:?}",
        more.iter().max().unwrap()
    );

    assert!(
        newest_answer.starts_with("HTTP/1.1 200"),
        "the newest idle connection is kept and served: {newest_answer}"
    );
    assert!(
        still_open <= 1024,
        "{still_open} flood connections open past max_connections"
    );
    assert!(
        still_open >= 900,
        "only the longest-idle connections are closed: {still_open} left"
    );
    assert!(
        closed_by_daemon(&streams[0]),
        "the oldest idle connection made room"
    );
    assert!(
        fds_during <= fds_before + 1024 + 8,
        "daemon descriptors bounded by max_connections: {fds_during} (from {fds_before})"
    );
    assert!(fds_during < soft as usize);
    let warning = daemon.wait_events("connection_limit_reached");
    assert_eq!(warning[0]["max_connections"], 1024, "{}", warning[0]);
    assert!(
        daemon.events("accept_failed").is_empty(),
        "{}",
        daemon.log()
    );
}

/// A daemon started with the descriptor limits `soft`/`hard` (set in the child between fork and
/// exec, so this process's own limits stay as they are), killed when dropped.
struct Limited {
    child: std::process::Child,
    socket: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Limited {
    fn start(dir: &Path, config: &str, soft: u64, hard: u64) -> Limited {
        use std::os::unix::process::CommandExt;
        let store = dir.join("keys.json");
        std::fs::write(&store, key_file(&[TestKey::new("key_limit", SECRET)])).unwrap();
        let config_path = dir.join("limited.toml");
        std::fs::write(&config_path, config).unwrap();
        let socket = dir.join("limited.sock");
        let log = dir.join("limited.log");
        let output = std::fs::File::create(&log).unwrap();
        let mut command = std::process::Command::new(binary("heare-authd"));
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket)
            .arg("--store")
            .arg(format!("file://{}", store.display()))
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output);
        // SAFETY: setrlimit is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)
            });
        }
        let mut daemon = Limited {
            child: command.spawn().unwrap(),
            socket,
            log,
        };
        let ready = heare_auth_tests::wait_until(Duration::from_secs(30), || {
            daemon.child.try_wait().ok().flatten().is_some()
                || http::send(&daemon.socket, &Request::new("GET", "/health"))
                    .is_ok_and(|r| r.status == 200)
        });
        assert!(
            ready && daemon.child.try_wait().ok().flatten().is_none(),
            "not ready: {}",
            daemon.log_text()
        );
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's lines with this event once one is there: the log is written by a background
    /// thread, so a start-up line can land after the daemon already answers (empty after 10 s).
    fn wait_events(&self, event: &str) -> Vec<serde_json::Value> {
        let mut found = Vec::new();
        heare_auth_tests::wait_until(Duration::from_secs(10), || {
            found = self.events(event);
            !found.is_empty()
        });
        found
    }

    fn events(&self, event: &str) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["event"] == event)
            .collect()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fd_soft_limit_is_raised_and_caps_max_connections() {
    let _serial = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
    const FLOOD: usize = 2_000;
    ensure_fd_limit(FLOOD as u64 + 1024);
    let dir = tempfile::tempdir().unwrap();
    let daemon = Limited::start(
        dir.path(),
        "idle_timeout = \"300s\"\nmax_connections = 100000\n",
        256,
        512,
    );

    let limit = &daemon.wait_events("fd_limit")[0];
    assert_eq!(limit["soft_before"], 256, "{limit}");
    assert_eq!(limit["soft"], 512, "{limit}");
    assert_eq!(nofile_of(daemon.pid()), (512, 512));
    let capped = &daemon.wait_events("max_connections_capped_to_fd_limit")[0];
    assert_eq!(capped["configured"], 100000, "{capped}");
    assert_eq!(capped["max_connections"], 512 - 64, "{capped}");

    // 2,000 connections against 512 descriptors: the cap, not EMFILE, is what they run into.
    let (streams, _) = flood(&daemon.socket, FLOOD);
    let took = fresh_verify(&daemon.socket);
    let fds = open_fds(daemon.pid());
    let still_open = streams.iter().filter(|s| !closed_by_daemon(s)).count();
    println!(
        "{FLOOD} connections against a daemon with 512 descriptors: {fds} fds open, {still_open} \
         connections kept, new verify in {took:?}"
    );
    assert!(fds < 512, "{fds} descriptors");
    assert!(still_open <= 448, "{still_open}");
    assert!(
        daemon.events("accept_failed").is_empty(),
        "no EMFILE: {}",
        daemon.log_text()
    );
}

/// The daemon's resident memory (VmRSS), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Whether the daemon has closed a connection whose receive buffer is full of unread answers
/// (reading would return those): a write then fails instead of blocking.
fn write_refused(mut stream: &UnixStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    match stream.write_all(b"x") {
        Ok(()) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock,
    }
}

/// A connection that pipelines `requests` `GET /health` and never reads an answer: a thread
/// writes until the daemon's answers fill the socket buffers and the write blocks, then waits
/// there until the daemon closes the connection. Returns the stream (to check it was closed).
fn never_reading_pipeliner(socket: &Path, requests: usize) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        let all: Vec<u8> = request.repeat(requests);
        let _ = writer.write_all(&all);
    });
    stream
}

#[test]
fn clients_that_never_read_their_answers_do_not_lock_out_new_verifies() {
    let _serial = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // idle_timeout 0: only the write timeout and the connection limit can free a slot. The
    // pipeliners and the newcomer share a uid, so the per-uid limit is the whole table here.
    let daemon = builder(
        dir.path(),
        "idle_timeout = 0\nmax_connections = 16\nmax_connections_per_uid = 16\n",
    )
    .start()
    .unwrap();
    let pid = daemon.pid().as_raw() as u32;
    let rss_before = rss_kib(pid);
    let pipeliners: Vec<UnixStream> = (0..16)
        .map(|_| never_reading_pipeliner(&daemon.socket, 4_000))
        .collect();
    // Let their answers fill the socket buffers.
    std::thread::sleep(Duration::from_millis(1500));
    let rss_pushing = rss_kib(pid);

    let took = fresh_verify(&daemon.socket);
    let more: Vec<Duration> = (0..5).map(|_| fresh_verify(&daemon.socket)).collect();
    let closed = pipeliners.iter().filter(|s| write_refused(s)).count();
    println!(
        "16 never-reading pipeliners: new verify answered in {took:?} (next 5 max {:?}); {closed} \
         pipeliners closed to make room; RSS {rss_before} KiB before, {rss_pushing} KiB while they push",
        more.iter().max().unwrap()
    );
    assert!(
        took < Duration::from_secs(3),
        "a new verify waited {took:?} behind clients that never read"
    );
    assert!(closed >= 1, "a blocked connection made room");
    assert!(
        rss_pushing < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_pushing} KiB while 16 clients pushed 4,000 requests each"
    );
}

#[test]
fn an_answer_nobody_reads_is_dropped_after_write_timeout() {
    let _serial = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let daemon = builder(dir.path(), "idle_timeout = 0\nwrite_timeout = \"2s\"\n")
        .start()
        .unwrap();
    let pipeliners: Vec<UnixStream> = (0..4)
        .map(|_| never_reading_pipeliner(&daemon.socket, 4_000))
        .collect();
    let started = Instant::now();
    let all_closed = heare_auth_tests::wait_until(Duration::from_secs(10), || {
        pipeliners.iter().all(write_refused)
    });
    let took = started.elapsed();
    println!("4 never-reading pipeliners closed {took:?} after they started pushing");
    assert!(
        all_closed,
        "connections stuck on an unread answer stayed open"
    );
    assert!(
        took >= Duration::from_secs(2),
        "closed before write_timeout: {took:?}"
    );
    assert!(fresh_verify(&daemon.socket) < Duration::from_secs(3));
}

#[test]
fn one_uid_cannot_take_every_slot() {
    let _serial = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test verifies as uid 65534 with setpriv and must run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // max_connections 16, so by default one uid holds at most 4.
    let daemon = builder(dir.path(), "max_connections = 16\n")
        .args(["--socket-mode", "0666"])
        .start()
        .unwrap();
    // Root opens 16 connections, each in the middle of a request whose body never comes: none
    // may be closed to make room (a request is being read).
    let head = b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        let _ = stream.write_all(head);
        held.push(stream);
        // Let the daemon read the head: a connection whose head has not arrived yet is idle, and
        // a newcomer of the same uid may close it to make room instead of being refused.
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut open, mut refused) = (0, 0);
    for stream in &mut held {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut answer = [0u8; 64];
        match stream.read(&mut answer) {
            Ok(n) if answer[..n].starts_with(b"HTTP/1.1 503") => refused += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => open += 1,
            _ => {}
        }
    }
    // Another user still verifies at once.
    let started = Instant::now();
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_uds-request"))
        .arg(&daemon.socket)
        .args(["POST", "/verify"])
        .arg(format!("{{\"api_key\":\"{SECRET}\"}}"))
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!(
        "uid 0 opened 16 connections mid-request: {open} kept, {refused} refused with 503; \
         uid 65534's verify: {took:?}"
    );
    assert!(stdout.starts_with("200"), "{stdout}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        open, 4,
        "one uid holds at most a quarter of max_connections"
    );
    assert!(
        refused >= 8,
        "a uid at its limit is refused at once: {refused} 503s"
    );
    let warning = daemon.wait_events("connection_refused_peer_limit");
    assert_eq!(warning[0]["peer_uid"], 0, "{}", warning[0]);
    assert_eq!(warning[0]["limit"], 4);
}

/// A TCP connection from `source` (any 127.0.0.0/8 address a local user can bind) to `target`.
fn tcp_from(source: std::net::Ipv4Addr, target: std::net::SocketAddr) -> std::net::TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let std::net::SocketAddr::V4(target) = target else {
        panic!("IPv4 only")
    };
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
    )
    .unwrap();
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(target),
    )
    .unwrap();
    std::net::TcpStream::from(fd)
}

#[test]
fn many_loopback_addresses_cannot_take_the_unix_sockets_slots() {
    let _serial = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = builder(dir.path(), "max_connections = 8\n")
        .args(["--listen-tcp", &target.to_string()])
        .start()
        .unwrap();
    // Two connections from each of 127.0.0.2 … 127.0.0.9, each holding a request whose body
    // never comes (held "mid-request" as long as the daemon lets it).
    let head = b"POST /verify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n";
    let mut held = Vec::new();
    for n in 2..10u8 {
        for _ in 0..2 {
            let mut stream = tcp_from(std::net::Ipv4Addr::new(127, 0, 0, n), target);
            let _ = stream.write_all(head);
            held.push(stream);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut times = Vec::new();
    for _ in 0..3 {
        times.push(fresh_verify(&daemon.socket));
    }
    println!("16 mid-request TCP connections from 8 loopback addresses; Unix verifies: {times:?}");
    assert!(
        times.iter().all(|t| *t < Duration::from_secs(3)),
        "verifiers on the Unix socket were locked out: {times:?}"
    );
    drop(held);
}

/// Sets process `pid`'s descriptor limits (root may set any process's).
fn set_nofile(pid: u32, soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: `limit` is a live local of the right type; the old limits are not asked for.
    let set = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The daemon caps `max_connections` to its descriptors, so a flood never reaches EMFILE (above);
/// only its limit lowered while it runs (`prlimit`, as here) does. Then every accept fails, each
/// 50 ms back-off: `accept_failed` is logged once per 10 s with the failures left out counted,
/// not twenty times a second, and the waiting client is served once descriptors are back.
#[test]
fn a_lasting_accept_failure_is_logged_once_per_period() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = builder(dir.path(), "").start().unwrap();
    let pid = daemon.pid().as_raw() as u32;
    let (soft, hard) = nofile_of(pid);
    set_nofile(pid, 0, hard);
    let mut client = UnixStream::connect(&daemon.socket).unwrap();
    client
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let first = daemon.wait_events("accept_failed");
    let mut lines = Vec::new();
    let second = heare_auth_tests::wait_until(Duration::from_secs(30), || {
        lines = daemon.events("accept_failed");
        lines.len() >= 2
    });
    set_nofile(pid, soft, hard);
    let mut answer = String::new();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = client.read_to_string(&mut answer);

    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["suppressed"], 0, "{}", first[0]);
    assert!(
        first[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Too many open files")),
        "{}",
        first[0]
    );
    assert!(second, "no second accept_failed line: {}", daemon.log());
    // Seen as soon as there were two: a third is 10 s away.
    assert_eq!(lines.len(), 2, "{lines:?}");
    let suppressed = lines[1]["suppressed"].as_u64().unwrap_or(0);
    assert!(suppressed > 0, "{}", lines[1]);
    let at = |line: &serde_json::Value| {
        heare_auth_store::timestamp::parse(line["timestamp"].as_str().unwrap()).unwrap()
    };
    assert!(at(&lines[1]) - at(&lines[0]) >= 10_000, "{lines:?}");
    println!("accept failed {suppressed} times between the two lines, unlogged");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}
