//! One blocking HTTP/1.1 exchange with the daemon over its Unix socket, std only.
//!
//! Errors are typed by what the caller should do: the socket is missing (is the daemon
//! running?), permission is denied (join the socket's group), the connection was refused (stale
//! socket), the daemon was too slow, or it answered something that is not HTTP.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("socket {0} not found: is heare-authd running? (systemctl status heare-authd)")]
    NoSocket(PathBuf),
    #[error(
        "permission denied on socket {0}: add this user to the socket's group (usually heare-auth)"
    )]
    PermissionDenied(PathBuf),
    #[error("nothing accepts connections on socket {0}: heare-authd is not running")]
    Refused(PathBuf),
    #[error("heare-authd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("talking to heare-authd failed: {0}")]
    Io(io::Error),
    #[error("heare-authd sent something that is not an HTTP answer")]
    Protocol,
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request with `Connection: close` and reads the whole answer.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, TransportError> {
    let mut stream = UnixStream::connect(socket).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => TransportError::NoSocket(socket.to_path_buf()),
        io::ErrorKind::PermissionDenied => TransportError::PermissionDenied(socket.to_path_buf()),
        io::ErrorKind::ConnectionRefused => TransportError::Refused(socket.to_path_buf()),
        _ => TransportError::Io(error),
    })?;
    let timed_out = |error: io::Error| match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::Timeout(timeout),
        _ => TransportError::Io(error),
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(TransportError::Io)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(TransportError::Io)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: heare-auth-client/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(timed_out)?;
    stream.write_all(body).map_err(timed_out)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(timed_out)?;
    parse_answer(&raw).ok_or(TransportError::Protocol)
}

fn parse_answer(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status_line = head.lines().next()?;
    if !status_line.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: raw[split + 4..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_names_the_path() {
        let error = call(
            Path::new("/nonexistent/x.sock"),
            "GET",
            "/health",
            b"",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(error, TransportError::NoSocket(_)));
        assert!(error.to_string().contains("/nonexistent/x.sock"));
    }

    #[test]
    fn parses_status_and_body() {
        let answer = parse_answer(b"HTTP/1.1 403 Forbidden\r\nA: b\r\n\r\n{\"x\":1}").unwrap();
        assert_eq!(answer.status, 403);
        assert_eq!(answer.body, b"{\"x\":1}");
        assert!(parse_answer(b"garbage").is_none());
    }
}
