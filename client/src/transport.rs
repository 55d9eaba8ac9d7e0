//! HTTP/1.1 over a Unix socket or TCP, std only: one kept-alive connection, requests written
//! whole, answers framed by `Content-Length` (as the daemon always sends them).
//!
//! [`call`] is the one-shot form (`Connection: close`); [`Connection`] keeps the stream for many
//! requests and reconnects once when a kept-alive stream turns out to be closed (the daemon closes
//! idle connections). Errors are typed by what the caller should do.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket file does not exist.
    #[error("socket {0} not found: is heare-authd running? (systemctl status heare-authd)")]
    NoSocket(PathBuf),
    #[error(
        "permission denied on socket {0}: add this user to the socket's group (usually heare-auth)"
    )]
    /// The socket exists but may not be opened by this user.
    PermissionDenied(PathBuf),
    /// Nothing accepts connections there.
    #[error("nothing accepts connections on {0}: heare-authd is not running")]
    Refused(String),
    /// No answer within the timeout.
    #[error("heare-authd did not answer within {0:?}")]
    Timeout(Duration),
    /// Another I/O failure.
    #[error("talking to heare-authd failed: {0}")]
    Io(io::Error),
    /// The peer's answer is not HTTP/1.x framed by Content-Length.
    #[error("heare-authd sent something that is not an HTTP answer")]
    Protocol,
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body (JSON from heare-authd).
    pub body: Vec<u8>,
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The daemon's Unix socket.
    Unix(PathBuf),
    /// `host:port` of the optional TCP listener.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "http://{address}"),
        }
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// A kept-alive connection to the daemon.
pub struct Connection {
    endpoint: Endpoint,
    timeout: Duration,
    user_agent: String,
    stream: Option<BufReader<Stream>>,
}

impl Connection {
    /// A connection to `endpoint`; nothing is opened until the first request.
    pub fn new(endpoint: Endpoint, timeout: Duration, user_agent: String) -> Self {
        Connection {
            endpoint,
            timeout,
            user_agent,
            stream: None,
        }
    }

    /// Where this connection goes.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and reads its answer, reconnecting once if a kept-alive stream was
    /// closed by the daemon in the meantime.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, TransportError> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, headers, body) {
            Err(TransportError::Io(_)) | Err(TransportError::Protocol) if reused => {
                self.stream = None;
                self.try_request(method, path, headers, body)
            }
            other => other,
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, TransportError> {
        if self.stream.is_none() {
            self.stream = Some(BufReader::new(self.connect()?));
        }
        let timeout = self.timeout;
        let result = (|| {
            let Some(reader) = self.stream.as_mut() else {
                return Err(TransportError::Protocol);
            };
            let mut head = format!(
                "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {}\r\nContent-Length: {}\r\n",
                self.user_agent,
                body.len()
            );
            for (name, value) in headers {
                head.push_str(name);
                head.push_str(": ");
                head.push_str(value);
                head.push_str("\r\n");
            }
            head.push_str("\r\n");
            let mut message = zeroize::Zeroizing::new(head.into_bytes());
            message.extend_from_slice(body);
            let stream = reader.get_mut();
            stream
                .write_all(&message)
                .map_err(|e| io_error(e, timeout))?;
            read_answer(reader, timeout)
        })();
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn connect(&self) -> Result<Stream, TransportError> {
        let stream = match &self.endpoint {
            Endpoint::Unix(path) => {
                UnixStream::connect(path)
                    .map(Stream::Unix)
                    .map_err(|error| match error.kind() {
                        io::ErrorKind::NotFound => TransportError::NoSocket(path.clone()),
                        io::ErrorKind::PermissionDenied => {
                            TransportError::PermissionDenied(path.clone())
                        }
                        io::ErrorKind::ConnectionRefused => {
                            TransportError::Refused(path.display().to_string())
                        }
                        _ => TransportError::Io(error),
                    })?
            }
            Endpoint::Tcp(address) => {
                let addresses: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())
                    .map_err(TransportError::Io)?
                    .collect();
                let mut last = None;
                let mut connected = None;
                for candidate in addresses {
                    match TcpStream::connect_timeout(&candidate, self.timeout) {
                        Ok(stream) => {
                            connected = Some(stream);
                            break;
                        }
                        Err(error) => last = Some(error),
                    }
                }
                match connected {
                    Some(stream) => {
                        let _ = stream.set_nodelay(true);
                        Stream::Tcp(stream)
                    }
                    None => {
                        return Err(match last {
                            Some(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                                TransportError::Refused(address.clone())
                            }
                            Some(error) => io_error(error, self.timeout),
                            None => TransportError::Refused(address.clone()),
                        });
                    }
                }
            }
        };
        let (read, write) = (Some(self.timeout), Some(self.timeout));
        match &stream {
            Stream::Unix(s) => s
                .set_read_timeout(read)
                .and_then(|()| s.set_write_timeout(write)),
            Stream::Tcp(s) => s
                .set_read_timeout(read)
                .and_then(|()| s.set_write_timeout(write)),
        }
        .map_err(TransportError::Io)?;
        Ok(stream)
    }
}

fn io_error(error: io::Error, timeout: Duration) -> TransportError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::Timeout(timeout),
        _ => TransportError::Io(error),
    }
}

/// Reads one answer: status line, headers, `Content-Length` bytes of body.
fn read_answer(
    reader: &mut BufReader<Stream>,
    timeout: Duration,
) -> Result<Answer, TransportError> {
    let mut line = String::new();
    let read = reader
        .read_line(&mut line)
        .map_err(|e| io_error(e, timeout))?;
    if read == 0 {
        return Err(TransportError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    let mut parts = line.split(' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(TransportError::Protocol);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(TransportError::Protocol)?;
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|e| io_error(e, timeout))?;
        if read == 0 {
            return Err(TransportError::Protocol);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if line.len() > 8192 {
            return Err(TransportError::Protocol);
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse().map_err(|_| TransportError::Protocol)?);
        }
    }
    let length = length.ok_or(TransportError::Protocol)?;
    if length > 16 * 1024 * 1024 {
        return Err(TransportError::Protocol);
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| io_error(e, timeout))?;
    Ok(Answer { status, body })
}

/// One request on a fresh connection.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, TransportError> {
    let mut connection = Connection::new(
        Endpoint::Unix(socket.to_path_buf()),
        timeout,
        concat!("heare-auth-client/", env!("CARGO_PKG_VERSION")).to_string(),
    );
    connection.request(method, path, &[("Content-Type", "application/json")], body)
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
    fn keep_alive_answers_are_framed_by_content_length() {
        let dir = std::env::temp_dir().join(format!("heare-client-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            for n in 0..2 {
                let mut line = String::new();
                loop {
                    line.clear();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                }
                let body = format!("{{\"n\":{n}}}");
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let mut connection = Connection::new(
            Endpoint::Unix(path.clone()),
            Duration::from_secs(5),
            "t".into(),
        );
        assert_eq!(
            connection.request("GET", "/a", &[], b"").unwrap().body,
            b"{\"n\":0}"
        );
        assert_eq!(
            connection.request("GET", "/b", &[], b"").unwrap().body,
            b"{\"n\":1}"
        );
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
