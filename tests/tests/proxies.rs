//! The real nginx (`auth_request`) and Caddy (`forward_auth`) in front of a small upstream that
//! echoes the request target and headers it got, each configured with the examples shipped in
//! `docs/examples/forward-auth/` (only the socket path, ports and upstream substituted), asking
//! the real daemon's `/auth` over its Unix socket. For both: no key and a bad key are 401 at the
//! client; a good key in `Authorization: Bearer` or `X-API-Key` reaches the upstream with
//! `X-Heare-Key-Id` and the mapped `X-User`; identity headers the client sends never reach it,
//! nor `X-Original-URL`/`X-Rewrite-URL`; every spelling of `/write`, `/write/…` and `/write;…`
//! (encoded letters, `;`, `%3B`, `%2F`, `//`, any case) is 403 to a key without scope `write`
//! and reaches the upstream as sent with one; a path a service could read otherwise than the
//! proxy (dot segments in any spelling, `..;`, a segment starting with `;`, backslashes, double
//! encoding, NUL, bytes that are not UTF-8 once decoded — overlong forms such as `%C1%B7` for
//! `w`, escaped or raw —, whitespace or a control character at either end of a segment) is 400
//! for every key and never forwarded; `/writers` and other near names are other paths, and so
//! are Unicode look-alikes of `/write` (dotless i, fullwidth w), which both proxies forward to a
//! key without scope `write` (the service must not fold them); a deleted key is refused after
//! the reload; with the daemon stopped the proxy answers 5xx and the upstream is never reached
//! (fail closed); stopping a proxy leaves none of its processes (nginx's worker included). A
//! rate-limited key's `RateLimit` and `RateLimit-Policy` reach the client on a 200, and over the
//! limit the client gets 429 with `Retry-After` (nginx maps `auth_request`'s 500 back), never
//! forwarded; any other `/auth` status (from a stand-in) is a 500 from nginx, as is from Caddy.
//! nginx-light and caddy come from Debian (tests/run installs them).

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::{Request, Response, exchange_raw, send_tcp};
use heare_auth_tests::process::{Group, is_alive};
use heare_auth_tests::{free_port, wait_until};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

const SHIPPED_SOCKET: &str = "/run/heare-auth/heare-authd.sock";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/forward-auth")
}

/// An upstream that answers every request 200 with a JSON object: the request target it got
/// (`target`, exactly as the proxy sent it) and its headers (`headers`, names lower-cased).
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

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn echo(stream: std::net::TcpStream, hits: &AtomicUsize) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut headers = serde_json::Map::new();
        let Some(line) = read_line(&mut reader) else {
            return;
        };
        let target = line.split(' ').nth(1).unwrap_or_default().to_string();
        loop {
            let Some(header) = read_line(&mut reader) else {
                return;
            };
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().into());
            }
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let body = serde_json::json!({ "target": target, "headers": headers }).to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A line as text (bytes that are not UTF-8 become U+FFFD, so such a target still counts as a
/// hit); `None` at the end of the stream.
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(String::from_utf8_lossy(&line).into_owned()),
    }
}

/// A proxy leading its own process group (nginx's master and worker), stopped when dropped.
struct Proxy {
    group: Group,
    port: u16,
}

fn nginx(dir: &Path, socket: &Path, upstream: u16) -> Proxy {
    let port = free_port();
    let snippet = std::fs::read_to_string(examples().join("nginx.conf"))
        .unwrap()
        .replace(SHIPPED_SOCKET, &socket.display().to_string());
    std::fs::write(dir.join("heare-auth.conf"), snippet).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/t1;\n  proxy_temp_path {d}/t2;\n  fastcgi_temp_path {d}/t3;\n  uwsgi_temp_path {d}/t4;\n  scgi_temp_path {d}/t5;\n  upstream app {{ server 127.0.0.1:{upstream}; }}\n  server {{\n    listen 127.0.0.1:{port};\n    include {d}/heare-auth.conf;\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx-main.conf"), main).unwrap();
    let group = Group::spawn(
        Command::new("nginx")
            .arg("-e")
            .arg(dir.join("nginx-error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx-main.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .expect("nginx (Debian nginx-light; tests/run installs it)");
    wait_listening(port);
    Proxy { group, port }
}

fn caddy(dir: &Path, socket: &Path, upstream: u16) -> Proxy {
    let port = free_port();
    let shipped = std::fs::read_to_string(examples().join("Caddyfile")).unwrap();
    // The placeholder upstream is not 127.0.0.1:8080, heare-authd's TCP port
    // (heare-authd-tcp.socket): left unchanged, it would put heare-authd's own API behind Caddy.
    assert!(
        shipped.contains("reverse_proxy 127.0.0.1:9000"),
        "{shipped}"
    );
    assert!(!shipped.contains("127.0.0.1:8080"), "{shipped}");
    let shipped = shipped
        .replace(SHIPPED_SOCKET, &socket.display().to_string())
        .replace(":8443", &format!("http://:{port}"))
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{upstream}"));
    let global = format!(
        "{{\n\tadmin off\n\tstorage file_system {}/caddy\n}}\n",
        dir.display()
    );
    std::fs::write(dir.join("Caddyfile"), format!("{global}{shipped}")).unwrap();
    let group = Group::spawn(
        Command::new("caddy")
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.join("Caddyfile"))
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("caddy.log")).unwrap()),
    )
    .expect("caddy (Debian caddy; tests/run installs it)");
    wait_listening(port);
    Proxy { group, port }
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

/// A GET whose request target is `target` byte for byte (not UTF-8, where a test needs that).
fn get_raw(proxy: &Proxy, target: &[u8], key: &str) -> Response {
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(
        format!(" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-API-Key: {key}\r\n\r\n")
            .as_bytes(),
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    exchange_raw(&mut stream, &request).unwrap()
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
    assert_eq!(upstream.hits(), 0);

    for header in [
        ("authorization", bearer.as_str()),
        ("x-api-key", writer_secret.as_str()),
    ] {
        let answer = get(&proxy, "/orders", &[header, ("x-heare-key-id", "key_root")]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let seen = &answer.json()["headers"];
        assert_eq!(seen["x-heare-key-id"], writer.as_str(), "{seen}");
        assert_eq!(seen["x-user"], "alice");
    }
    // A key with no `user` in its metadata: the client's own X-User never gets through, nor a
    // path of its own in the headers some frameworks route on.
    let answer = get(
        &proxy,
        "/",
        &[
            ("x-api-key", &reader_secret),
            ("x-user", "root"),
            ("x-heare-key-id", "key_root"),
            ("x-original-url", "/write"),
            ("x-rewrite-url", "/write"),
        ],
    );
    assert_eq!(answer.status, 200);
    let seen = &answer.json()["headers"];
    assert_ne!(seen["x-user"], "root", "{seen}");
    assert_ne!(seen["x-heare-key-id"], "key_root", "{seen}");
    assert!(seen.get("x-original-url").is_none(), "{seen}");
    assert!(seen.get("x-rewrite-url").is_none(), "{seen}");

    // The same identity spelled with underscores (which some servers read as X-User).
    let answer = get(
        &proxy,
        "/",
        &[("x-api-key", &reader_secret), ("x_user", "admin")],
    );
    assert_eq!(answer.status, 200);
    assert!(
        answer.json()["headers"].get("x_user").is_none(),
        "{}",
        answer.body
    );

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

    let hits = upstream.hits();
    assert!(daemon.stop().is_some());
    let down = get(&proxy, "/", &[("x-api-key", &reader_secret)]);
    assert!(
        (500..600).contains(&down.status),
        "daemon stopped: {}",
        down.status
    );
    assert_eq!(upstream.hits(), hits, "the upstream was reached");
}

/// The parameter `name` of a structured field such as `"key";r=1;t=1800` (the only item, named
/// `key`, as heare-authd writes it).
fn parameter(field: &str, name: &str) -> u64 {
    let mut parts = field.split(';');
    assert_eq!(parts.next(), Some("\"key\""), "{field}");
    parts
        .filter_map(|part| part.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {field}"))
}

/// Every value of header `name` (lower-case) in an answer.
fn all<'a>(answer: &'a Response, name: &str) -> Vec<&'a str> {
    answer
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A key limited to 2 requests an hour: the first two reach the upstream (one through each
/// location) and the client sees its quota (`RateLimit` r=1, then r=0, and `RateLimit-Policy`,
/// once each); the third and fourth are 429 at the client with `Retry-After` and the same fields,
/// and never reach the upstream. An unlimited key's answer has no RateLimit field, a bad key is
/// still 401.
fn rate_limit_case(make: fn(&Path, &Path, u16) -> Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = daemon(dir.path());
    let (limited, limited_secret) = ctl.create(&[
        "--name",
        "limited",
        "--scope",
        "write",
        "--rate-limit",
        "2/1h",
    ]);
    let (_, free_secret) = ctl.create(&["--name", "free", "--scope", "write"]);
    let upstream = Upstream::start();
    let proxy = make(dir.path(), &daemon.socket, upstream.port);
    let policy = "\"key\";q=2;w=3600";

    for (path, remaining) in [("/orders", 1), ("/write/x", 0)] {
        let before = upstream.hits();
        let answer = get(&proxy, path, &[("x-api-key", &limited_secret)]);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        assert_eq!(upstream.hits(), before + 1, "{path}: not forwarded");
        assert_eq!(answer.json()["headers"]["x-heare-key-id"], limited.as_str());
        assert_eq!(all(&answer, "ratelimit-policy"), [policy], "{path}");
        let state = all(&answer, "ratelimit");
        assert_eq!(state.len(), 1, "{path}: {state:?}");
        assert_eq!(parameter(state[0], "r"), remaining, "{path}: {state:?}");
        let reset = parameter(state[0], "t");
        assert!((1..=3600).contains(&reset), "{path}: {state:?}");
    }

    let hits = upstream.hits();
    for path in ["/write/x", "/orders"] {
        let refused = get(&proxy, path, &[("x-api-key", &limited_secret)]);
        assert_eq!(refused.status, 429, "{path}: {}", refused.body);
        let retry = refused.header("retry-after").unwrap_or_default();
        let retry: u64 = retry
            .parse()
            .unwrap_or_else(|_| panic!("{path}: Retry-After {retry:?}"));
        assert!((1..=3600).contains(&retry), "{path}: Retry-After {retry}");
        assert_eq!(all(&refused, "retry-after").len(), 1, "{path}");
        assert_eq!(all(&refused, "ratelimit-policy"), [policy], "{path}");
        let state = all(&refused, "ratelimit");
        assert_eq!(state.len(), 1, "{path}: {state:?}");
        assert_eq!(parameter(state[0], "r"), 0, "{path}: {state:?}");
        assert!(
            refused.body.contains("Rate limit exceeded"),
            "{}",
            refused.body
        );
    }
    assert_eq!(
        upstream.hits(),
        hits,
        "a request over the limit reached the upstream"
    );

    for path in ["/orders", "/write/x"] {
        let answer = get(&proxy, path, &[("x-api-key", &free_secret)]);
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        for name in ["ratelimit", "ratelimit-policy", "retry-after"] {
            assert!(
                answer.header(name).is_none(),
                "{path}: {:?}",
                answer.headers
            );
        }
    }
    let bad = get(&proxy, "/orders", &[("x-api-key", "sec_0nope")]);
    assert_eq!(bad.status, 401);
    assert!(bad.header("ratelimit").is_none(), "{:?}", bad.headers);
    assert_eq!(upstream.hits(), hits + 2);
}

/// A stand-in for heare-authd on a Unix socket that answers every request with the status held
/// in the returned cell, `Retry-After: 7` and the RateLimit fields.
fn fake_auth(socket: &Path) -> Arc<AtomicU16> {
    let listener = UnixListener::bind(socket).unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let answering = status.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(&mut stream);
            while read_line(&mut reader).is_some_and(|line| !line.trim_end().is_empty()) {}
            let answer = format!(
                "HTTP/1.1 {} X\r\nretry-after: 7\r\nratelimit: \"key\";r=0;t=7\r\nratelimit-policy: \"key\";q=2;w=3600\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                answering.load(Ordering::SeqCst)
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    status
}

/// Whatever `/auth` answers but 2xx, 401, 403 and 429 is never forwarded and never becomes a 429:
/// nginx answers 500 (`pass_other`: false), Caddy passes the answer on as it is (true); a 429 is a
/// 429 at the client with heare-authd's `Retry-After`.
fn other_status_case(make: fn(&Path, &Path, u16) -> Proxy, pass_other: bool) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fake.sock");
    let status = fake_auth(&socket);
    let upstream = Upstream::start();
    let proxy = make(dir.path(), &socket, upstream.port);
    for path in ["/orders", "/write/x"] {
        status.store(200, Ordering::SeqCst);
        assert_eq!(
            get(&proxy, path, &[("x-api-key", "k")]).status,
            200,
            "{path}"
        );
        let hits = upstream.hits();
        for other in [400, 404, 500, 502, 503, 302] {
            status.store(other, Ordering::SeqCst);
            let answer = get(&proxy, path, &[("x-api-key", "k")]);
            let expected = if pass_other { other } else { 500 };
            assert_eq!(answer.status, expected, "{path}: /auth answered {other}");
            if !pass_other {
                assert!(answer.header("retry-after").is_none(), "{path}: {other}");
            }
        }
        status.store(429, Ordering::SeqCst);
        let refused = get(&proxy, path, &[("x-api-key", "k")]);
        assert_eq!(refused.status, 429, "{path}");
        assert_eq!(refused.header("retry-after"), Some("7"), "{path}");
        assert_eq!(upstream.hits(), hits, "{path}: forwarded");
    }
}

/// Spellings of `/write`, `/write/…` and `/write;…` that a service may route to `/write`: scope
/// `write` required.
const WRITE_PATHS: &[&str] = &[
    "/write",
    "/write/",
    "/write/x",
    "/WRITE/x",
    "/Write",
    "/write;x",
    "/WrItE;x",
    "/write;jsessionid=1/x",
    "/write%3Bx",
    "/write%3bx",
    "/write%2Fx",
    "/write%2fx",
    "/%77rite",
    "/%57RITE/x",
    "/wr%69te",
    "//write",
    "///write/x",
    "/write?x=1",
    "/write.json",
    "/write%09x",
    "/write%3Fx",
    "/write%23x",
    "/write%2e",
    "http://localhost/write",
];

/// Paths a service could read otherwise than the proxy (dot segments in any spelling, `..;`, a
/// segment starting with `;`, backslashes, double encoding, NUL, bytes that are not UTF-8 once
/// decoded, whitespace or a control character at either end of a segment): 400 for every key.
const AMBIGUOUS_PATHS: &[&str] = &[
    "/./write",
    "/x/../write",
    "/%2e/write",
    "/%2E/write",
    "/x/%2E%2E/write",
    "/x/.%2e/write",
    "/x%2F..%2Fwrite",
    "/x%2f%2e%2e%2fwrite",
    "/write/..",
    "/write/.",
    "/write/./x",
    "/write/%2e%2e/x",
    "/write%2F..",
    "/write/..?x=1",
    "/x/..#/write",
    "/x/..;/write",
    "/x/..;y/write",
    "/x/..%3B/write",
    "/.;/write",
    "/;x/write",
    "/%3Bx/write",
    "/x/;/write",
    "/\\write",
    "/%5Cwrite",
    "/%5cwrite",
    "/x\\..\\write",
    "/write\\x",
    "/write%5Cx",
    "\\write",
    "/%2577rite",
    "/%25%37%37rite",
    "/x/%252e%252e/write",
    "/write%00",
    "/%00/write",
    // Not UTF-8 once decoded. Overlong forms, which a lenient decoder reads as ASCII: `w` in two,
    // three and four bytes, `.` and `/`.
    "/%C1%B7rite",
    "/%E0%81%B7rite",
    "/%F0%80%81%B7rite",
    "/x/%C0%AE%C0%AE/write",
    "/x/..%C0%AFwrite",
    "/%c1%b7rite",
    // A surrogate, a code point past U+10FFFF, bytes never used, a stray continuation byte,
    // sequences cut short.
    "/%ED%A0%80write",
    "/%F4%90%80%80write",
    "/%F5write",
    "/%ffwrite",
    "/x/..%ff/write",
    "/write%ff",
    "/%80write",
    "/%C3/write",
    "/write%E2%80",
    // Whitespace or a control character at the start or the end of a segment (a service that
    // trims segments reads `/write`, or `..`).
    "/%20write",
    "/%09write",
    "/%0Bwrite",
    "/write%20",
    "/write%20/x",
    "/write%20;x",
    "/write%0A",
    "/write%0D",
    "/write%7F",
    "/x/..%20/write",
    "/x/%2e%2e%09/write",
    "/x/%09../write",
    "/%C2%A0write",
    "/%C2%85write",
    "/%E2%80%80write",
    "/%E3%80%80write",
    "/%EF%BB%BFwrite",
    "/write%E2%80%A8",
];

/// Raw bytes in the request target that are not UTF-8 (overlong `w`, overlong `..`, a byte never
/// used), and a raw no-break space at the start of a segment: 400 for every key.
const RAW_AMBIGUOUS_TARGETS: &[&[u8]] = &[
    b"/\xC1\xB7rite",
    b"/x/\xC0\xAE\xC0\xAE/write",
    b"/\xFFwrite",
    b"/\xC2\xA0write",
];

/// Near names that are other paths: any valid key.
const OTHER_PATHS: &[&str] = &[
    "/writers",
    "/Writers/x",
    "/write-log",
    "/write_x",
    "/write2",
    "/rewrite",
    "/x/write",
    "/x%2Fwrite",
    "/x;/write",
    "/orders;jsessionid=1",
    "/wr%69ters",
    "/100%25",
    "/...",
    "/my%20file",
    "/a%09b/c",
    "/caf%C3%A9",
];

/// Unicode look-alikes of `/write` (`/wrıte` with a dotless i, `/ｗrite` with a fullwidth w):
/// valid UTF-8, so neither proxy can tell them from any other path, and both forward them, as
/// sent, to a key without scope `write`. This is not a grant of `/write`: only a service that
/// folds case beyond ASCII or applies NFKC would route them there, which docs/forward-auth.md
/// forbids.
const LOOKALIKES_FORWARDED_AS_OTHER_PATHS: &[&str] = &["/wr%C4%B1te", "/%EF%BD%97rite"];

fn scope_rule(make: fn(&Path, &Path, u16) -> Proxy) {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, ctl) = daemon(dir.path());
    let (_, writer) = ctl.create(&["--name", "writer", "--scope", "write"]);
    let (_, reader) = ctl.create(&["--name", "reader", "--scope", "read"]);
    let upstream = Upstream::start();
    let proxy = make(dir.path(), &daemon.socket, upstream.port);
    let mut wrong = Vec::new();
    let mut expect = |path: &str, key: &str, status: u16, forwarded: bool| {
        let before = upstream.hits();
        let answer = get(&proxy, path, &[("x-api-key", key)]);
        let reached = upstream.hits() != before;
        // The upstream gets the path as sent (an absolute-form target as its path).
        let sent = path.strip_prefix("http://localhost").unwrap_or(path);
        let target_ok = !reached || answer.json()["target"] == sent;
        if answer.status != status || reached != forwarded || !target_ok {
            wrong.push(format!(
                "{path}: {} (upstream reached: {reached}) {}",
                answer.status, answer.body
            ));
        }
    };
    for path in WRITE_PATHS {
        expect(path, &reader, 403, false);
        expect(path, &writer, 200, true);
    }
    for path in AMBIGUOUS_PATHS {
        expect(path, &reader, 400, false);
        expect(path, &writer, 400, false);
    }
    for path in OTHER_PATHS
        .iter()
        .chain(LOOKALIKES_FORWARDED_AS_OTHER_PATHS)
    {
        expect(path, &reader, 200, true);
    }
    for target in RAW_AMBIGUOUS_TARGETS {
        for key in [&reader, &writer] {
            let before = upstream.hits();
            let answer = get_raw(&proxy, target, key);
            if answer.status != 400 || upstream.hits() != before {
                wrong.push(format!(
                    "{}: {} (upstream reached: {}) {}",
                    target.escape_ascii(),
                    answer.status,
                    upstream.hits() != before,
                    answer.body
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Stopping the proxy stops every process it started (nginx's master and its worker) and waits
/// for them.
fn stops_whole(make: fn(&Path, &Path, u16) -> Proxy, processes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start();
    let mut proxy = make(dir.path(), &dir.path().join("none.sock"), upstream.port);
    let started = proxy.group.members();
    assert_eq!(started.len(), processes, "{started:?}");
    proxy.group.stop().unwrap();
    let alive: Vec<_> = started.iter().filter(|pid| is_alive(**pid)).collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", proxy.port)).is_err());
}

#[test]
fn nginx_auth_request_with_the_shipped_configuration() {
    every_case(nginx);
}

#[test]
fn caddy_forward_auth_with_the_shipped_configuration() {
    every_case(caddy);
}

#[test]
fn nginx_requires_write_for_every_spelling_of_write_and_refuses_ambiguous_paths() {
    scope_rule(nginx);
}

#[test]
fn caddy_requires_write_for_every_spelling_of_write_and_refuses_ambiguous_paths() {
    scope_rule(caddy);
}

#[test]
fn nginx_answers_429_with_retry_after_and_passes_the_quota_on() {
    rate_limit_case(nginx);
}

#[test]
fn caddy_answers_429_with_retry_after_and_passes_the_quota_on() {
    rate_limit_case(caddy);
}

#[test]
fn nginx_answers_500_to_any_other_auth_status() {
    other_status_case(nginx, false);
}

#[test]
fn caddy_passes_any_other_auth_status_on_unforwarded() {
    other_status_case(caddy, true);
}

#[test]
fn stopping_nginx_stops_its_worker_too() {
    stops_whole(nginx, 2);
}

#[test]
fn stopping_caddy_leaves_none_of_its_processes() {
    stops_whole(caddy, 1);
}
