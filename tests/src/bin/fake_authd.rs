//! `fake-authd SOCKET BODY`: a stand-in for heare-authd that says whatever the test wants.
//!
//! It binds SOCKET (mode 0666, so a client of any uid may connect), answers every request with
//! `200` and BODY (JSON), keeps connections alive, and writes one stdout line per event:
//! `listening`, `accept N`, `request N METHOD PATH`, `closed N`. It never prints what a client
//! sent in a body (that is a secret). The tests use it as the attacker's server: which clients
//! reach it, and which refuse it (by its uid, when run with setpriv, or by its answer).

use anyhow::Context;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, body] = args.as_slice() else {
        anyhow::bail!("usage: fake-authd SOCKET BODY");
    };
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).with_context(|| format!("bind {socket}"))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    println!("listening");
    for (index, stream) in listener.incoming().enumerate() {
        let Ok(stream) = stream else { continue };
        let n = index + 1;
        println!("accept {n}");
        let body = body.clone();
        std::thread::spawn(move || {
            let _ = serve(n, stream, &body);
            println!("closed {n}");
        });
    }
    Ok(())
}

/// Answers each request on one connection until the client closes it.
fn serve(n: usize, stream: UnixStream, body: &str) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut words = line.split_whitespace();
        let (method, path) = (words.next().unwrap_or("-"), words.next().unwrap_or("-"));
        let mut length = 0usize;
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
        }
        let mut request_body = vec![0u8; length.min(65536)];
        reader.read_exact(&mut request_body)?;
        println!("request {n} {method} {path}");
        write!(
            writer,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
}
