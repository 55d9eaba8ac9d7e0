//! The TCP listeners against a local user who takes their ports, and socket activation by name.
//!
//! Any local user may bind a loopback port at or above 1024 while heare-authd is not holding it.
//! Here `nobody` does, with `fake-authd` answering every request "valid" as an attacker would:
//! the daemon still starts and serves its Unix socket, shows the TCP and metrics listeners as
//! failing in `/status`, `/metrics` and `heare-authctl status`, retries with a backoff that
//! grows to 30 s, and takes the ports within 35 s once the holder lets go. The cure, the packaged socket units, hand the daemon sockets that systemd binds
//! as root; `systemd-socket-activate --fdname` plays systemd here: a TCP socket named `metrics`
//! is the metrics listener, every other TCP socket the verify listener (a name other than `tcp`
//! is warned about once), and both win over `listen_tcp` and `metrics_listen` with a warning. A
//! socket that is not a listening stream socket (`--datagram`, `--accept`) refuses the start.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder, binary};
use heare_auth_tests::http::{Request, send, send_tcp};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::{free_port, wait_until};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "sec_0TcpListenersSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The uid and gid of `nobody`.
const NOBODY: u32 = 65534;

/// What the attacker's server answers to everything.
const ATTACKER_SAYS: &str = r#"{"valid":true,"key_id":"key_evil","name":"evil","metadata":{"scopes":"admin"},"error":null}"#;

/// `fake-authd` run as `nobody` on a TCP address: a local user holding the daemon's port.
struct PortHolder {
    child: Option<Child>,
    log: PathBuf,
}

impl PortHolder {
    fn start(dir: &Path, address: &str) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "switches to nobody with setpriv: run as root (CI does)"
        );
        let log = dir.join(format!("holder-{}.log", address.replace(':', "_")));
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "--",
            ])
            .arg(binary("fake-authd"))
            .arg(format!("tcp:{address}"))
            .arg(ATTACKER_SAYS)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn setpriv fake-authd");
        let holder = PortHolder {
            child: Some(child),
            log,
        };
        assert!(
            wait_until(Duration::from_secs(10), || holder
                .output()
                .contains("listening")),
            "nobody could not bind {address}: {}",
            holder.output()
        );
        holder
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the holder and its process group, and waits for it: the port is free.
    fn release(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for PortHolder {
    fn drop(&mut self) {
        self.release();
    }
}

fn store(dir: &Path) -> String {
    let path = dir.join("keys.json");
    std::fs::write(&path, key_file(&[TestKey::new("key_tcp", SECRET)])).unwrap();
    format!("file://{}", path.display())
}

/// The listener named `name` at `address` in `/status`.
fn listener(status: &Value, name: &str, address: &str) -> Value {
    status["listeners"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|l| l["name"] == name && l["address"] == address)
        })
        .cloned()
        .unwrap_or_else(|| panic!("no {name} listener at {address} in {status}"))
}

/// The value of `heare_auth_listener_up` for `name` at `address`, scraped over the socket.
fn listener_up(daemon: &Daemon, name: &str, address: &str) -> Option<f64> {
    let text = daemon
        .request(&Request::new("GET", "/metrics"))
        .unwrap()
        .body;
    let series = format!("heare_auth_listener_up{{listener=\"{name}\",address=\"{address}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
}

/// The daemon's own answer to a TCP verify (the attacker's names `key_evil`).
fn daemon_answers_tcp(address: &str) -> bool {
    send_tcp(address, &Request::verify(SECRET))
        .is_ok_and(|answer| answer.status == 200 && answer.body.contains("\"key_tcp\""))
}

fn daemon_serves_metrics(address: &str) -> bool {
    send_tcp(address, &Request::new("GET", "/metrics"))
        .is_ok_and(|answer| answer.status == 200 && answer.body.contains("heare_auth_keys 1"))
}

#[test]
fn ports_held_by_another_user_neither_stop_the_daemon_nor_stay_taken() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut holders = [
        PortHolder::start(dir.path(), &tcp),
        PortHolder::start(dir.path(), &metrics),
    ];
    // While the daemon cannot bind, its TCP clients talk to the attacker: the threat itself.
    let fooled = send_tcp(&tcp, &Request::verify(SECRET)).unwrap();
    assert!(fooled.body.contains("key_evil"), "{}", fooled.body);

    let daemon = DaemonBuilder::new(dir.path())
        .args(["--store", &store(dir.path())])
        .args(["--listen-tcp", &tcp, "--metrics-listen", &metrics])
        // Every retry is a debug line: the test sees the backoff grow.
        .args(["--log-level", "debug"])
        .spawn();
    let unix_answers = wait_until(Duration::from_secs(2), || {
        daemon
            .request(&Request::verify(SECRET))
            .is_ok_and(|answer| answer.status == 200)
    });
    assert!(unix_answers, "no Unix verify within 2 s: {}", daemon.log());

    let status = daemon.status();
    let unix = daemon.socket.display().to_string();
    assert_eq!(listener(&status, "unix", &unix)["state"], "listening");
    for (name, address) in [("tcp", &tcp), ("metrics", &metrics)] {
        let shown = listener(&status, name, address);
        assert_eq!(shown["state"], "failing", "{shown}");
        let error = shown["error"].as_str().unwrap_or_default();
        assert!(error.contains("in use"), "{shown}");
        assert_eq!(listener_up(&daemon, name, address), Some(0.0));
    }
    assert_eq!(listener_up(&daemon, "unix", &unix), Some(1.0));
    // Logged in order by one writer: every start-up line is in once `ready` is.
    assert_eq!(daemon.wait_events("ready").len(), 1);
    let failed = daemon.events("listener_bind_failed");
    for address in [&tcp, &metrics] {
        assert!(
            failed
                .iter()
                .any(|e| e["address"] == address.as_str() && e["error"].is_string()),
            "{failed:?}"
        );
    }
    let unprotected = daemon.events("tcp_listener_unprotected");
    assert_eq!(unprotected.len(), 2, "{unprotected:?}");
    for (address, unit) in [
        (&tcp, "heare-authd-tcp.socket"),
        (&metrics, "heare-authd-metrics.socket"),
    ] {
        assert!(
            unprotected
                .iter()
                .any(|e| e["address"] == address.as_str() && e["unit"] == unit),
            "{unprotected:?}"
        );
    }
    let shown = Ctl::new(dir.path(), &store(dir.path()), &daemon.socket).ok(&["status"]);
    assert!(
        shown.contains(&format!("listener:      tcp {tcp} (FAILING)")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("listener:      metrics {metrics} (FAILING)")),
        "{shown}"
    );
    assert!(shown.contains("bind error:    "), "{shown}");
    let first = shown.lines().next().unwrap_or_default();
    assert!(first.starts_with("ATTENTION: serving "), "{first}");
    assert!(
        first.contains(&format!("listener tcp {tcp} FAILING")),
        "{first}"
    );

    // The holders stay until the retries' window has grown to its cap (30 s: the 6th failure
    // on), then go: the daemon takes both ports within the cap.
    let failures = |address: &str| {
        let failed = daemon.events("listener_bind_failed");
        failed.iter().filter(|e| e["address"] == address).count()
    };
    let backed_off = wait_until(Duration::from_secs(180), || {
        failures(&tcp) >= 6 && failures(&metrics) >= 6
    });
    assert!(backed_off, "{}", daemon.log());
    for holder in &mut holders {
        holder.release();
    }
    let taken = wait_until(Duration::from_secs(35), || {
        daemon_answers_tcp(&tcp) && daemon_serves_metrics(&metrics)
    });
    assert!(taken, "ports not taken within 35 s: {}", daemon.log());
    let status = daemon.status();
    for (name, address) in [("tcp", &tcp), ("metrics", &metrics)] {
        let shown = listener(&status, name, address);
        assert_eq!(shown["state"], "listening", "{shown}");
        assert_eq!(shown["error"], Value::Null, "{shown}");
        assert_eq!(listener_up(&daemon, name, address), Some(1.0));
    }
    let recovered = wait_until(Duration::from_secs(10), || {
        daemon.events("listener_bind_recovered").len() == 2
    });
    assert!(recovered, "{}", daemon.log());
    let shown = Ctl::new(dir.path(), &store(dir.path()), &daemon.socket).ok(&["status"]);
    assert!(
        shown.contains(&format!("listener:      tcp {tcp} (listening)")),
        "{shown}"
    );
    assert!(!shown.contains("FAILING"), "{shown}");
    assert!(shown.starts_with("OK: serving "), "{shown}");
}

/// A loopback port below 1024 that root can bind now.
fn free_privileged_port() -> u16 {
    (900..1000)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port in 900..1000")
}

#[test]
fn a_privileged_port_is_not_reported_unprotected() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_privileged_port());
    let daemon = DaemonBuilder::new(dir.path())
        .args(["--store", &store(dir.path())])
        .args(["--listen-tcp", &address])
        .start()
        .unwrap();
    assert!(daemon_answers_tcp(&address));
    assert_eq!(daemon.wait_events("ready").len(), 1);
    // Logged in order from one writer: a warning at start would be before `ready`.
    assert_eq!(
        daemon.events("tcp_listener_unprotected"),
        Vec::<Value>::new()
    );
    assert_eq!(
        listener(&daemon.status(), "tcp", &address)["state"],
        "listening"
    );
}

/// `systemd-socket-activate` running the daemon with `sockets` (`-l` each) named `names`, and
/// `listen_tcp` and `metrics_listen` configured to other addresses.
struct Activated {
    child: Child,
    log: PathBuf,
}

impl Activated {
    fn start(dir: &Path, sockets: &[&str], names: &str, configured: [&str; 2]) -> Self {
        let configured = [
            "--listen-tcp",
            configured[0],
            "--metrics-listen",
            configured[1],
        ];
        Self::spawn(dir, &[], sockets, names, &configured)
    }

    /// `systemd-socket-activate OPTIONS --listen SOCKET… --fdname=NAMES heare-authd … ARGS`.
    fn spawn(
        dir: &Path,
        options: &[&str],
        sockets: &[&str],
        names: &str,
        daemon_args: &[&str],
    ) -> Self {
        let activate = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .map(|d| Path::new(d).join("systemd-socket-activate"))
            .find(|path| path.exists())
            .expect("systemd-socket-activate (package systemd; .ci/run installs it)");
        std::fs::write(dir.join("empty.toml"), "").unwrap();
        let log = dir.join("daemon.log");
        let output = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(activate);
        command.args(options);
        for socket in sockets {
            command.args(["--listen", socket]);
        }
        let child = command
            .arg(format!("--fdname={names}"))
            .arg(binary("heare-authd"))
            .arg("--config")
            .arg(dir.join("empty.toml"))
            .args(["--store", &store(dir)])
            .arg("--socket")
            .arg(dir.join("unused.sock"))
            .args(daemon_args)
            .env_clear()
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .unwrap();
        Activated { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log's lines with `"event": event`, once the daemon logged `ready` (the log is
    /// written in order by a background thread, so every start-up line is in by then).
    fn events(&self, event: &str) -> Vec<Value> {
        let ready = wait_until(Duration::from_secs(10), || {
            !self.events_so_far("ready").is_empty()
        });
        assert!(
            ready,
            "no ready line: {:?}",
            std::fs::read_to_string(&self.log)
        );
        self.events_so_far(event)
    }

    fn events_so_far(&self, event: &str) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["event"] == event)
            .collect()
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn activated_sockets_are_assigned_by_name_and_win_over_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let [tcp, metrics, other, listen_tcp, metrics_listen] =
        [(); 5].map(|_| format!("127.0.0.1:{}", free_port()));
    let activated = Activated::start(
        dir.path(),
        &[&socket.display().to_string(), &tcp, &metrics, &other],
        "heare-authd.socket:tcp:metrics:other",
        [&listen_tcp, &metrics_listen],
    );
    // The socket's file appears at its bind, before it listens: retry until it answers.
    let unix_answers = wait_until(Duration::from_secs(10), || {
        send(&socket, &Request::verify(SECRET)).is_ok_and(|answer| answer.status == 200)
    });
    assert!(
        unix_answers,
        "{:?}",
        std::fs::read_to_string(&activated.log)
    );

    // `tcp` and any other TCP socket verify; `metrics` serves only /metrics and /health.
    assert!(daemon_answers_tcp(&tcp));
    assert!(daemon_answers_tcp(&other));
    assert!(daemon_serves_metrics(&metrics));
    let refused = send_tcp(&metrics, &Request::verify(SECRET)).unwrap();
    assert_eq!(refused.status, 404);

    // The configured addresses were left alone: this test can bind them itself.
    for address in [&listen_tcp, &metrics_listen] {
        assert!(
            std::net::TcpListener::bind(address.as_str()).is_ok(),
            "{address} was bound although a socket was activated"
        );
    }
    let overridden = activated.events("activated_socket_overrides_config");
    assert_eq!(overridden.len(), 2, "{overridden:?}");
    for (setting, configured, passed) in [
        ("listen_tcp", &listen_tcp, format!("{tcp},{other}")),
        ("metrics_listen", &metrics_listen, metrics.clone()),
    ] {
        assert!(
            overridden.iter().any(|e| e["setting"] == setting
                && e["configured"] == configured.as_str()
                && e["activated"] == passed.as_str()),
            "{setting}: {overridden:?}"
        );
    }
    assert_eq!(
        activated.events("tcp_listener_unprotected"),
        Vec::<Value>::new()
    );
    // `other` is served as promised, but said once: a typo (`Metrics`) would be. Neither `tcp`,
    // `metrics` nor the Unix socket's name is.
    let unknown = activated.events("activated_socket_unknown_name");
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0]["name"], "other", "{}", unknown[0]);
    assert_eq!(unknown[0]["address"], other.as_str(), "{}", unknown[0]);

    let status = send(&socket, &Request::new("GET", "/status"))
        .unwrap()
        .json();
    let names: Vec<(String, String, String)> = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let text = |field: &str| l[field].as_str().unwrap_or_default().to_string();
            (text("name"), text("address"), text("state"))
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("unix", socket.display().to_string()),
        ("tcp", tcp.clone()),
        ("tcp", other.clone()),
        ("metrics", metrics.clone()),
    ]
    .into_iter()
    .map(|(name, address)| (name.into(), address, "listening".into()))
    .collect();
    assert_eq!(names, expected);
}

/// The documented fallback: `listen_tcp` kept at the socket unit's own address. While the unit
/// hands the socket over, that is no conflict (no `activated_socket_overrides_config`); were the
/// unit ever to come up without it (its bind lost to a squatter), the daemon would bind the
/// address itself and show it failing (`ports_held_by_another_user_…`).
#[test]
fn listen_tcp_at_the_activated_address_is_a_silent_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let [tcp, metrics_listen] = [(); 2].map(|_| format!("127.0.0.1:{}", free_port()));
    let activated = Activated::start(
        dir.path(),
        &[&socket.display().to_string(), &tcp],
        "heare-authd.socket:tcp",
        [&tcp, &metrics_listen],
    );
    assert!(wait_until(Duration::from_secs(10), || daemon_answers_tcp(
        &tcp
    )));
    assert_eq!(
        activated.events("activated_socket_overrides_config"),
        Vec::<Value>::new()
    );
    // metrics_listen has no socket of its own here: bound by the daemon, as configured.
    assert!(wait_until(Duration::from_secs(10), || {
        daemon_serves_metrics(&metrics_listen)
    }));
}

/// An activated socket that is not a listening stream socket — a datagram socket passed as `tcp`
/// (`ListenDatagram=` in a drop-in) — refuses the start (exit 1, naming the descriptor and why)
/// instead of being shown listening while `accept_failed` is logged twenty times a second.
#[test]
fn an_activated_datagram_socket_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut activated = Activated::spawn(
        dir.path(),
        &["--datagram"],
        &[&address],
        "tcp",
        &["--log-format", "json"],
    );
    // systemd-socket-activate starts the daemon at the first datagram: send until it exits.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        let _ = udp.send_to(b"x", &address);
        status = activated.child.try_wait().ok().flatten();
        status.is_some()
    });
    let log = activated.log_text();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains(
            "heare-authd: socket activation passed fd 3 (named \"tcp\"), which is a datagram socket"
        ),
        "{log}"
    );
    assert_eq!(log.matches("accept_failed").count(), 0, "{log}");
    assert_eq!(activated.events_so_far("listening"), Vec::<Value>::new());
}

/// A connection handed over as the socket (a unit with `Accept=yes`) is a stream socket that
/// does not listen: refused at start too.
#[test]
fn an_activated_connection_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let activated = Activated::spawn(
        dir.path(),
        &["--accept"],
        &[&address],
        "tcp",
        &["--log-format", "json"],
    );
    // Each connection starts a daemon with it: connect until one has said why it stops.
    let refused = wait_until(Duration::from_secs(20), || {
        let _ = std::net::TcpStream::connect(&address);
        activated
            .log_text()
            .contains("heare-authd: socket activation passed")
    });
    let log = activated.log_text();
    assert!(refused, "{log}");
    assert!(
        log.contains("socket activation passed fd 3 (named \"tcp\"), which is not listening"),
        "{log}"
    );
    assert_eq!(log.matches("accept_failed").count(), 0, "{log}");
}
