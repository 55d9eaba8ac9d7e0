//! HTTP/1.1 over a Unix socket or TCP, std only: one kept-alive connection, requests written
//! whole, answers framed by `Content-Length` (as the daemon always sends them).
//!
//! [`call`] is the one-shot form (`Connection: close`); [`Connection`] keeps the stream for many
//! requests and reconnects once when a kept-alive stream turns out to be closed (the daemon closes
//! idle connections). Errors are typed by what the caller should do.
//!
//! One deadline per request bounds everything: connecting (a Unix socket is connected with
//! `SO_SNDTIMEO` set beforehand, which bounds the kernel's wait on a full listen backlog; TCP with
//! `connect_timeout`), then each write and each read gets only the time that is left, so a server
//! that never accepts, never reads or trickles its answer cannot hold the caller past the timeout.
//! (Resolving a TCP host name is not bounded: give an IP address.) On a Unix socket the server's
//! uid can be checked (`SO_PEERCRED`) right after connecting, before anything is sent. Writes on
//! a Unix socket use `MSG_NOSIGNAL`, so a server that hangs up cannot kill a host program that
//! did not ignore SIGPIPE (a C program, a PAM application).

use nix::sys::socket::{MsgFlags, getsockopt, send, sockopt::PeerCredentials};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket file does not exist.
    #[error("socket {0} not found: is heare-authd running? (systemctl status heare-authd)")]
    NoSocket(PathBuf),
    #[error(
        "permission denied on socket {0}: add this user to the socket's group (usually heare-auth-clients)"
    )]
    /// The socket exists but may not be opened by this user.
    PermissionDenied(PathBuf),
    /// Nothing accepts connections there.
    #[error("nothing accepts connections on {0}: heare-authd is not running")]
    Refused(String),
    /// No answer within the timeout (connecting included).
    #[error("heare-authd did not answer within {0:?}")]
    Timeout(Duration),
    /// The server is not run by a trusted uid (`None`: its credentials cannot be checked, TCP).
    #[error("the server is not trusted (uid {0:?})")]
    UntrustedServer(Option<u32>),
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

enum Socket {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// A connected socket whose every read and write ends by the current request's deadline.
struct Stream {
    socket: Socket,
    deadline: Instant,
}

/// Time left before `deadline`, at least 1 ms (a zero socket timeout would mean "none"); an
/// error once it has passed.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left.max(Duration::from_millis(1)))
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = Some(time_left(self.deadline)?);
        match &mut self.socket {
            Socket::Unix(s) => s.set_read_timeout(left).and_then(|()| s.read(buf)),
            Socket::Tcp(s) => s.set_read_timeout(left).and_then(|()| s.read(buf)),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = Some(time_left(self.deadline)?);
        match &mut self.socket {
            Socket::Unix(s) => {
                s.set_write_timeout(left)?;
                Ok(send(s.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL)?)
            }
            // std's TcpStream already sends with MSG_NOSIGNAL.
            Socket::Tcp(s) => s.set_write_timeout(left).and_then(|()| s.write(buf)),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A kept-alive connection to the daemon.
pub struct Connection {
    endpoint: Endpoint,
    timeout: Duration,
    user_agent: String,
    server_uids: Option<Vec<u32>>,
    stream: Option<BufReader<Stream>>,
}

impl Connection {
    /// A connection to `endpoint`; nothing is opened until the first request. `timeout` bounds
    /// each request as a whole, connecting included.
    pub fn new(endpoint: Endpoint, timeout: Duration, user_agent: String) -> Self {
        Connection {
            endpoint,
            timeout,
            user_agent,
            server_uids: None,
            stream: None,
        }
    }

    /// Trust only a server whose uid (`SO_PEERCRED`, checked on every new connection before
    /// anything is sent) is one of `uids`; `None` (the default) trusts any. Over TCP, where
    /// there are no peer credentials, `Some` refuses every server.
    pub fn trust_server_uids(mut self, uids: Option<Vec<u32>>) -> Self {
        self.server_uids = uids;
        self
    }

    /// Where this connection goes.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request and reads its answer, reconnecting once if a kept-alive stream was
    /// closed by the daemon in the meantime. The whole of it, retry included, ends by one
    /// deadline: now + the timeout.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, TransportError> {
        let deadline = Instant::now()
            .checked_add(self.timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        let reused = self.stream.is_some();
        match self.try_request(method, path, headers, body, deadline) {
            Err(TransportError::Io(_)) | Err(TransportError::Protocol) if reused => {
                self.stream = None;
                self.try_request(method, path, headers, body, deadline)
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
        deadline: Instant,
    ) -> Result<Answer, TransportError> {
        let reader = match self.stream.take() {
            Some(reader) => reader,
            None => BufReader::new(self.connect(deadline)?),
        };
        let reader = self.stream.insert(reader);
        reader.get_mut().deadline = deadline;
        let message = request_bytes(&self.user_agent, method, path, headers, body);
        let timeout = self.timeout;
        let result = reader
            .get_mut()
            .write_all(&message)
            .map_err(|e| io_error(e, timeout))
            .and_then(|()| read_answer(reader, timeout));
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn connect(&self, deadline: Instant) -> Result<Stream, TransportError> {
        let socket = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = connect_unix(path, deadline, self.timeout)?;
                if let Some(uids) = &self.server_uids {
                    check_server_uid(&stream, uids)?;
                }
                Socket::Unix(stream)
            }
            Endpoint::Tcp(address) => {
                if self.server_uids.is_some() {
                    return Err(TransportError::UntrustedServer(None));
                }
                Socket::Tcp(connect_tcp(address, deadline, self.timeout)?)
            }
        };
        Ok(Stream { socket, deadline })
    }
}

/// The request's head and body, in a buffer zeroed when dropped (the body holds the secret).
fn request_bytes(
    user_agent: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> zeroize::Zeroizing<Vec<u8>> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {user_agent}\r\nContent-Length: {}\r\n",
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
    message
}

/// Connects to a Unix socket by `deadline`: `SO_SNDTIMEO` set before a blocking `connect` bounds
/// the kernel's wait for room in a full listen backlog (the call then fails with `EAGAIN`).
fn connect_unix(
    path: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<UnixStream, TransportError> {
    use socket2::{Domain, SockAddr, Socket as RawSocket, Type};
    let socket = RawSocket::new(Domain::UNIX, Type::STREAM, None).map_err(TransportError::Io)?;
    let left = time_left(deadline).map_err(|e| io_error(e, timeout))?;
    socket
        .set_write_timeout(Some(left))
        .map_err(TransportError::Io)?;
    let address = SockAddr::unix(path).map_err(TransportError::Io)?;
    socket
        .connect(&address)
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => TransportError::NoSocket(path.to_path_buf()),
            io::ErrorKind::PermissionDenied => TransportError::PermissionDenied(path.to_path_buf()),
            io::ErrorKind::ConnectionRefused => TransportError::Refused(path.display().to_string()),
            _ if error.raw_os_error() == Some(libc::EINPROGRESS) => {
                TransportError::Timeout(timeout)
            }
            _ => io_error(error, timeout),
        })?;
    Ok(UnixStream::from(std::os::fd::OwnedFd::from(socket)))
}

/// Connects to `host:port` by `deadline`, trying each address with the time that is left.
fn connect_tcp(
    address: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, TransportError> {
    let candidates =
        std::net::ToSocketAddrs::to_socket_addrs(address).map_err(TransportError::Io)?;
    let mut last = None;
    for candidate in candidates {
        let left = time_left(deadline).map_err(|e| io_error(e, timeout))?;
        match TcpStream::connect_timeout(&candidate, left) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(match last {
        Some(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            TransportError::Refused(address.to_string())
        }
        Some(error) => io_error(error, timeout),
        None => TransportError::Refused(address.to_string()),
    })
}

/// The uid of the process that listens on the other end, which must be one of `uids`.
fn check_server_uid(stream: &UnixStream, uids: &[u32]) -> Result<(), TransportError> {
    let credentials =
        getsockopt(stream, PeerCredentials).map_err(|errno| TransportError::Io(errno.into()))?;
    if uids.contains(&credentials.uid()) {
        Ok(())
    } else {
        Err(TransportError::UntrustedServer(Some(credentials.uid())))
    }
}

fn io_error(error: io::Error, timeout: Duration) -> TransportError {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::Timeout(timeout),
        _ => TransportError::Io(error),
    }
}

/// The longest status or header line read, and the most header lines, in an answer.
const MAX_LINE: u64 = 8192;
const MAX_HEADERS: usize = 100;

/// Reads one line of at most [`MAX_LINE`] bytes: a server that never ends a line cannot make
/// the client allocate without bound (only the deadline would stop it).
fn read_line_bounded(
    reader: &mut BufReader<impl Read>,
    line: &mut String,
    timeout: Duration,
) -> Result<usize, TransportError> {
    line.clear();
    let read = reader
        .by_ref()
        .take(MAX_LINE + 1)
        .read_line(line)
        .map_err(|e| io_error(e, timeout))?;
    if read as u64 > MAX_LINE {
        return Err(TransportError::Protocol);
    }
    Ok(read)
}

/// Reads one answer: status line, headers, `Content-Length` bytes of body.
fn read_answer(
    reader: &mut BufReader<impl Read>,
    timeout: Duration,
) -> Result<Answer, TransportError> {
    let mut line = String::new();
    let read = read_line_bounded(reader, &mut line, timeout)?;
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
    for headers in 0.. {
        if headers > MAX_HEADERS || read_line_bounded(reader, &mut line, timeout)? == 0 {
            return Err(TransportError::Protocol);
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
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
    fn connecting_to_a_full_backlog_ends_at_the_deadline() {
        use socket2::{Domain, SockAddr, Socket as RawSocket, Type};
        let dir = std::env::temp_dir().join(format!("heare-client-full-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("full.sock");
        let _ = std::fs::remove_file(&path);
        let address = SockAddr::unix(&path).unwrap();
        let listener = RawSocket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        listener.bind(&address).unwrap();
        listener.listen(0).unwrap();
        let mut queued = Vec::new();
        loop {
            let client = RawSocket::new(Domain::UNIX, Type::STREAM, None).unwrap();
            client.set_nonblocking(true).unwrap();
            match client.connect(&address) {
                Ok(()) => queued.push(client),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let timeout = Duration::from_millis(300);
        let error = call(&path, "GET", "/health", b"", timeout).unwrap_err();
        assert!(
            matches!(error, TransportError::Timeout(t) if t == timeout),
            "{error:?}"
        );
        drop((listener, queued));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn endless_lines_and_headers_are_refused_not_buffered() {
        let timeout = Duration::from_secs(1);
        let endless = [b"HTTP/1.1 200 OK".as_slice(), &[b'x'; 100_000]].concat();
        let mut reader = BufReader::new(endless.as_slice());
        assert!(matches!(
            read_answer(&mut reader, timeout),
            Err(TransportError::Protocol)
        ));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "x-a: b\r\n".repeat(1000));
        let mut reader = BufReader::new(many.as_bytes());
        assert!(matches!(
            read_answer(&mut reader, timeout),
            Err(TransportError::Protocol)
        ));
        let fine = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let mut reader = BufReader::new(fine.as_bytes());
        assert_eq!(read_answer(&mut reader, timeout).unwrap().body, b"{}");
    }

    #[test]
    fn time_left_never_becomes_a_zero_timeout() {
        let soon = Instant::now() + Duration::from_nanos(10);
        match time_left(soon) {
            Ok(left) => assert!(left >= Duration::from_millis(1)),
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::TimedOut),
        }
        let now = Instant::now();
        assert_eq!(time_left(now).unwrap_err().kind(), io::ErrorKind::TimedOut);
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
