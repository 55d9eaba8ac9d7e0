//! A deliberately small HTTP/1.1 client over a Unix socket or TCP: one request per connection
//! (`Connection: close`), the raw status and body back. Tests use it instead of a library so that
//! what they check is exactly what goes over the socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// An answer: status code, headers (lower-cased names) and body text.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The body parsed as JSON (panics with the body when it is not JSON: a test failure).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request to send.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: Vec<u8>,
}

impl<'a> Request<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Request {
            method,
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// `POST /verify` with `{"api_key": secret}`.
    pub fn verify(secret: &str) -> Self {
        Request::new("POST", "/verify")
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "api_key": secret }).to_string())
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Sends `request` over the Unix socket at `socket`.
pub fn send(socket: &Path, request: &Request<'_>) -> std::io::Result<Response> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    exchange_raw(&mut stream, &request.to_bytes())
}

/// Sends `request` over TCP to `address`.
pub fn send_tcp(address: &str, request: &Request<'_>) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    exchange_raw(&mut stream, &request.to_bytes())
}

/// Writes raw bytes and reads the answer until the server closes. A server may answer early
/// (413) and close while the body is still being written: the write error is then ignored and
/// the answer read as usual.
pub fn exchange_raw<S: Read + Write>(stream: &mut S, bytes: &[u8]) -> std::io::Result<Response> {
    if let Err(error) = stream.write_all(bytes)
        && !matches!(
            error.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        )
    {
        return Err(error);
    }
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => raw.extend_from_slice(&chunk[..read]),
            Err(error)
                if error.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() =>
            {
                break;
            }
            Err(error) => return Err(error),
        }
    }
    parse(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    Some(Response {
        status,
        headers,
        body,
    })
}
