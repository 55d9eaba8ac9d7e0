//! A stats collector's HTTP end for tests: accepts `POST`s on 127.0.0.1 (plain, or TLS with a
//! certificate made here) and keeps every request it received — method, path, headers, JSON
//! body — for the test to inspect. It answers 200 (or, when told, 500) to each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// One request the collector received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: serde_json::Value,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The `status` that means "answer without end".
const ENDLESS: u16 = 1;

/// A running collector; serves until the test process ends.
pub struct Collector {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

impl Collector {
    /// A plain HTTP collector on a free port.
    pub fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        Collector::serve(listener, None)
    }

    /// A plain HTTP collector on a free port below 1024 (as root): one the daemon may send its
    /// secret to in the clear, since no local user could stand in for it.
    pub fn start_privileged() -> Collector {
        Collector::serve(crate::privileged_listener(), None)
    }

    /// An https collector on `127.0.0.1:port` with a certificate for `localhost`; returns it
    /// with the certificate (PEM), for the client's trust store.
    pub fn start_tls(port: u16) -> (Collector, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("make a certificate");
        let cert_pem = made.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der())
            .expect("key");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .expect("server config");
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the https collector");
        (Collector::serve(listener, Some(Arc::new(config))), cert_pem)
    }

    fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) -> Collector {
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (store, answer) = (received.clone(), status.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (store, answer, tls) = (store.clone(), answer.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, tls, &store, answer.load(Ordering::Relaxed));
                });
            }
        });
        Collector {
            port,
            received,
            status,
        }
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Answer every later request with a 200 whose chunked body never ends (1 MiB chunks until the
    /// client goes away): a hostile collector.
    pub fn answer_endlessly(&self) {
        self.status.store(ENDLESS, Ordering::Relaxed);
    }

    /// Answer every later request with `status`.
    pub fn answer_with(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// The sum of counter `name` over every body received.
    pub fn counter_total(&self, name: &str) -> f64 {
        self.received()
            .iter()
            .filter_map(|r| r.body["counters"][name].as_f64())
            .sum()
    }
}

fn handle(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    store: &Mutex<Vec<Received>>,
    status: u16,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    match tls {
        Some(config) => {
            let connection =
                rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
            exchange(rustls::StreamOwned::new(connection, stream), store, status)
        }
        None => exchange(stream, store, status),
    }
}

/// Reads one request, keeps it, answers `status`.
fn exchange<S: Read + Write>(
    stream: S,
    store: &Mutex<Vec<Received>>,
    status: u16,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    store.lock().unwrap().push(Received {
        method,
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    });
    let mut stream = reader.into_inner();
    if status == ENDLESS {
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        )?;
        let chunk = format!("100000\r\n{}\r\n", "x".repeat(0x100000));
        loop {
            stream.write_all(chunk.as_bytes())?;
        }
    }
    write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    stream.flush()
}
