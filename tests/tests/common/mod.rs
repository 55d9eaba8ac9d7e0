//! Helpers shared by the client-side end-to-end tests (PAM module, C ABI, client library,
//! deadlines): pamtester in a private `/etc/pam.d` with the module's syslog lines captured, the
//! fake daemon (`fake-authd`, the attacker's server), a Unix listener whose backlog is full, the
//! compiled C program, and running a child process under a time limit. Each test file uses only
//! some of them.
#![allow(dead_code)]

use heare_auth_tests::daemon::binary;
use heare_auth_tests::process::Group;
use heare_auth_tests::wait_until;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, UnixAddr, bind, connect, listen, socket,
};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The uid (and gid) of `nobody`, which the tests switch to with setpriv.
pub const NOBODY: u32 = 65534;

pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (bubblewrap over /etc/pam.d, setpriv, setuid files); CI runs as root"
    );
}

/// A `200 valid` answer for a key bound to `unix_user`: what an attacker's server says.
pub fn valid_for(unix_user: &str) -> String {
    serde_json::json!({
        "valid": true, "key_id": "key_evil", "name": "evil",
        "metadata": {"unix_user": unix_user}, "error": null
    })
    .to_string()
}

/// A directory every uid may enter (the tests' temporary directories are 0700).
pub fn open_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A running `fake-authd`, killed when dropped.
pub struct FakeDaemon {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl FakeDaemon {
    /// Starts one as root in `dir`, answering `body` to everything.
    pub fn start(dir: &Path, name: &str, body: &str) -> Self {
        Self::spawn(dir, name, body, None)
    }

    /// Starts one as uid/gid `uid` (setpriv) in a directory of its own under `dir`.
    pub fn start_as(dir: &Path, name: &str, body: &str, uid: u32) -> Self {
        Self::spawn(dir, name, body, Some(uid))
    }

    fn spawn(dir: &Path, name: &str, body: &str, uid: Option<u32>) -> Self {
        let home = dir.join(format!("{name}.d"));
        std::fs::create_dir_all(&home).unwrap();
        open_dir(dir);
        open_dir(&home);
        let socket = home.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let mut command = match uid {
            Some(uid) => {
                nix::unistd::chown(&home, Some(uid.into()), Some(uid.into())).unwrap();
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={uid}"),
                    &format!("--regid={uid}"),
                    "--clear-groups",
                    "--",
                ]);
                c.arg(binary("fake-authd"));
                c
            }
            None => Command::new(binary("fake-authd")),
        };
        let child = command
            .arg(&socket)
            .arg(body)
            .stdin(Stdio::null())
            .stdout(File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fake-authd");
        let daemon = FakeDaemon { child, socket, log };
        assert!(
            wait_until(Duration::from_secs(10), || daemon
                .log()
                .contains("listening")),
            "fake-authd did not start"
        );
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connections accepted from clients before now. A marker request is sent first and its
    /// answer read: fake-authd logs a request before answering it and accepts connections in
    /// order, so every earlier connection is in the log by then.
    pub fn connections(&self) -> usize {
        let mut marker = UnixStream::connect(&self.socket).unwrap();
        marker
            .write_all(b"GET /marker HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 16];
        marker.read_exact(&mut answer).unwrap();
        let log = self.log();
        log.matches("accept ").count() - log.matches("GET /marker").count()
    }

    /// The lines about connection number `n`, once the client closed it.
    pub fn connection_lines(&self, n: usize) -> Vec<String> {
        let closed = format!("closed {n}");
        assert!(
            wait_until(Duration::from_secs(10), || self.log().contains(&closed)),
            "connection {n} never closed: {}",
            self.log()
        );
        let suffix = format!(" {n}");
        self.log()
            .lines()
            .filter(|l| l.ends_with(&suffix) || l.contains(&format!(" {n} ")))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Unix listener that never accepts and whose backlog is full: a blocking connect to it waits
/// for room that never comes. Closed when dropped.
pub struct FullBacklog {
    pub path: PathBuf,
    _listener: OwnedFd,
    _queued: Vec<OwnedFd>,
}

pub fn full_backlog(path: &Path) -> FullBacklog {
    let address = UnixAddr::new(path).unwrap();
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(listener.as_raw_fd(), &address).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mut queued = Vec::new();
    loop {
        let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
        let client = socket(AddressFamily::Unix, SockType::Stream, flags, None).unwrap();
        match connect(client.as_raw_fd(), &address) {
            Ok(()) => queued.push(client),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(other) => panic!("filling the backlog: {other}"),
        }
        assert!(queued.len() < 10_000, "the backlog never filled");
    }
    assert!(!queued.is_empty());
    FullBacklog {
        path: path.to_path_buf(),
        _listener: listener,
        _queued: queued,
    }
}

/// What a child process did: exit status, output, and how long it ran.
pub struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs `command` with `input` on stdin; a child still running after `limit` is killed and the
/// test fails (a hang must not hang the suite).
pub fn run_limited(mut command: Command, input: &str, limit: Duration, dir: &Path) -> Run {
    let out = dir.join("child.stdout");
    let err = dir.join("child.stderr");
    let started = Instant::now();
    // Its own process group, stopped whole: nothing it forked (bubblewrap's child) outlives it.
    let mut child = Group::spawn(
        command
            .stdin(Stdio::piped())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap()),
    )
    .expect("spawn the child");
    if let Some(mut stdin) = child.take_stdin() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let elapsed = started.elapsed();
    let stopped = child.stop();
    let Some(status) = status else {
        panic!("{command:?} still running after {limit:?} ({stopped:?})");
    };
    stopped.unwrap();
    Run {
        ok: status.success(),
        code: status.code(),
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
        elapsed,
    }
}

/// Writes the PAM service `heare-test` into `dir/pam.d`; `MODULE` in `text` stands for the
/// built pam_heare_auth.so.
pub fn pam_service(dir: &Path, text: &str) {
    let pam_dir = dir.join("pam.d");
    std::fs::create_dir_all(&pam_dir).unwrap();
    let module = binary("libpam_heare_auth.so");
    let text = text.replace("MODULE", &module.display().to_string());
    std::fs::write(pam_dir.join("heare-test"), text).unwrap();
}

/// What pamtester said, and the module's syslog lines.
pub struct PamRun {
    pub ok: bool,
    pub output: String,
    pub syslog: Vec<String>,
    pub elapsed: Duration,
}

/// Runs `pamtester heare-test USER authenticate` with `input` on stdin, inside bubblewrap with
/// `dir/pam.d` over /etc/pam.d and a datagram socket of the test's over /dev/log, and `env` added
/// to the environment.
pub fn pamtester(dir: &Path, user: &str, input: &str, env: &[(&str, &Path)]) -> PamRun {
    assert_root();
    let log_path = dir.join("syslog.sock");
    let _ = std::fs::remove_file(&log_path);
    let syslog = UnixDatagram::bind(&log_path).unwrap();
    let mut command = Command::new("bwrap");
    command
        .args(["--bind", "/", "/", "--bind"])
        .arg(dir.join("pam.d"))
        .args(["/etc/pam.d", "--dev", "/dev", "--bind"])
        .arg(&log_path)
        .args(["/dev/log", "pamtester", "heare-test", user, "authenticate"]);
    for (name, value) in env {
        command.env(name, value);
    }
    let run = run_limited(command, input, Duration::from_secs(60), dir);
    PamRun {
        ok: run.ok,
        output: format!("{}{}", run.stdout, run.stderr),
        syslog: module_lines(&syslog),
        elapsed: run.elapsed,
    }
}

/// The `pam_heare_auth:` lines waiting on the syslog socket.
fn module_lines(syslog: &UnixDatagram) -> Vec<String> {
    syslog.set_nonblocking(true).unwrap();
    let mut lines = Vec::new();
    let mut buffer = vec![0u8; 65536];
    while let Ok(n) = syslog.recv(&mut buffer) {
        let line = String::from_utf8_lossy(&buffer[..n]).into_owned();
        if line.contains("pam_heare_auth:") {
            lines.push(line);
        }
    }
    lines
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Compiles `tests/c/verify.c` against the checked-in header and libheare_auth.so into `out`.
pub fn compile_c(out: &Path) {
    let library_dir = binary("libheare_auth.so").parent().unwrap().to_path_buf();
    let status = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(out)
        .arg(workspace().join("tests/c/verify.c"))
        .arg("-I")
        .arg(workspace().join("client/ffi/include"))
        .arg("-L")
        .arg(&library_dir)
        .arg(format!("-Wl,-rpath,{}", library_dir.display()))
        .arg("-lheare_auth")
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
}
