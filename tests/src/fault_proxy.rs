//! A small HTTP-aware TCP proxy that injects S3 faults between the daemon and the test S3 server.
//!
//! The daemon is pointed at the proxy (`--s3-endpoint`), the proxy forwards to the real S3 server
//! (s3s or moto) on 127.0.0.1, and the test switches what the proxy does to the *next* request:
//! pass it through, hold it for a while before forwarding (slower than the daemon's S3 timeout),
//! cut the connection without answering, forward only the first N bytes of the answer's body and
//! close (a truncated body), forward N bytes and then go silent with the connection open (a
//! stalled body), or answer a canned S3 error (500/503) without asking S3 at all. The proxy reads
//! each request and answer by their HTTP framing (Content-Length, chunked, or until close), so a
//! fault applies per request even on the SDK's kept-alive connections, and bytes it forwards are
//! exactly the bytes sent: the SigV4 signature still verifies. Plain threads, no async runtime:
//! the proxy must keep working whatever the daemon or the test's runtime is doing.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the proxy does to each request from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward the request and the whole answer.
    Pass,
    /// Hold the request this long, then forward it (the client has usually given up by then).
    Delay(Duration),
    /// Read the request, then close the connection without a byte of answer.
    Cut,
    /// Forward the answer's head (with its original Content-Length) and the first N bytes of its
    /// body, then close the connection.
    Truncate(usize),
    /// Forward the answer's head and the first N bytes of its body, then send nothing more while
    /// keeping the connection open, until the client closes it or the proxy is dropped.
    Stall(usize),
    /// Answer this HTTP status (500, 503, …) with an S3-style XML error; S3 is not contacted.
    Status(u16),
    /// Forward a 200 answer re-framed without Content-Length (`Transfer-Encoding: chunked`, 64 KiB
    /// chunks), as some S3-compatible servers and proxies send it: the size is only known once
    /// the body has been read.
    Chunked,
}

/// A running proxy on `127.0.0.1`; stops (and closes every connection) when dropped.
pub struct FaultProxy {
    address: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
}

struct Inner {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    stopping: AtomicBool,
    requests: AtomicUsize,
    /// Bytes of the answers (heads and bodies) sent to clients so far.
    answered: AtomicUsize,
    /// Client connections, so that `Drop` can unblock their threads.
    clients: Mutex<Vec<TcpStream>>,
}

/// The longest request or answer head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;
/// How long the proxy waits for the S3 server (which is local and should answer at once).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream` (an `http://host:port` endpoint
    /// such as `S3Server::endpoint()`, or `host:port`), in [`Fault::Pass`] mode.
    pub fn start(upstream: &str) -> io::Result<FaultProxy> {
        let authority = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = authority.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upstream {upstream:?} is not host:port: {e}"),
            )
        })?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let address = listener.local_addr()?;
        let inner = Arc::new(Inner {
            upstream,
            fault: Mutex::new(Fault::Pass),
            stopping: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            clients: Mutex::new(Vec::new()),
        });
        let accept = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("fault-proxy-accept".into())
                .spawn(move || accept_loop(listener, inner))?
        };
        Ok(FaultProxy {
            address,
            inner,
            accept: Some(accept),
        })
    }

    /// The proxy's base URL, for `--s3-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Switches the fault applied to every request read from now on.
    pub fn set(&self, fault: Fault) {
        *lock(&self.inner.fault) = fault;
    }

    /// How many requests the proxy has read so far (whatever it did with them).
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// How many bytes of answers (heads and bodies, as S3 sent them) the proxy forwarded whole.
    pub fn answered_bytes(&self) -> usize {
        self.inner.answered.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        for client in lock(&self.inner.clients).drain(..) {
            let _ = client.shutdown(Shutdown::Both);
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    for stream in listener.incoming() {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(copy) = stream.try_clone() {
            lock(&inner.clients).push(copy);
        }
        let inner = inner.clone();
        let _ = std::thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || {
                let _ = serve(stream, &inner);
            });
    }
}

/// One HTTP message read off a stream: head bytes and body bytes, exactly as received.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
}

/// How a message's body ends.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Serves one client connection: request after request, each under the fault current when it
/// arrived.
fn serve(client: TcpStream, inner: &Inner) -> io::Result<()> {
    // An answer goes out as two writes (head, body): without this, Nagle's algorithm holds the
    // body until the client's delayed ACK of the head, 40 ms later.
    client.set_nodelay(true)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    loop {
        let Some(head) = read_head(&mut reader)? else {
            return Ok(());
        };
        let framing = request_framing(&head);
        let body = read_body(&mut reader, framing)?;
        let request = Message { head, body };
        inner.requests.fetch_add(1, Ordering::SeqCst);
        let fault = *lock(&inner.fault);
        match fault {
            Fault::Status(code) => {
                writer.write_all(&canned_error(code))?;
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Fault::Cut => {
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Fault::Delay(delay) => {
                if !sleep_unless_stopping(inner, delay) {
                    return Ok(());
                }
            }
            Fault::Pass | Fault::Truncate(_) | Fault::Stall(_) | Fault::Chunked => {}
        }
        let is_head = request.head.starts_with(b"HEAD ");
        let mut answer = forward(inner.upstream, &request, is_head)?;
        // An answer to HEAD has no body to re-frame: a chunked terminator after it would be read
        // as the start of the next answer on the kept-alive connection.
        if fault == Fault::Chunked && !is_head {
            answer = rechunk(answer);
        }
        writer.write_all(&answer.head)?;
        match fault {
            Fault::Truncate(bytes) => {
                writer.write_all(&answer.body[..bytes.min(answer.body.len())])?;
                writer.flush()?;
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            Fault::Stall(bytes) => {
                writer.write_all(&answer.body[..bytes.min(answer.body.len())])?;
                writer.flush()?;
                hold_until_closed(&mut reader, inner);
                let _ = writer.shutdown(Shutdown::Both);
                return Ok(());
            }
            _ => {
                writer.write_all(&answer.body)?;
                writer.flush()?;
                let bytes = answer.head.len() + answer.body.len();
                inner.answered.fetch_add(bytes, Ordering::SeqCst);
                if header(&answer.head, "connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    let _ = writer.shutdown(Shutdown::Both);
                    return Ok(());
                }
            }
        }
    }
}

/// Sends `request` to S3 on a connection of its own and reads the whole answer.
fn forward(upstream: SocketAddr, request: &Message, is_head: bool) -> io::Result<Message> {
    let mut server = TcpStream::connect_timeout(&upstream, UPSTREAM_TIMEOUT)?;
    server.set_nodelay(true)?;
    server.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
    server.write_all(&request.head)?;
    server.write_all(&request.body)?;
    server.flush()?;
    let mut reader = BufReader::new(server);
    let head = read_head(&mut reader)?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::UnexpectedEof, "S3 closed without answering")
    })?;
    let framing = response_framing(&head, is_head);
    let body = read_body(&mut reader, framing)?;
    Ok(Message { head, body })
}

/// A 200 answer framed by Content-Length, re-framed as chunked with no Content-Length; any other
/// answer as it is.
fn rechunk(answer: Message) -> Message {
    let ok = answer.head.starts_with(b"HTTP/1.1 200") || answer.head.starts_with(b"HTTP/1.0 200");
    if !ok || header(&answer.head, "content-length").is_none() {
        return answer;
    }
    let text = String::from_utf8_lossy(&answer.head);
    let mut head = String::new();
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        let name = line.split(':').next().unwrap_or("").trim();
        if !name.eq_ignore_ascii_case("content-length") {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
    let mut body = Vec::with_capacity(answer.body.len() + 64);
    for chunk in answer.body.chunks(64 * 1024) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    Message {
        head: head.into_bytes(),
        body,
    }
}

/// Keeps a stalled connection open until the client closes it or the proxy stops.
fn hold_until_closed(reader: &mut BufReader<TcpStream>, inner: &Inner) {
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)));
    let mut scratch = [0u8; 1024];
    while !inner.stopping.load(Ordering::SeqCst) {
        match reader.read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Sleeps `delay` in small steps; false if the proxy is stopping.
fn sleep_unless_stopping(inner: &Inner, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    while Instant::now() < until {
        if inner.stopping.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    !inner.stopping.load(Ordering::SeqCst)
}

/// Reads a message head up to and including the blank line; `None` at a clean end of stream.
fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let read = reader.read_until(b'\n', &mut head)?;
        if read == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a message head",
            ));
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message head too long",
            ));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            // A stray blank line before a request line is allowed; skip it.
            if before == 0 {
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
    }
}

/// The value of header `name` (case-insensitive) in a message head.
fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn request_framing(head: &[u8]) -> Framing {
    if header(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Framing::Chunked;
    }
    match header(head, "content-length").and_then(|v| v.parse().ok()) {
        Some(length) => Framing::Length(length),
        None => Framing::None,
    }
}

fn response_framing(head: &[u8], is_head: bool) -> Framing {
    let status: u16 = std::str::from_utf8(head)
        .ok()
        .and_then(|text| text.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    if is_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    if header(head, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        return Framing::Chunked;
    }
    match header(head, "content-length").and_then(|v| v.parse().ok()) {
        Some(length) => Framing::Length(length),
        None => Framing::UntilClose,
    }
}

/// Reads a body as framed, keeping its bytes exactly (chunk sizes and all).
fn read_body(reader: &mut impl BufRead, framing: Framing) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    match framing {
        Framing::None => {}
        Framing::Length(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        Framing::UntilClose => {
            reader.read_to_end(&mut body)?;
        }
        Framing::Chunked => loop {
            let start = body.len();
            if reader.read_until(b'\n', &mut body)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a chunked body",
                ));
            }
            let line = String::from_utf8_lossy(&body[start..]).into_owned();
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text.trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size line"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let at = body.len();
                    if reader.read_until(b'\n', &mut body)? == 0
                        || body[at..].trim_ascii().is_empty()
                    {
                        return Ok(body);
                    }
                }
            }
            let at = body.len();
            body.resize(at + size + 2, 0);
            reader.read_exact(&mut body[at..])?;
        },
    }
    Ok(body)
}

/// An S3-style error answer with `Connection: close`.
fn canned_error(code: u16) -> Vec<u8> {
    let (reason, s3_code, message) = match code {
        500 => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        503 => (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        _ => ("Error", "InternalError", "Injected by the fault proxy."),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3_code}</Code>\
         <Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         x-amz-request-id: fault-proxy\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_chunked_bodies_exactly() {
        let raw = b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nTrailer: t\r\n\r\nNEXT";
        let mut reader = BufReader::new(&raw[..]);
        let body = read_body(&mut reader, Framing::Chunked).unwrap();
        assert_eq!(body, &raw[..raw.len() - 4]);
    }

    #[test]
    fn rechunked_answers_lose_their_length_and_keep_their_body() {
        let answer = Message {
            head: b"HTTP/1.1 200 OK\r\nETag: \"x\"\r\nContent-Length: 5\r\n\r\n".to_vec(),
            body: b"hello".to_vec(),
        };
        let chunked = rechunk(answer);
        assert_eq!(header(&chunked.head, "content-length"), None);
        assert!(matches!(
            response_framing(&chunked.head, false),
            Framing::Chunked
        ));
        assert_eq!(header(&chunked.head, "etag"), Some("\"x\""));
        assert_eq!(chunked.body, b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn finds_headers_case_insensitively() {
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: Close\r\n\r\n";
        assert_eq!(header(head, "content-length"), Some("12"));
        assert_eq!(header(head, "CONNECTION"), Some("Close"));
        assert!(matches!(response_framing(head, false), Framing::Length(12)));
        assert!(matches!(response_framing(head, true), Framing::None));
    }
}
