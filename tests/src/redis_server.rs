//! A real `redis-server` (Debian's package) for the fleet-wide rate-limit tests: on a free port of
//! 127.0.0.1 and a Unix socket in a temporary directory, with no persistence (`save ""`,
//! `appendonly no`), optionally a password (`requirepass`, in a configuration file rather than on
//! the command line) and TLS on a second port (a throwaway CA and server certificate made with the
//! `openssl` command; clients are not asked for certificates).
//!
//! It runs in a process group of its own; [`RedisServer::stop`] (and dropping it) kills the group
//! with SIGKILL and waits for it, [`RedisServer::start_again`] starts it on the same ports and
//! socket (with its data gone, as after a crash), [`RedisServer::pause`] stops it with SIGSTOP
//! (connections stay open and nothing answers) until [`RedisServer::resume`].
//!
//! The process group is a [`crate::process::Group`].

use crate::process::{self, Group};
use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::Signal;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The program started: `HEARE_TEST_REDIS_SERVER` or `redis-server` from `PATH`.
pub const PROGRAM_ENV: &str = "HEARE_TEST_REDIS_SERVER";

/// How long a start may take before it is an error.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `requirepass`: every client must AUTH with it.
    pub password: Option<String>,
    /// A TLS port besides the plain one ([`RedisServer::tls_url`], [`RedisServer::ca_file`]).
    pub tls: bool,
}

/// A running (or stopped, or paused) `redis-server`.
pub struct RedisServer {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Group>,
    paused: bool,
}

impl RedisServer {
    /// The program this harness starts.
    pub fn program() -> PathBuf {
        std::env::var_os(PROGRAM_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"))
    }

    /// Whether the program can be found (tests skip, saying so, when it cannot).
    pub fn available() -> bool {
        let program = Self::program();
        if program.components().count() > 1 {
            return program.is_file();
        }
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| dir.join(&program).is_file())
        })
    }

    /// Whether TLS certificates can be made here (the `openssl` command).
    pub fn tls_available() -> bool {
        Command::new("openssl")
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// A server without password or TLS.
    pub fn start() -> anyhow::Result<RedisServer> {
        Self::start_with(RedisOptions::default())
    }

    /// A server whose clients must AUTH with `password`.
    pub fn start_with_password(password: &str) -> anyhow::Result<RedisServer> {
        Self::start_with(RedisOptions {
            password: Some(password.to_string()),
            ..RedisOptions::default()
        })
    }

    /// A server as `options` say. A port taken meanwhile by another test is tried again with
    /// other ports.
    pub fn start_with(options: RedisOptions) -> anyhow::Result<RedisServer> {
        let dir = tempfile::Builder::new()
            .prefix("heare-redis-")
            .tempdir()
            .context("temporary directory for redis-server")?;
        if options.tls {
            make_certificates(dir.path())?;
        }
        let mut server = RedisServer {
            dir,
            port: 0,
            tls_port: None,
            child: None,
            paused: false,
        };
        let mut last = None;
        for _ in 0..5 {
            server.port = free_port()?;
            server.tls_port = if options.tls {
                Some(free_port()?)
            } else {
                None
            };
            server.write_config(&options)?;
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `unix:///…/redis.sock`.
    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket_path().display())
    }

    /// `rediss://127.0.0.1:TLS_PORT` when started with TLS (the certificate names 127.0.0.1 and
    /// localhost).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("rediss://127.0.0.1:{port}"))
    }

    /// The PEM file of the CA that signed the server's certificate, when started with TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls_port.map(|_| self.dir.path().join("ca.crt"))
    }

    /// The plain TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Group::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Kills the server's process group with SIGKILL (a crash: no shutdown, no goodbye to
    /// clients) and waits for it. Nothing when it is not running.
    pub fn stop(&mut self) {
        let Some(mut group) = self.child.take() else {
            return;
        };
        self.paused = false;
        if let Err(error) = group.kill() {
            eprintln!("killing redis-server {}: {error}", group.id());
        }
    }

    /// Starts the server again, after [`stop`](Self::stop), on the same ports and socket with the
    /// same password and certificates, and with no data.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// SIGSTOP: the server holds its connections and answers nothing (stopped when this returns).
    pub fn pause(&mut self) {
        if let Some(group) = &self.child {
            let pid = group.id() as i32;
            group.signal(Signal::SIGSTOP);
            self.paused = true;
            wait_for_state(pid, |state| state == "T");
        }
    }

    /// SIGCONT after [`pause`](Self::pause) (running again when this returns).
    pub fn resume(&mut self) {
        if let Some(group) = &self.child {
            let pid = group.id() as i32;
            group.signal(Signal::SIGCONT);
            self.paused = false;
            wait_for_state(pid, |state| state != "T");
        }
    }

    fn write_config(&self, options: &RedisOptions) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let mut config = format!(
            "bind 127.0.0.1\nport {}\nunixsocket {}\nunixsocketperm 700\ndaemonize no\n\
             save \"\"\nappendonly no\ndir {}\nlogfile {}\nloglevel notice\n",
            self.port,
            self.socket_path().display(),
            dir.display(),
            dir.join("redis.log").display(),
        );
        if let Some(password) = &options.password {
            config.push_str(&format!("requirepass \"{password}\"\n"));
        }
        if let Some(port) = self.tls_port {
            config.push_str(&format!(
                "tls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients no\n",
                dir.join("server.crt").display(),
                dir.join("server.key").display(),
                dir.join("ca.crt").display(),
            ));
        }
        std::fs::write(dir.join("redis.conf"), config).context("writing redis.conf")
    }

    /// Starts the server and waits until it answers on its socket.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let _ = std::fs::remove_file(self.socket_path());
        let child = Group::spawn(
            Command::new(Self::program())
                .arg(self.dir.path().join("redis.conf"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .with_context(|| format!("starting {}", Self::program().display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "redis-server exited at start ({status}); its log:\n{}",
                    self.log()
                );
            }
            if self.answers() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!(
                    "redis-server did not answer within {START_TIMEOUT:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one command (each argument a bulk string) on the server's socket and returns its
    /// reply's text: a simple string, an error (`-…`), an integer, or a bulk string's body.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut stream = UnixStream::connect(self.socket_path()).context("the Redis socket")?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                bail!("Redis closed the connection");
            }
            reply.extend_from_slice(&chunk[..read]);
            if let Some(text) = complete_reply(&reply) {
                return Ok(text);
            }
        }
    }

    /// Whether the server answers a PING on its socket (`+PONG`, or `-NOAUTH` with a password).
    fn answers(&self) -> bool {
        let Ok(mut stream) = UnixStream::connect(self.socket_path()) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 1];
        matches!(stream.read(&mut reply), Ok(1) if reply[0] == b'+' || reply[0] == b'-')
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The text of a whole RESP reply in `reply` (not an array), or `None` while more is to come.
fn complete_reply(reply: &[u8]) -> Option<String> {
    let line_end = reply.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&reply[..line_end]).into_owned();
    let Some(length) = line.strip_prefix('$') else {
        return Some(line);
    };
    let Ok(length) = length.parse::<usize>() else {
        return Some(line);
    };
    let body = reply.get(line_end + 2..line_end + 2 + length)?;
    Some(String::from_utf8_lossy(body).into_owned())
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits (at most 5 s) until process `pid`'s state letter is as `wanted` says, or it is gone.
fn wait_for_state(pid: i32, wanted: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match process::state(pid) {
            Some(state) if !wanted(&state) => std::thread::sleep(Duration::from_millis(2)),
            _ => return,
        }
    }
}

/// A throwaway CA (`ca.crt`) and a server certificate it signed for 127.0.0.1 and localhost
/// (`server.crt`, `server.key`) in `dir`, with the `openssl` command.
fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .context("running openssl (Debian package openssl)")?;
        if !output.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.first().unwrap_or(&""),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=heare-auth test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        ]
        .concat(),
    )?;
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .context("writing server.ext")?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])
}
