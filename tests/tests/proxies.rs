//! The real nginx (`auth_request`) and Caddy (`forward_auth`) in front of a small upstream that
//! echoes the headers it got, each configured with the examples shipped in
//! `docs/examples/forward-auth/` (only the socket path, ports and upstream substituted), asking
//! the real daemon's `/auth` over its Unix socket. For both: no key and a bad key are 401 at the
//! client; a good key in `Authorization: Bearer` or `X-API-Key` reaches the upstream with
//! `X-Heare-Key-Id` and the mapped `X-User`; identity headers the client sends never reach it; a
//! location that requires scope `write` answers 403 to a key without it; a deleted key is refused
//! after the reload; with the daemon stopped the proxy answers 5xx and the upstream is never
//! reached (fail closed). nginx-light and caddy come from Debian (tests/run installs them).

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::{Request, Response, send_tcp};
use heare_auth_tests::{free_port, wait_until};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const SHIPPED_SOCKET: &str = "/run/heare-auth/heare-authd.sock";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/forward-auth")
}

/// An upstream that answers every request 200 with a JSON object of the headers it got.
struct Upstream {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counted = counted.clone();
                std::thread::spawn(move || echo(stream, &counted));
            }
        });
        Upstream { port, hits }
    }
}

fn echo(stream: std::net::TcpStream, hits: &AtomicUsize) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut headers = serde_json::Map::new();
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().into());
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let body = Value::Object(headers).to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A proxy process, killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx(dir: &Path, socket: &Path, upstream: u16) -> Proxy {
    let port = free_port();
    let snippet = std::fs::read_to_string(examples().join("nginx.conf"))
        .unwrap()
        .replace(SHIPPED_SOCKET, &socket.display().to_string());
    std::fs::write(dir.join("heare-auth.conf"), snippet).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/t1;\n  proxy_temp_path {d}/t2;\n  fastcgi_temp_path {d}/t3;\n  uwsgi_temp_path {d}/t4;\n  scgi_temp_path {d}/t5;\n  upstream app {{ server 127.0.0.1:{upstream}; }}\n  server {{\n    listen 127.0.0.1:{port};\n    include {d}/heare-auth.conf;\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx-main.conf"), main).unwrap();
    let child = Command::new("nginx")
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx-main.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (Debian nginx-light; tests/run installs it)");
    wait_listening(port);
    Proxy { child, port }
}

fn caddy(dir: &Path, socket: &Path, upstream: u16) -> Proxy {
    let port = free_port();
    let shipped = std::fs::read_to_string(examples().join("Caddyfile"))
        .unwrap()
        .replace(SHIPPED_SOCKET, &socket.display().to_string())
        .replace(":8443", &format!("http://:{port}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{upstream}"));
    let global = format!(
        "{{\n\tadmin off\n\tstorage file_system {}/caddy\n}}\n",
        dir.display()
    );
    std::fs::write(dir.join("Caddyfile"), format!("{global}{shipped}")).unwrap();
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.join("Caddyfile"))
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap())
        .spawn()
        .expect("caddy (Debian caddy; tests/run installs it)");
    wait_listening(port);
    Proxy { child, port }
}

fn wait_listening(port: u16) {
    let up = wait_until(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the proxy never listened on {port}");
}

fn get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = Request::new("GET", path);
    for (name, value) in headers {
        request = request.header(name, value.to_string());
    }
    send_tcp(&format!("127.0.0.1:{}", proxy.port), &request).unwrap()
}

/// A daemon whose keys come from ctl, mapping metadata `user` to `X-User`.
fn daemon(dir: &Path) -> (Daemon, Ctl) {
    let store = format!("file://{}", dir.join("keys.json").display());
    let daemon = DaemonBuilder::new(dir)
        .arg("--store")
        .arg(&store)
        .config("[forward_auth.metadata_headers]\n\"X-User\" = \"user\"\n")
        .start()
        .unwrap();
    let ctl = Ctl::new(dir, &store, &daemon.socket);
    (daemon, ctl)
}

fn every_case(make: fn(&Path, &Path, u16) -> Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, ctl) = daemon(dir.path());
    let (writer, writer_secret) = ctl.create(&[
        "--name",
        "writer",
        "--scope",
        "write",
        "--meta",
        "user=alice",
    ]);
    let (_, reader_secret) = ctl.create(&["--name", "reader", "--scope", "read"]);
    let upstream = Upstream::start();
    let proxy = make(dir.path(), &daemon.socket, upstream.port);
    let bearer = format!("Bearer {writer_secret}");

    assert_eq!(get(&proxy, "/", &[]).status, 401, "no key");
    assert_eq!(
        get(&proxy, "/", &[("authorization", "Bearer sec_0nope")]).status,
        401
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);

    for header in [
        ("authorization", bearer.as_str()),
        ("x-api-key", writer_secret.as_str()),
    ] {
        let answer = get(&proxy, "/orders", &[header, ("x-heare-key-id", "key_root")]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let seen = answer.json();
        assert_eq!(seen["x-heare-key-id"], writer.as_str(), "{seen}");
        assert_eq!(seen["x-user"], "alice");
    }
    // A key with no `user` in its metadata: the client's own X-User never gets through.
    let answer = get(
        &proxy,
        "/",
        &[
            ("x-api-key", &reader_secret),
            ("x-user", "root"),
            ("x-heare-key-id", "key_root"),
        ],
    );
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    assert_ne!(seen["x-user"], "root", "{seen}");
    assert_ne!(seen["x-heare-key-id"], "key_root", "{seen}");

    // The same identity spelled with underscores (which some servers read as X-User).
    let answer = get(
        &proxy,
        "/",
        &[("x-api-key", &reader_secret), ("x_user", "admin")],
    );
    assert_eq!(answer.status, 200);
    assert!(answer.json().get("x_user").is_none(), "{}", answer.body);

    for path in ["/write/x", "/write", "/WRITE/x", "/Write"] {
        let refused = get(&proxy, path, &[("x-api-key", &reader_secret)]);
        assert_eq!(refused.status, 403, "{path}");
    }
    let allowed = get(&proxy, "/write/x", &[("x-api-key", &writer_secret)]);
    assert_eq!(allowed.status, 200);

    ctl.ok(&["delete", &writer, "--yes"]);
    assert_eq!(
        get(&proxy, "/", &[("authorization", &bearer)]).status,
        401,
        "deleted"
    );

    let hits = upstream.hits.load(Ordering::SeqCst);
    assert!(daemon.stop().is_some());
    let down = get(&proxy, "/", &[("x-api-key", &reader_secret)]);
    assert!(
        (500..600).contains(&down.status),
        "daemon stopped: {}",
        down.status
    );
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        hits,
        "the upstream was reached"
    );
}

#[test]
fn nginx_auth_request_with_the_shipped_configuration() {
    every_case(nginx);
}

#[test]
fn caddy_forward_auth_with_the_shipped_configuration() {
    every_case(caddy);
}
