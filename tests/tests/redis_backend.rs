//! The real `redis-server` of the fleet-wide rate-limit tests (`heare_auth_tests::redis_server`),
//! checked by speaking RESP to it: it answers on its port and its Unix socket, with a password
//! when given one (never on its command line), over TLS with the throwaway CA; `stop` kills it (a
//! crash: the port refuses, the process is gone), `start_again` brings it back on the same port
//! with no data, `pause` leaves connections open with no answer until `resume`, and dropping it
//! leaves no process behind.
//!
//! heare-authd's Redis client is tested against this same server in `redis_limiter.rs`; the
//! daemons themselves in `rate_limits_fleet.rs`.

use heare_auth_tests::process::is_alive;
use heare_auth_tests::redis_server::{RedisOptions, RedisServer};
use heare_auth_tests::skipped;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

/// The server, or `None` (the skip recorded) when redis-server is not installed.
fn server(options: RedisOptions) -> Option<RedisServer> {
    if !RedisServer::available() {
        skipped!(
            "redis-server is not installed (Debian package redis-server; tests/run installs it)"
        );
        return None;
    }
    Some(RedisServer::start_with(options).expect("redis-server starts"))
}

/// Sends one command and reads its reply: a status or error line, or a bulk string's contents
/// (`$-1` for none).
fn command(stream: &mut (impl Read + Write), args: &[&str]) -> std::io::Result<String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "the connection is closed",
        ));
    }
    let line = line.trim_end().to_string();
    match line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        Some(length) => {
            let mut bulk = vec![0; length + 2];
            reader.read_exact(&mut bulk)?;
            bulk.truncate(length);
            Ok(String::from_utf8_lossy(&bulk).into_owned())
        }
        None => Ok(line),
    }
}

fn tcp(redis: &RedisServer) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", redis.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

#[test]
fn answers_on_its_port_and_its_socket_and_comes_back_on_the_same_port_with_no_data() {
    let Some(mut redis) = server(RedisOptions::default()) else {
        return;
    };
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(
        redis.unix_url(),
        format!("unix://{}", redis.socket_path().display())
    );
    let mut over_tcp = tcp(&redis);
    assert_eq!(command(&mut over_tcp, &["PING"]).unwrap(), "+PONG");
    assert_eq!(command(&mut over_tcp, &["SET", "k", "v"]).unwrap(), "+OK");
    let mut over_unix = UnixStream::connect(redis.socket_path()).expect("the socket");
    assert_eq!(command(&mut over_unix, &["GET", "k"]).unwrap(), "v");

    let pid = redis.pid().expect("running") as i32;
    redis.stop();
    assert!(!is_alive(pid), "stop kills and reaps it");
    assert!(redis.pid().is_none());
    let refused = TcpStream::connect(("127.0.0.1", redis.port()));
    assert!(refused.is_err(), "nothing listens after stop");
    assert!(
        command(&mut over_tcp, &["PING"]).is_err(),
        "the old connection is gone"
    );

    redis.start_again().expect("starts again");
    let mut again = tcp(&redis);
    assert_eq!(command(&mut again, &["PING"]).unwrap(), "+PONG");
    assert_eq!(
        command(&mut again, &["GET", "k"]).unwrap(),
        "$-1",
        "no data kept"
    );
    assert_ne!(redis.pid(), Some(pid as u32));
}

#[test]
fn a_password_is_required_and_never_on_the_command_line() {
    let password = "harness-Pw-81";
    let Some(redis) = server(RedisOptions {
        password: Some(password.into()),
        ..RedisOptions::default()
    }) else {
        return;
    };
    let mut stream = tcp(&redis);
    assert!(
        command(&mut stream, &["PING"])
            .unwrap()
            .starts_with("-NOAUTH"),
        "no command without AUTH"
    );
    assert!(
        command(&mut stream, &["AUTH", "wrong"])
            .unwrap()
            .starts_with("-WRONGPASS")
    );
    assert_eq!(command(&mut stream, &["AUTH", password]).unwrap(), "+OK");
    assert_eq!(command(&mut stream, &["PING"]).unwrap(), "+PONG");
    let pid = redis.pid().expect("running");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(password),
        "the password is in a file, not in ps"
    );
}

#[test]
fn pause_leaves_connections_without_an_answer_until_resume() {
    let Some(mut redis) = server(RedisOptions::default()) else {
        return;
    };
    let mut stream = tcp(&redis);
    assert_eq!(command(&mut stream, &["PING"]).unwrap(), "+PONG");
    redis.pause();
    let pid = redis.pid().expect("running");
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = state.rsplit_once(')').unwrap().1.split_whitespace().next();
    assert_eq!(state, Some("T"), "stopped");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let unanswered = command(&mut stream, &["PING"]).unwrap_err();
    assert!(
        matches!(
            unanswered.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut
        ),
        "{unanswered}"
    );
    redis.resume();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // The PING sent while it was stopped is answered now.
    let mut line = String::new();
    BufReader::new(&mut stream).read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "+PONG");
    assert_eq!(command(&mut stream, &["PING"]).unwrap(), "+PONG");
}

#[test]
fn tls_with_the_throwaway_ca() {
    if !RedisServer::tls_available() {
        skipped!("the openssl command is missing (Debian package openssl), so no certificates");
        return;
    }
    let Some(redis) = server(RedisOptions {
        tls: true,
        ..RedisOptions::default()
    }) else {
        return;
    };
    let url = redis.tls_url().expect("a TLS port");
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let pem = std::fs::read(redis.ca_file().expect("a CA")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        let certificate: rustls::pki_types::CertificateDer = certificate.unwrap();
        roots.add(certificate).unwrap();
    }
    let connect = |roots: rustls::RootCertStore| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        rustls::StreamOwned::new(connection, socket)
    };
    let mut trusted = connect(roots);
    assert_eq!(command(&mut trusted, &["PING"]).unwrap(), "+PONG");
    let mut untrusted = connect(rustls::RootCertStore::empty());
    let refused = command(&mut untrusted, &["PING"]).unwrap_err();
    assert!(refused.to_string().contains("certificate"), "{refused}");
    // The plain port still answers in the clear.
    assert_eq!(command(&mut tcp(&redis), &["PING"]).unwrap(), "+PONG");
}

#[test]
fn dropping_it_leaves_no_process() {
    let Some(mut redis) = server(RedisOptions::default()) else {
        return;
    };
    let pid = redis.pid().expect("running") as i32;
    assert!(is_alive(pid));
    // Even a stopped (SIGSTOP) server goes.
    redis.pause();
    drop(redis);
    assert!(!is_alive(pid), "killed and reaped");
}
