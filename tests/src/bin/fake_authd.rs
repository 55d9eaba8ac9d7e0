//! `fake-authd SOCKET BODY`: a stand-in for heare-authd that says whatever the test wants.
//!
//! It binds SOCKET (mode 0666, so a client of any uid may connect) — or, given `tcp:IP:PORT`,
//! that TCP address — answers every request with `200` and BODY (JSON), keeps connections alive
//! unless the client asks to close (`Connection: close`), and writes one stdout line per event:
//! `listening`, `accept N`, `request N METHOD PATH`, `closed N`. It never prints what a client
//! sent in a body (that is a secret). The tests use it as the attacker's server: which clients
//! reach it, and which refuse it (by its uid, when run with setpriv, or by its answer); on TCP,
//! a local user holding the daemon's port.

use anyhow::Context;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, body] = args.as_slice() else {
        anyhow::bail!("usage: fake-authd SOCKET|tcp:IP:PORT BODY");
    };
    if let Some(address) = socket.strip_prefix("tcp:") {
        let listener = TcpListener::bind(address).with_context(|| format!("bind {address}"))?;
        println!("listening");
        accept_loop(listener.incoming(), body, |s| s.try_clone());
        return Ok(());
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).with_context(|| format!("bind {socket}"))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    println!("listening");
    accept_loop(listener.incoming(), body, |s| s.try_clone());
    Ok(())
}

/// Serves every connection on a thread of its own.
fn accept_loop<S: Read + Write + Send + 'static>(
    incoming: impl Iterator<Item = std::io::Result<S>>,
    body: &str,
    clone: fn(&S) -> std::io::Result<S>,
) {
    for (index, stream) in incoming.enumerate() {
        let Ok(stream) = stream else { continue };
        let n = index + 1;
        println!("accept {n}");
        let body = body.to_string();
        std::thread::spawn(move || {
            if let Ok(writer) = clone(&stream) {
                let _ = serve(n, stream, writer, &body);
            }
            println!("closed {n}");
        });
    }
}

/// Answers each request on one connection until the client closes it.
fn serve(n: usize, stream: impl Read, mut writer: impl Write, body: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let (method, path) = (words.next().unwrap_or("-"), words.next().unwrap_or("-"));
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("connection")
            {
                close = value.trim().eq_ignore_ascii_case("close");
            }
        }
        let mut request_body = vec![0u8; length.min(65536)];
        reader.read_exact(&mut request_body)?;
        println!("request {n} {method} {path}");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        if close {
            return Ok(());
        }
    }
}
